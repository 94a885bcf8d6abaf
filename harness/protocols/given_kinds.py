"""Replaying a dataset's own prompts: the ``given`` (images) and ``given_3d`` (volumes) kinds.

A challenge file ships the prompts its challenge used (CVPR 2024 npz ``boxes``; CVPR 2025 box dicts,
``clicks`` and ``clicks_order``: :mod:`segbench.data.readers.cvpr`). These kinds prompt each label with
its file's box instead of one segbench draws, so a model is scored on exactly the challenge's prompts;
the name (``given``, ``given_3d``) says in every row that the prompts were the file's. With ``clicks = n``
(``given_clicks5``, ``given_3d_clicks5``) the box is followed by ``n`` steps, step ``k`` adding the
``k``-th click the file records for the object, in its recorded order, all earlier ones kept (as
``CVPR25_iter_eval.py`` feeds them); a step where the file records no click (the challenge's object
already perfect, or a record shorter than ``n``) adds none. The clicks are the file's, never redrawn
from this model's errors: a replay, not the challenge's interactive loop (that is ``cvpr25``).

The file's prompts reach the kind through :attr:`ProtocolInputs.given` (read by
:func:`segbench.data.given_prompts.given_prompts`; a protocol never reads data). A label is one target
(a task's ``instances`` mode does not apply: the file boxes each mask value). A label the file has no
box for is not asked: :attr:`Ask.failed` makes it a failed row naming the file, and the other labels run.
A 3D box is the file's middle-slice box with its z range, propagated by the model like ``cvpr24_3d``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.interface import Prompt, VolumePrompt
from segbench.protocols.base import Ask, Click, GivenPrompts, ProtocolInputs, ProtocolKind, Target
from segbench.protocols.challenge_kinds import ChallengeVolumePrompt, add_volume_click
from segbench.protocols.prompts import point_xy


@dataclass
class GivenAsk(Ask):
    """An :class:`Ask` that carries each target's recorded clicks and the step it is at."""

    clicks: tuple[tuple[Click | None, ...], ...] = ()  # one per target
    step: int = 0


def _with_click(prompt: Prompt, click: Click | None, previous: Any) -> Prompt:
    """A 2D prompt with ``click`` ((row, col), label) added as an (x, y) point, and the adapter's feedback."""
    points = prompt.points if prompt.points is not None else np.zeros((0, 2))
    labels = prompt.point_labels if prompt.point_labels is not None else np.zeros(0, dtype=np.int64)
    if click is not None:
        points = np.concatenate([points, [point_xy(click[0])]])
        labels = np.concatenate([labels, [click[1]]])
    return Prompt(box=prompt.box, points=points, point_labels=labels, previous=previous)


class Given(ProtocolKind):
    """The case file's own box per label, then ``clicks`` steps of its recorded clicks (module docstring)."""

    kind = "given"
    defaults = {"clicks": 0}
    needs = frozenset({"box"})

    @property
    def name(self) -> str:
        clicks = int(self.param("clicks"))
        return self.kind + (f"_clicks{clicks}" if clicks else "")

    @property
    def requires(self) -> frozenset[str]:
        return self.needs | ({"point"} if int(self.param("clicks")) else set())

    @property
    def first_requires(self) -> frozenset[str]:
        """A box-only model takes the box step; its click steps are recorded as not taken."""
        return self.needs

    @property
    def steps(self) -> int:
        return 1 + int(self.param("clicks"))

    def start(self, box: Prompt | VolumePrompt) -> Any:
        """The first prompt from the file's box."""
        if not isinstance(box, Prompt):
            raise ValueError(f"protocol {self.name!r} is for images; a volume's given box needs 'given_3d'")
        return box

    def first(self, inputs: ProtocolInputs) -> Ask:
        given: Mapping[str, GivenPrompts] = inputs.given() if inputs.given is not None else {}
        targets: list[Target] = []
        prompts: list[Any] = []
        clicks: list[tuple[Click | None, ...]] = []
        failed: dict[str, str] = {}
        for label, mask in inputs.labels.items():
            if not mask.any():
                continue
            prompt = given.get(label)
            if prompt is None or prompt.box is None:
                failed[label] = (
                    prompt.problem
                    if prompt is not None and prompt.problem
                    else f"{inputs.case_id}: no given box for label {label} (the task's reader ships no prompts)"
                )
                continue
            targets.append(Target(label, 0, mask))
            prompts.append(self.start(prompt.box))
            clicks.append(prompt.clicks)
        return GivenAsk(targets, prompts, failed=failed, clicks=tuple(clicks))

    def refine(self, ask: Ask, masks: np.ndarray, feedback: Sequence[Any]) -> Ask:
        if not isinstance(ask, GivenAsk) or ask.prompts is None:
            raise ValueError(f"protocol {self.name!r} refines only its own asks")
        step = ask.step + 1
        prompts = [
            self.add(prompt, recorded[step - 1] if step - 1 < len(recorded) else None, previous)
            for prompt, recorded, previous in zip(ask.prompts, ask.clicks, feedback, strict=True)
        ]
        return replace(ask, prompts=prompts, step=step)

    def add(self, prompt: Any, click: Click | None, previous: Any) -> Any:
        """The prompt with the step's recorded click (if any) and the adapter's feedback."""
        return _with_click(prompt, click, previous)


class GivenVolume(Given):
    """A volume's given box (its middle slice and z range; the model propagates), then its clicks."""

    kind = "given_3d"
    dim = 3

    @property
    def propagates(self) -> bool:
        return True

    def start(self, box: Prompt | VolumePrompt) -> Any:
        if not isinstance(box, VolumePrompt):
            raise ValueError(f"protocol {self.name!r} is for volumes; an image's given box needs 'given'")
        return ChallengeVolumePrompt(box.slices, box.key_slice, box.z_range)

    def add(self, prompt: Any, click: Click | None, previous: Any) -> Any:
        return add_volume_click(prompt, click, previous)


@hookimpl
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    """The ``given`` kinds."""
    for kind in (Given, GivenVolume):
        register(kind)
