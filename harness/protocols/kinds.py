"""The built-in protocol kinds, one class each, registered through ``segbench_register_protocols``
exactly as a third-party plugin registers its own (what a kind is: :mod:`segbench.protocols.base`; what
each one does, with its sources: :mod:`segbench.protocols.prompts`).

A kind's ``name`` is what results, unit ids and pages carry: the names below are those segbench has
always written (``box_jitter5``, ``points3``, ``iterative_box5``, ``support8x5+box``, ``key_box_middle``,
``slice_boxes_every2``, ``iterative3d_middle_box5``) and must stay so, or every cached result is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.interface import Prompt, VolumePrompt
from segbench.protocols.base import Ask, ProtocolInputs, ProtocolKind, SupportSource, Target
from segbench.protocols.prompts import (
    ProtocolSpec,
    bounding_box,
    interior_point,
    jitter_box,
    kind_class,
    point_xy,
    refine_prompt,
    target_rng,
    targets_for,
)
from segbench.protocols.volume_prompts import key_slice_box, refine_volume_prompt, slice_boxes

STARTS = ("box", "center_point")
SUPPORT_PROMPTS = ("none", "box", "box_jitter", "center_point", "random_points")
KEY_SLICES = ("middle", "largest")


class PromptKind(ProtocolKind):
    """A 2D kind that gives each target one prompt, drawn with the target's own generator."""

    def first(self, inputs: ProtocolInputs) -> Ask:
        targets = targets_for(inputs.labels, inputs.instances)
        rngs = [target_rng(inputs.seed, inputs.task, inputs.case_id, t.label, t.instance, self.name) for t in targets]
        return Ask(targets, [self.prompt(target, rng) for target, rng in zip(targets, rngs, strict=True)])


class Box(PromptKind):
    kind = "box"
    needs = frozenset({"box"})

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        return Prompt(box=bounding_box(target.mask))


class BoxJitter(PromptKind):
    kind = "box_jitter"
    defaults = {"px": 5}
    needs = frozenset({"box"})

    @property
    def name(self) -> str:
        return f"box_jitter{self.param('px')}"

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        mask = target.mask
        return Prompt(box=jitter_box(bounding_box(mask), int(self.param("px")), mask.shape, rng))


class CenterPoint(PromptKind):
    kind = "center_point"
    needs = frozenset({"point"})

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        return Prompt(points=np.array([point_xy(interior_point(target.mask))]), point_labels=np.array([1]))


class RandomPoints(PromptKind):
    kind = "random_points"
    defaults = {"k": 3}
    needs = frozenset({"point"})

    @property
    def name(self) -> str:
        return f"points{self.param('k')}"

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        rows, cols = np.nonzero(target.mask)
        chosen = rng.choice(len(rows), size=min(int(self.param("k")), len(rows)), replace=False)
        points = np.stack([cols[chosen], rows[chosen]], axis=1).astype(np.float64)
        return Prompt(points=points, point_labels=np.ones(len(points), dtype=np.int64))


class Iterative(PromptKind):
    """A box or a center point, then ``clicks`` CVPR 2025 correction clicks (with the adapter's feedback)."""

    kind = "iterative"
    defaults = {"start": "box", "clicks": 5}

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        if params.get("start", "box") not in STARTS:
            raise ValueError(f"protocol 'iterative': start must be one of {STARTS}")

    @property
    def name(self) -> str:
        return f"iterative_{'box' if self.param('start') == 'box' else 'point'}{self.param('clicks')}"

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"point", "box"} if self.param("start") == "box" else {"point"})

    @property
    def steps(self) -> int:
        return 1 + int(self.param("clicks"))

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        start: PromptKind = Box() if self.param("start") == "box" else CenterPoint()
        return start.prompt(target, rng)

    def correct(self, prompt: Any, target: Target, predicted: np.ndarray, feedback: Any) -> Any:
        return refine_prompt(prompt, target, predicted, feedback)


class Support(ProtocolKind):
    """In-context: ``ensemble`` sets of ``k`` examples per label from the task's support pool, and the
    ``prompt`` of a one-step kind beside each set when it names one (:func:`support_request`)."""

    kind = "support"
    defaults = {"k": 1, "ensemble": 1, "prompt": "none"}
    needs = frozenset({"support_set"})
    axis = "k"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        if params.get("prompt", "none") not in SUPPORT_PROMPTS:
            raise ValueError(f"protocol 'support': prompt must be one of {SUPPORT_PROMPTS}")
        if any(params.get(key, 1) < 1 for key in ("k", "ensemble")):
            raise ValueError("protocol 'support': k and ensemble must be at least 1")

    @property
    def companion(self) -> ProtocolKind | None:
        """The prompt kind passed together with each support set, if any."""
        prompt = self.param("prompt")
        return None if prompt == "none" else kind_class(prompt)()

    @property
    def name(self) -> str:
        ensemble, prompt = int(self.param("ensemble")), self.companion
        return (
            f"support{self.param('k')}"
            + (f"x{ensemble}" if ensemble != 1 else "")
            + (f"+{prompt.name}" if prompt else "")
        )

    @property
    def requires(self) -> frozenset[str]:
        prompt = self.companion
        return self.needs | (prompt.requires if prompt else frozenset())

    @property
    def support_size(self) -> int:
        return int(self.param("k"))

    def first(self, inputs: ProtocolInputs) -> Ask:
        if inputs.pool is None:
            raise ValueError(f"protocol {self.name!r} needs the task's support pool")
        return support_request(inputs.pool(), self, inputs.seed, inputs.task, inputs.case_id, inputs.labels)


def support_request(
    pool: SupportSource,
    protocol: ProtocolSpec | Support,
    seed: int,
    task: str,
    case_id: str,
    labels: Mapping[str, np.ndarray],
) -> Ask:
    """The support sets (and prompts) of every present label of a query case, in one ask: one target per
    label (a task's ``instances`` mode does not apply: examples show whole labels) with ``ensemble``
    consecutive queries; a label whose pool holds fewer than ``k`` examples is not asked."""
    kind = protocol.handler if isinstance(protocol, ProtocolSpec) else protocol
    if not isinstance(kind, Support):
        raise ValueError(f"protocol {kind.name!r} draws no support sets")
    k, members = kind.support_size, int(kind.param("ensemble"))
    sets = {name: pool.draw(seed, task, case_id, name, k, members) for name, mask in labels.items() if mask.any()}
    asked = [name for name, drawn in sets.items() if drawn]
    supports = [pool.support(ids, name) for name in asked for ids in sets[name]]
    targets = [Target(name, 0, labels[name]) for name in asked]
    prompts = None
    companion = kind.companion
    if companion is not None:  # keyed like the prompt protocol itself: the same prompt at every support size
        prompts = [
            companion.prompt(target, target_rng(seed, task, case_id, target.label, 0, companion.name))
            for target in targets
            for _ in range(members)
        ]
    return Ask(targets, prompts, supports, {name: sets[name] for name in asked}, members, k)


class VolumeKind(ProtocolKind):
    """A 3D kind that gives each target one :class:`VolumePrompt`."""

    dim = 3

    def first(self, inputs: ProtocolInputs) -> Ask:
        targets = targets_for(inputs.labels, inputs.instances)
        return Ask(targets, [self.volume_prompt(target) for target in targets])


def check_key_slice(kind: str, params: Mapping[str, Any]) -> None:
    if params.get("slice", "middle") not in KEY_SLICES:
        raise ValueError(f"protocol {kind!r}: slice must be one of {KEY_SLICES}")


class KeySliceKind(VolumeKind):
    """A prompt on one key slice (``slice``: see :func:`~segbench.protocols.volume_prompts.key_slice`), with the
    target's extent; the model propagates it. Its name is ``key_<short>_<slice>``."""

    defaults = {"slice": "middle"}
    short: ClassVar[str]

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        check_key_slice(cls.kind, params)

    @property
    def name(self) -> str:
        return f"key_{self.short}_{self.param('slice')}"

    @property
    def propagates(self) -> bool:
        return True


class KeySliceBox(KeySliceKind):
    """The tight box on one key slice, with the target's extent; the model propagates it."""

    kind = "key_slice_box"
    needs = frozenset({"box"})
    short = "box"

    def volume_prompt(self, target: Target) -> VolumePrompt:
        return key_slice_box(target.mask, self.param("slice"))


class SliceBoxes(VolumeKind):
    """The tight box on every ``every``-th slice of the target's extent; a 2D adapter decodes each
    slice on its own, so every slice needs a box unless the model propagates."""

    kind = "slice_boxes"
    defaults = {"every": 1}

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        if params.get("every", 1) < 1:
            raise ValueError("protocol 'slice_boxes': every must be at least 1")

    @property
    def name(self) -> str:
        every = int(self.param("every"))
        return "slice_boxes" if every == 1 else f"slice_boxes_every{every}"

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"box"} if int(self.param("every")) == 1 else {"box", "volume"})

    def volume_prompt(self, target: Target) -> VolumePrompt:
        return slice_boxes(target.mask, int(self.param("every")))


class Iterative3D(VolumeKind):
    """A key-slice box, then ``clicks`` 3D correction clicks, as in the CVPR 2025 challenge."""

    kind = "iterative_3d"
    defaults = {"slice": "middle", "clicks": 5}
    needs = frozenset({"point", "box"})

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        check_key_slice(cls.kind, params)

    @property
    def name(self) -> str:
        return f"iterative3d_{self.param('slice')}_box{self.param('clicks')}"

    @property
    def steps(self) -> int:
        return 1 + int(self.param("clicks"))

    @property
    def propagates(self) -> bool:
        return True

    def volume_prompt(self, target: Target) -> VolumePrompt:
        return key_slice_box(target.mask, self.param("slice"))

    def correct(self, prompt: Any, target: Target, predicted: np.ndarray, feedback: Any) -> Any:
        return refine_volume_prompt(prompt, target, predicted, feedback)


BUILTIN_KINDS: Sequence[type[ProtocolKind]] = (
    Box,
    BoxJitter,
    CenterPoint,
    RandomPoints,
    Iterative,
    Support,
    KeySliceBox,
    SliceBoxes,
    Iterative3D,
)


@hookimpl
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    """The built-in protocol kinds (in the order ``unknown protocol kind`` lists them)."""
    for kind in BUILTIN_KINDS:
        register(kind)
