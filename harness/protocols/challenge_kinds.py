"""The field's named protocols: the CVPR 2024 and 2025 challenges' and micro-sam's, registered as kinds.

Each reproduces its source's prompt rule exactly (checked click by click against the official scripts'
own output in tests/test_challenge_protocols.py); the code is written from reading the sources, none
of it is copied. Their names (``cvpr25``, ``cvpr25_nobox``, ``cvpr24``, ``microsam_box8``,
``microsam_point8``) enter unit ids: never change them for a released rule; a changed rule is a new name.

``cvpr25`` (JunMa11/CVPR-MedSegFMCompetition ``CVPR25_iter_eval.py``): a 3D box, then 5 clicks per
class, all classes' clicks from the same previous prediction. The box is the challenge's ``boxes``
record as ``get_boxes.py`` (same repository, commit 748e862d162e3e3ee8197bd4085b19bbbe0bb8a0,
``mask3D_to_bbox`` and ``mask2D_to_bbox``) makes it: ``z_min`` and ``z_max`` of the class, ``z_mid``
the middle of the slices it occupies (``np.unique(z)[len // 2]``: the upper middle of an even count, a
slice the class is on even where it skips slices), and on ``z_mid`` the tight box grown by a shift
drawn as ``np.random.randint(0, 6)`` (0..5) and scaled to the slice (``int(shift * W / 256)`` along x,
``int(shift * H / 256)`` along y), clipped to the slice; the extent is not shifted. The script draws
one shift per class in class order from the legacy generator it seeds once with 2025 for a pool of
worker processes, so which draw a file got depends on the pool's scheduling; segbench draws the shifts
the same way from one legacy generator per case keyed by (seed, task, case, protocol)
(:meth:`Cvpr25.random_state`), and tests/test_challenge_protocols.py checks the boxes against
``get_boxes.py``'s own on real cases with the script's seed (fixture ``cvpr25_get_boxes.json``).
``start = "none"`` (``cvpr25_nobox``, the vessel tasks) starts from clicks on an
empty prediction, as the script does when a case has no ``boxes``. The click: the error of the class
(``pred != gt``), its largest 26-connected component (the first label on a size tie, components
numbered in scan order as cc3d does), the Euclidean distance transform of that component alone in
voxel units (the image border counts as outside: the script pads the component's bounding box), and
among the voxels at the maximum (C order, ``np.argwhere``) the one a legacy generator seeded with 42
draws with ``choice`` -- the script reseeds at every click, so the draw is the same function of the
tie count every time. Foreground where the ground truth is, background elsewhere; no click for a
class already perfect. Scores (DSC/NSD gated on DSC > 0.2, the AUC over the click steps) are
:mod:`segbench.measuring.challenge`'s. The README's "Upper Time Bound" (90 s per class for the whole case,
else its DSC and NSD are 0) is :attr:`Cvpr25.time_limit_s`: the runner flags the case's rows
(``over_time_limit``) and the case score applies it. The challenge takes every submission, and a model
that ignores clicks is scored on its box answer repeated; segbench runs a box-only model's box step
(:attr:`Cvpr25.first_requires`) and records its click steps as not taken, never as answers.

``cvpr24`` (bowang-lab/MedSAM LiteMedSAM ``CVPR24_*`` and ``evaluation/compute_metrics.py``): one
tight box per target, 2D or the key-slice 3D box; its rules are the scores in
:mod:`segbench.measuring.challenge` (NSD at 2 mm gated on DSC > 0.2, a 2D case at spacing 1).

``microsam`` (computational-cell-analytics/micro-sam ``prompt_generators.py``
``IterativePromptGenerator``, as ``evaluation/inference.py`` ``run_inference_with_iterative_prompting``
uses it): ``iterations`` predictions (8, micro-sam's ``n_iterations``), the first from a box or one
positive point, each later one with one more positive point per object drawn uniformly from its false
negatives (from its true positives when there are none) and one more negative point from its false
positives (when there are none: from the object's box grown by 3 px minus the object, then from the
background); all points and the box are kept, and the previous step's logits are fed back
(micro-sam's ``use_masks = True``; ``logits = "none"`` is its default ``use_masks = False``). Draws use
one legacy ``RandomState`` per case, for each step first the positive point of every object in
order, then every negative one; micro-sam seeds it once (``np.random.seed``) before the loop, segbench
keys that seed by (seed, task, case, protocol) like every other draw (:meth:`MicroSam.random_state`).
Two starts differ from micro-sam's and are outside the conformance test: the box is segbench's tight
box with inclusive corners (micro-sam's regionprops box ends one pixel further), and the point start
is the distance-transform centre (micro-sam draws it at random, with multimask output).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from segbench.hookspecs import hookimpl
from segbench.interface import Prompt, VolumePrompt
from segbench.protocols.base import Ask, ProtocolInputs, ProtocolKind, Target
from segbench.protocols.kinds import PromptKind, VolumeKind
from segbench.protocols.prompts import (
    bounding_box,
    interior_point,
    largest_error_component,
    point_xy,
    target_rng,
    targets_for,
)
from segbench.protocols.volume_prompts import key_slice_box, with_click

CVPR25_CLICKS = 5
CVPR25_TIE_SEED = 42  # ``np.random.seed(42)`` in the script's ``sample_coord``, at every click
CVPR25_BOX_SEED = 2025  # ``np.random.seed(2025)`` at the top of ``get_boxes.py``
CVPR25_MAX_SHIFT = 5  # ``np.random.randint(0, 6, 1)``: a shift of 0..5 at 256 px
CVPR25_SHIFT_SCALE = 256
CVPR25_SECONDS_PER_CLASS = 90.0  # README "Upper Time Bound": 90 s per class for the whole case, else DSC = NSD = 0
MICROSAM_ITERATIONS = 8
MICROSAM_BOX_GROWTH = 3  # ``custom_df`` of micro-sam's negative-point fallback
MICROSAM_STARTS = ("box", "point")
MICROSAM_LOGITS = ("previous", "none")
CVPR25_STARTS = ("box", "none")
CVPR25_NAMES = ("cvpr25", "cvpr25_nobox")  # the names of the two starts (Cvpr25.name)


def cvpr25_click(gt: np.ndarray, pred: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """The CVPR 2025 click of one class: (index, 1 foreground / 0 background), or None when perfect."""
    largest = largest_error_component(gt, pred)
    if largest is None:
        return None
    # the distances on the component's box padded by one equal the script's (padded by a quarter of the
    # box): any voxel beyond the box is at least as far as the padding ring
    extents = [
        np.flatnonzero(largest.any(axis=tuple(a for a in range(gt.ndim) if a != axis))) for axis in range(gt.ndim)
    ]
    lows = np.array([int(extent[0]) for extent in extents])
    crop = largest[tuple(slice(extent[0], extent[-1] + 1) for extent in extents)]
    distance = ndimage.distance_transform_edt(np.pad(crop, 1))[(slice(1, -1),) * gt.ndim]
    maxima = np.argwhere(distance == distance.max())  # C order of the crop is C order of the volume
    chosen = maxima[np.random.RandomState(CVPR25_TIE_SEED).choice(len(maxima))] + lows
    index = tuple(int(v) for v in chosen)
    return index, int(bool(gt[index]))


def cvpr25_box(mask: np.ndarray, state: np.random.RandomState) -> VolumePrompt:
    """The CVPR 2025 box of one (D, H, W) class: its extent, its middle occupied slice, and there its
    tight box grown by one shift drawn from ``state`` (module docstring)."""
    z_slices = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = int(z_slices[len(z_slices) // 2])
    x_min, y_min, x_max, y_max = (int(v) for v in bounding_box(mask[middle]))
    height, width = mask.shape[1:]
    shift = int(state.randint(0, CVPR25_MAX_SHIFT + 1, 1)[0])
    shift_x, shift_y = int(shift * width / CVPR25_SHIFT_SCALE), int(shift * height / CVPR25_SHIFT_SCALE)
    box = np.array(
        [
            max(0, x_min - shift_x),
            max(0, y_min - shift_y),
            min(width - 1, x_max + shift_x),
            min(height - 1, y_max + shift_y),
        ],
        dtype=np.float64,
    )
    return VolumePrompt({middle: Prompt(box=box)}, middle, (int(z_slices[0]), int(z_slices[-1])))


@dataclass
class ChallengeVolumePrompt(VolumePrompt):
    """A :class:`VolumePrompt` that also keeps its clicks in the order given ((z, y, x), label),
    as the challenge's ``clicks_order`` does."""

    clicks: tuple[tuple[tuple[int, ...], int], ...] = ()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "clicks": [[list(index), label] for index, label in self.clicks]}


def add_volume_click(
    prompt: ChallengeVolumePrompt, click: tuple[tuple[int, ...], int] | None, previous: Any
) -> ChallengeVolumePrompt:
    """``prompt`` with ``click`` added as a point on its slice (and the adapter's feedback)."""
    clicks = prompt.clicks if click is None else (*prompt.clicks, click)
    return replace(prompt, slices=with_click(prompt.slices, click), clicks=clicks, previous=previous)


class Cvpr25(VolumeKind):
    """The CVPR 2025 interactive 3D challenge: a middle-slice 3D box, then 5 clicks (module docstring)."""

    kind = "cvpr25"
    defaults = {"start": "box"}

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        if params.get("start", "box") not in CVPR25_STARTS:
            raise ValueError(f"protocol 'cvpr25': start must be one of {CVPR25_STARTS}")

    @property
    def boxed(self) -> bool:
        return bool(self.param("start") == "box")

    @property
    def name(self) -> str:
        return "cvpr25" if self.boxed else "cvpr25_nobox"

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"point", "box"} if self.boxed else {"point"})

    @property
    def time_limit_s(self) -> float:
        return CVPR25_SECONDS_PER_CLASS

    @property
    def first_requires(self) -> frozenset[str]:
        """The box step needs a box alone: a box-only model takes it, and its click steps are not taken."""
        return frozenset({"box"} if self.boxed else {"point"})

    @property
    def steps(self) -> int:
        return (1 if self.boxed else 0) + CVPR25_CLICKS

    @property
    def propagates(self) -> bool:
        """With a box, a 2D model propagates it through the extent; without one, it decodes the clicked
        slices alone (a 2D model has no way to carry a click to other slices)."""
        return self.boxed

    def random_state(self, inputs: ProtocolInputs) -> np.random.RandomState:
        """The case's legacy generator for the box shifts, seeded from (seed, task, case, protocol) alone."""
        seed = int(target_rng(inputs.seed, inputs.task, inputs.case_id, self.name).integers(2**32))
        return np.random.RandomState(seed)

    def first(self, inputs: ProtocolInputs) -> Ask:
        targets = targets_for(inputs.labels, inputs.instances)
        if not self.boxed:
            return Ask(targets, [self.click_start(target) for target in targets])
        state = self.random_state(inputs)  # one shift per target, drawn in target order as the script does
        boxes = [cvpr25_box(target.mask, state) for target in targets]
        return Ask(targets, [ChallengeVolumePrompt(b.slices, b.key_slice, b.z_range) for b in boxes])

    def click_start(self, target: Target) -> ChallengeVolumePrompt:
        """No box: the script's first clicks come from an empty prediction, and no extent is given (the
        prompt's z range is the whole volume)."""
        click = cvpr25_click(target.mask, np.zeros_like(target.mask))
        assert click is not None  # targets are never empty
        return add_volume_click(ChallengeVolumePrompt({}, click[0][0], (0, target.mask.shape[0] - 1)), click, None)

    def correct(self, prompt: Any, target: Target, predicted: np.ndarray, feedback: Any) -> Any:
        return add_volume_click(prompt, cvpr25_click(target.mask, predicted), feedback)


class Cvpr24(PromptKind):
    """The CVPR 2024 challenge (MedSAM on a laptop): one tight box per target, 2D; its scoring rules
    are :func:`segbench.measuring.challenge.cvpr24_scores`."""

    kind = "cvpr24"
    needs = frozenset({"box"})

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        return Prompt(box=bounding_box(target.mask))


class Cvpr24Volume(VolumeKind):
    """The CVPR 2024 challenge on a 3D case: the middle-slice box with the target's extent."""

    kind = "cvpr24_3d"
    needs = frozenset({"box"})

    @property
    def propagates(self) -> bool:
        return True

    def volume_prompt(self, target: Target) -> VolumePrompt:
        return key_slice_box(target.mask, "middle")


@dataclass
class MicroSamAsk(Ask):
    """An :class:`Ask` that carries the case's legacy generator from step to step."""

    state: np.random.RandomState | None = None


def _draw(state: np.random.RandomState, where: tuple[np.ndarray, ...]) -> list[float]:
    index = int(state.choice(len(where[0])))
    return [float(where[-1][index]), float(where[-2][index])]  # (x, y)


def microsam_positive(gt: np.ndarray, pred: np.ndarray, state: np.random.RandomState) -> list[float]:
    """One positive (x, y) drawn from the false negatives, else from the true positives."""
    where = np.nonzero(gt & ~pred)
    if not len(where[0]):
        where = np.nonzero(gt & pred)
    if not len(where[0]):  # nothing right either: any object pixel (micro-sam would fail here)
        where = np.nonzero(gt)
    return _draw(state, where)


def microsam_negative(gt: np.ndarray, pred: np.ndarray, state: np.random.RandomState) -> list[float]:
    """One negative (x, y) from the false positives, else from the object's box grown by 3 px minus the
    object (clipped to the image), else from the background."""
    where = np.nonzero(pred & ~gt)
    if not len(where[0]):
        rows, cols = np.nonzero(gt)
        grown = np.zeros_like(gt)
        grow = MICROSAM_BOX_GROWTH
        grown[
            max(int(rows.min()) - grow, 0) : min(int(rows.max()) + 1 + grow, gt.shape[0]),
            max(int(cols.min()) - grow, 0) : min(int(cols.max()) + 1 + grow, gt.shape[1]),
        ] = True
        where = np.nonzero(grown & ~gt)
        if not len(where[0]):
            where = np.nonzero(~gt)
    return _draw(state, where)


class MicroSam(ProtocolKind):
    """micro-sam's iterative prompting: ``iterations`` predictions, from a box or a point, each later one
    with one more sampled positive and negative point per object (module docstring)."""

    kind = "microsam"
    defaults = {"start": "box", "iterations": MICROSAM_ITERATIONS, "logits": "previous"}

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        if params.get("start", "box") not in MICROSAM_STARTS:
            raise ValueError(f"protocol 'microsam': start must be one of {MICROSAM_STARTS}")
        if params.get("logits", "previous") not in MICROSAM_LOGITS:
            raise ValueError(f"protocol 'microsam': logits must be one of {MICROSAM_LOGITS}")
        if params.get("iterations", MICROSAM_ITERATIONS) < 1:
            raise ValueError("protocol 'microsam': iterations must be at least 1")

    @property
    def name(self) -> str:
        logits = "" if self.param("logits") == "previous" else "_nologits"
        return f"microsam_{self.param('start')}{self.param('iterations')}{logits}"

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"point", "box"} if self.param("start") == "box" else {"point"})

    @property
    def first_requires(self) -> frozenset[str]:
        """The box start needs a box alone: a box-only model takes the first iteration, not the others."""
        return frozenset({"box"} if self.param("start") == "box" else {"point"})

    @property
    def steps(self) -> int:
        return int(self.param("iterations"))

    def random_state(self, inputs: ProtocolInputs) -> np.random.RandomState:
        """The case's legacy generator, seeded from (seed, task, case, protocol) alone."""
        seed = int(target_rng(inputs.seed, inputs.task, inputs.case_id, self.name).integers(2**32))
        return np.random.RandomState(seed)

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        if self.param("start") == "box":
            return Prompt(box=bounding_box(target.mask))
        return Prompt(points=np.array([point_xy(interior_point(target.mask))]), point_labels=np.array([1]))

    def first(self, inputs: ProtocolInputs) -> Ask:
        targets = targets_for(inputs.labels, inputs.instances)
        rng = np.random.default_rng(0)  # unused: both starts are deterministic
        return MicroSamAsk(targets, [self.prompt(t, rng) for t in targets], state=self.random_state(inputs))

    def refine(self, ask: Ask, masks: np.ndarray, feedback: Sequence[Any]) -> Ask:
        if not isinstance(ask, MicroSamAsk) or ask.state is None or ask.prompts is None:
            raise ValueError(f"protocol {self.name!r} refines only its own asks")
        truths = [target.mask.astype(bool) for target in ask.targets]
        predictions = [np.asarray(mask, dtype=bool) for mask in masks]
        positives = [microsam_positive(t, p, ask.state) for t, p in zip(truths, predictions, strict=True)]
        negatives = [microsam_negative(t, p, ask.state) for t, p in zip(truths, predictions, strict=True)]
        prompts = []
        for prompt, positive, negative, given in zip(ask.prompts, positives, negatives, feedback, strict=True):
            points = prompt.points if prompt.points is not None else np.zeros((0, 2))
            labels = prompt.point_labels if prompt.point_labels is not None else np.zeros(0, dtype=np.int64)
            prompts.append(
                Prompt(
                    box=prompt.box,
                    points=np.concatenate([points, [positive, negative]]),
                    point_labels=np.concatenate([labels, [1, 0]]),
                    previous=given if self.param("logits") == "previous" else None,
                )
            )
        return replace(ask, prompts=prompts)


CHALLENGE_KINDS: Sequence[type[ProtocolKind]] = (Cvpr25, Cvpr24, Cvpr24Volume, MicroSam)


@hookimpl
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    """The challenges' named protocol kinds."""
    for kind in CHALLENGE_KINDS:
        register(kind)
