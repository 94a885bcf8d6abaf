"""What a prompt protocol kind is: the base class every kind subclasses, built-in or a plugin's.

A kind (``box``, ``iterative``, ``support``, ``key_slice_box``, ... in :mod:`segbench.protocols.kinds`) is a
class registered through the ``segbench_register_protocols`` hook under its ``kind``; a task or suite
file names it (``protocols = [{kind = "my_kind", n = 3}]``) and :func:`segbench.protocols.prompts.parse_protocol`
finds it in the registry. An instance holds the protocol's parameters (its ``defaults`` overridden by
what the file gives) and says everything the harness asks of a protocol:

* its ``name`` in results (with its parameters: ``box_jitter5``), the adapter capabilities it ``requires``,
  its ``dim`` (2: images, 3: volumes), its number of ``steps``, whether a volume model must
  ``propagate`` the prompt to slices that have none, its ``support_size`` (in-context kinds);
* ``first(inputs)``: the :class:`Ask` of its first step for one case (one query per target, with its
  prompt and, for in-context kinds, its support set), and ``refine(ask, masks, feedback)``: the next
  step's ask from the adapter's masks (iterative kinds).

``check(params)`` validates a file's parameters before any instance is made. The step loop that runs
every kind alike is :class:`segbench.running.session.Session`; the geometry (boxes, clicks, key slices)
stays plain functions in :mod:`segbench.protocols.prompts` and :mod:`segbench.protocols.volume_prompts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import numpy as np

from segbench.interface import Prompt, Support, VolumePrompt


@dataclass
class Target:
    """What one prompt asks for: a label, or one connected component of it (``instance`` >= 0)."""

    label: str
    instance: int
    mask: np.ndarray


class SupportSource(Protocol):
    """Where in-context kinds draw support sets from (a task's support pool,
    :class:`segbench.data.support_sets.SupportPool`)."""

    def draw(self, seed: int, task: str, case_id: str, label: str, k: int, members: int) -> list[list[str]]: ...

    def support(self, case_ids: Sequence[str], label: str) -> Support: ...


Click = tuple[tuple[int, ...], int]  # an array index ((row, col) or (slice, row, col)) and 1 foreground / 0 background


@dataclass(frozen=True)
class GivenPrompts:
    """The prompts a case's own file ships for one label (``Case.given``, read by
    :func:`segbench.data.given_prompts.given_prompts`): its ``box`` (a :class:`Prompt` for an image, a
    :class:`VolumePrompt` for a volume), its recorded ``clicks`` one per step after the box (None: the
    file records no click at that step), and, when it has no box, the ``problem`` naming the file."""

    box: Prompt | VolumePrompt | None
    clicks: tuple[Click | None, ...] = ()
    problem: str | None = None


@dataclass
class ProtocolInputs:
    """What a protocol is given for one case: the truth of each label the task asks, the task's
    ``instances`` mode, the seed and names that key its randomness (never the adapter), for
    in-context kinds the task's support pool, and for the ``given`` kinds the prompts the case's file
    ships, by label (both read on first use)."""

    seed: int
    task: str
    case_id: str
    labels: Mapping[str, np.ndarray]
    instances: str = "label"
    pool: Callable[[], SupportSource] | None = None
    given: Callable[[], Mapping[str, GivenPrompts]] | None = None


@dataclass
class Ask:
    """One ``predict`` call of a protocol step: ``members`` consecutive queries per target (1, or the
    size of an ensemble of support sets), each with its prompt (a :class:`Prompt` for 2D kinds, a
    :class:`VolumePrompt` for volume kinds) and/or its support set."""

    targets: list[Target]
    prompts: list[Any] | None  # one per query; None: support sets alone
    supports: list[Support] | None = None  # one per query (in-context kinds)
    sets: dict[str, list[list[str]]] | None = None  # label -> the pool case ids of each of its sets
    members: int = 1
    size: int | None = None  # examples per support set (in-context kinds)
    failed: Mapping[str, str] = field(default_factory=dict)  # label -> why it is not asked: a failed row each

    @property
    def labels(self) -> list[str]:
        return [target.label for target in self.targets]

    @property
    def count(self) -> int:
        """The number of masks the adapter must return."""
        return len(self.targets) * self.members

    def cost(self, label: str) -> dict[str, int]:
        """The interaction cost of ``label``'s prompts in this ask, summed over its targets (not over an
        ensemble's members, which share one prompt): ``boxes`` (a 2D prompt's box, a volume's boxed
        slices), ``clicks`` (points, every one given so far), ``scribbles`` and ``lassos`` (drawn strokes and
        outlines) and ``prompted_slices`` (slices carrying any of them; a 2D prompt's image counts as one
        slice). Support sets cost none of these (their size is ``support_size``)."""
        cost = dict.fromkeys(("boxes", "clicks", "scribbles", "lassos", "prompted_slices"), 0)
        for index, target in enumerate(self.targets):
            if target.label != label or not self.prompts:
                continue
            prompt = self.prompts[index * self.members]
            planes = list(prompt.slices.values()) if isinstance(prompt, VolumePrompt) else [prompt]
            for plane in planes:
                given = {
                    "boxes": int(plane.box is not None),
                    "clicks": 0 if plane.points is None else len(plane.points),
                    "scribbles": len(plane.drawn("scribble")),
                    "lassos": len(plane.drawn("lasso")),
                }
                for key, count in given.items():
                    cost[key] += count
                cost["prompted_slices"] += any(given.values())
        return cost

    def given(self, label: str) -> list[dict[str, Any]]:
        """A JSON-ready record of what the adapter was given for ``label``: one entry per instance, or
        per support set (with the prompt beside it, if any)."""
        out: list[dict[str, Any]] = []
        for index, target in enumerate(self.targets):
            if target.label != label:
                continue
            prompt = self.prompts[index * self.members].describe() if self.prompts else {}
            out += [{"support": ids, **prompt} for ids in self.sets[label]] if self.sets is not None else [prompt]
        return out


NOT_TAKEN = "not_taken"  # the status of a row for a step the adapter cannot take (:attr:`ProtocolKind.first_requires`)


class ProtocolKind:
    """One kind of prompt protocol; subclasses set ``kind`` and override what differs (module docstring)."""

    kind: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}  # every parameter the kind takes, with its default
    needs: ClassVar[frozenset[str]] = frozenset()  # the capabilities it requires (see ``requires``)
    dim: ClassVar[int] = 2
    axis: ClassVar[str | None] = None  # a parameter whose list in a file expands into one protocol per value

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = {**self.defaults, **(params or {})}

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        """A ValueError naming the problem: an unknown parameter, or a negative or non-integer value of an
        integer parameter; subclasses add their own rules."""
        unknown = set(params) - set(cls.defaults)
        if unknown:
            raise ValueError(
                f"protocol {cls.kind!r} takes {sorted(cls.defaults) or 'no parameters'}, not {sorted(unknown)}"
            )
        for key, given in params.items():
            if isinstance(cls.defaults[key], int) and (
                not isinstance(given, int) or isinstance(given, bool) or given < 0
            ):
                raise ValueError(f"protocol {cls.kind!r}: {key} must be a non-negative integer, got {given!r}")

    def param(self, key: str) -> Any:
        return self.params.get(key)

    @property
    def name(self) -> str:
        """The protocol's name in results (and in unit ids): never change it for a kind already released."""
        return self.kind

    @property
    def requires(self) -> frozenset[str]:
        """Adapter capabilities this protocol needs (:meth:`segbench.interface.Capabilities.names`)."""
        return self.needs

    @property
    def first_requires(self) -> frozenset[str]:
        """The capabilities its first step needs. An adapter that has them but not all of :attr:`requires`
        takes the first step alone (a box-only model on a box-then-clicks protocol): the later steps are
        recorded as not taken (``status`` :data:`NOT_TAKEN`), never scored as if the model had used them."""
        return self.requires

    @property
    def steps(self) -> int:
        return 1

    @property
    def time_limit_s(self) -> float | None:
        """Model seconds a case may take per label asked (all steps, encoders included), or None for no
        limit; a case over it is flagged in its rows (``over_time_limit``) and the protocol's case score
        says what the flag costs."""
        return None

    def steps_for(self, capabilities: frozenset[str]) -> int:
        """The steps an adapter with ``capabilities`` takes: all of them, or the first alone."""
        return self.steps if self.requires <= capabilities else 1

    @property
    def propagates(self) -> bool:
        """Whether the model must carry the prompt to slices that have none (volume kinds)."""
        return False

    @property
    def support_size(self) -> int | None:
        """Examples per support set of an in-context kind (its size axis); None for prompted kinds."""
        return None

    def first(self, inputs: ProtocolInputs) -> Ask:
        """The first step's ask for one case."""
        raise NotImplementedError(f"protocol kind {self.kind!r} defines no first step")

    def refine(self, ask: Ask, masks: np.ndarray, feedback: Sequence[Any]) -> Ask:
        """The next step's ask: each query's prompt corrected (:meth:`correct`) from its mask and feedback."""
        if ask.prompts is None:
            raise ValueError(f"protocol {self.name!r} has nothing to refine")
        prompts = [
            self.correct(prompt, target, mask, given)
            for prompt, target, mask, given in zip(ask.prompts, ask.targets, masks, feedback, strict=True)
        ]
        return replace(ask, prompts=prompts)

    def correct(self, prompt: Any, target: Target, predicted: np.ndarray, feedback: Any) -> Any:
        """One query's next prompt (iterative kinds)."""
        raise ValueError(f"protocol {self.name!r} has one step")

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        """The first prompt for a 2D target (prompted 2D kinds)."""
        raise ValueError(f"no initial prompt for protocol kind {self.kind!r}")

    def volume_prompt(self, target: Target) -> VolumePrompt:
        """The first prompt for a 3D target (volume kinds)."""
        raise ValueError(f"protocol kind {self.kind!r} is not a volume protocol")
