"""SAM-Med3D's click protocol as a named kind: ``sammed3d`` (one click), ``sammed3d_5`` (five clicks), and the
official replay with its ground-truth-centred crop, ``sammed3d_gtcrop`` / ``sammed3d_gtcrop_5``.

The clicks restate ``random_sample_next_click(method="random")`` of the official inference
(uni-medical/SAM-Med3D, ``utils/infer_utils.py`` at commit f3de1fa, called by ``sam_model_infer`` through
``medim_val_single.py``'s ``validate_paired_img_gt``): each click is a voxel drawn uniformly from the
error region of the previous prediction (false negatives or false positives), positive where it is a
false negative; the first step has no prediction, so the first click is a uniform voxel of the ground
truth, positive; a perfect prediction gets a uniform ground-truth voxel again, positive. Clicks add up
(the model sees all of them, with its previous low-resolution logits, as the official loop feeds it).
``clicks`` is the number of clicks, one step each.

Where the official script samples: on its 128³ crop of the 1.5 mm resampled volume (the ground truth
cropped with it). Here the clicks are drawn on the case's own grid, so every model gets the same clicks
(a rule of segbench: prompts depend on the truth and the model's own masks, never on the adapter); on a
uniform grid a uniform voxel is a uniform point of the region's volume either way. Where the target fits
in the crop (192 mm a side: every target of our 3D tasks) the error region of the whole volume is the
crop's; a click outside an adapter's crop is given, and SAM-Med3D's adapter cannot use it.

The crop (``crop``). The official script crops 128³ around the centre of the ground truth's bounding box
(torchio ``CropOrPad(mask_name="label")``): a localisation aid no user has, which inflates the scores of
small targets. The default, ``crop = "click"``, gives no such aid: an adapter that crops centres its
crop on the first click (a user's own click). ``crop = "truth"`` replays the official script: each
prompt carries the target's bounding box (``crop_box``) and is marked ``localisation_aid`` in its
record, and the protocol's name says ``gtcrop``, so every row and page shows that the aid was given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.interface import Prompt, VolumePrompt
from segbench.protocols.base import Ask, ProtocolInputs, ProtocolKind, Target
from segbench.protocols.prompts import target_rng, targets_for
from segbench.protocols.volume_prompts import with_click

CROPS = ("click", "truth")
# ((z, y, x), label), 1 positive and 0 negative: voxel indices from the protocol, any point inside the volume from a
# caller that has one (a click mapped from another grid)
Click = tuple[tuple[float, float, float], int]


@dataclass
class ClickPrompt(VolumePrompt):
    """A :class:`VolumePrompt` of 3D clicks that keeps their order (``clicks``, the first first) and, for the
    official replay, the target's bounding box ``crop_box`` ((z, y, x) first and last voxels, inclusive),
    the localisation aid. ``seed`` keys the draw of each next click. Adapters that read only ``slices``
    see the same clicks as points on their slices."""

    clicks: tuple[Click, ...] = ()
    crop_box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    seed: int = 0

    @property
    def localisation_aid(self) -> bool:
        return self.crop_box is not None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["clicks"] = [[*point, label] for point, label in self.clicks]
        out["localisation_aid"] = self.localisation_aid
        if self.crop_box is not None:
            out["crop_box"] = [list(self.crop_box[0]), list(self.crop_box[1])]
        return out


def uniform_voxel(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A voxel of a non-empty (D, H, W) ``region`` drawn uniformly."""
    voxels = np.flatnonzero(region)
    z, y, x = np.unravel_index(voxels[int(rng.integers(len(voxels)))], region.shape)
    return int(z), int(y), int(x)


def next_click(truth: np.ndarray, predicted: np.ndarray | None, rng: np.random.Generator) -> Click:
    """The official ``random`` click: uniform over the error region, positive on a false negative; uniform over
    the truth, positive, when there is no prediction yet or it has no error."""
    if predicted is None:
        return uniform_voxel(truth, rng), 1
    missed = truth & ~predicted
    errors = missed | (predicted & ~truth)
    if not errors.any():
        return uniform_voxel(truth, rng), 1
    point = uniform_voxel(errors, rng)
    return point, int(missed[point])


def bounding_box_3d(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """First and last (z, y, x) voxels, inclusive, of a non-empty (D, H, W) mask."""
    spans = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    first = (int(spans[0][0]), int(spans[1][0]), int(spans[2][0]))
    last = (int(spans[0][-1]), int(spans[1][-1]), int(spans[2][-1]))
    return first, last


def click_prompt(previous: ClickPrompt | None, click: Click, **fields: Any) -> ClickPrompt:
    """``previous`` (or an empty prompt) with ``click`` appended, its slices and extent updated."""
    clicks = (*(previous.clicks if previous else ()), click)
    (z, y, x), label = click
    slices = with_click(previous.slices if previous else {}, ((round(z), round(y), round(x)), label))
    first_slice = round(clicks[0][0][0])
    kept = {"crop_box": previous.crop_box, "seed": previous.seed} if previous else {}
    z_range = previous.z_range if previous else (first_slice, first_slice)
    return ClickPrompt(slices, first_slice, z_range, clicks=clicks, **{**kept, **fields})


class SamMed3DClicks(ProtocolKind):
    """SAM-Med3D's clicks (module docstring): ``clicks`` in all, crop centred on the first click or (``crop =
    "truth"``, the official replay, a localisation aid) on the ground truth's bounding box."""

    kind = "sammed3d"
    defaults = {"clicks": 1, "crop": "click"}
    needs = frozenset({"point", "volume"})
    dim = 3

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        if params.get("crop", "click") not in CROPS:
            raise ValueError(f"protocol 'sammed3d': crop must be one of {CROPS}")
        if params.get("clicks", 1) < 1:
            raise ValueError("protocol 'sammed3d': clicks must be at least 1")

    @property
    def name(self) -> str:
        clicks = int(self.param("clicks"))
        return "sammed3d" + ("_gtcrop" if self.param("crop") == "truth" else "") + (f"_{clicks}" if clicks > 1 else "")

    @property
    def steps(self) -> int:
        return int(self.param("clicks"))

    @property
    def propagates(self) -> bool:
        return True

    def first(self, inputs: ProtocolInputs) -> Ask:
        targets = targets_for(inputs.labels, inputs.instances)
        prompts = []
        for target in targets:
            # keyed by the kind alone: every variant (1 or 5 clicks, either crop) starts from the same click
            rng = target_rng(inputs.seed, inputs.task, inputs.case_id, target.label, target.instance, self.kind)
            seed = int(rng.integers(2**63))
            prompts.append(self.volume_prompt(target, seed))
        return Ask(targets, prompts)

    def volume_prompt(self, target: Target, seed: int = 0) -> ClickPrompt:
        truth = target.mask.astype(bool)
        click = next_click(truth, None, np.random.default_rng([seed, 0]))
        crop_box = bounding_box_3d(truth) if self.param("crop") == "truth" else None
        prompt = click_prompt(None, click, crop_box=crop_box, seed=seed)
        prompt.z_range = (0, truth.shape[0] - 1)  # clicks tell no extent: the whole volume
        return prompt

    def correct(self, prompt: Any, target: Target, predicted: np.ndarray, feedback: Any) -> Any:
        if not isinstance(prompt, ClickPrompt):
            raise ValueError(f"protocol {self.name!r} refines its own prompts, got {type(prompt).__name__}")
        rng = np.random.default_rng([prompt.seed, len(prompt.clicks)])
        click = next_click(target.mask.astype(bool), np.asarray(predicted, dtype=bool), rng)
        refined = click_prompt(prompt, click)
        refined.previous = feedback
        return refined


def clicks_of(prompt: VolumePrompt) -> list[Click]:
    """The clicks of any volume prompt in order: a :class:`ClickPrompt`'s own, else the points of its slices
    (slice by slice, in each slice's order)."""
    if isinstance(prompt, ClickPrompt):
        return list(prompt.clicks)
    out: list[Click] = []
    for z, on_slice in sorted(prompt.slices.items()):
        if on_slice.points is None:
            continue
        labels = on_slice.point_labels if on_slice.point_labels is not None else np.ones(len(on_slice.points))
        out += [
            ((float(z), float(y), float(x)), int(label)) for (x, y), label in zip(on_slice.points, labels, strict=True)
        ]
    return out


def single_slice(prompt: Prompt) -> VolumePrompt:
    """A 2D prompt as the volume prompt of a one-slice volume."""
    return VolumePrompt({0: prompt}, 0, (0, 0), prompt.previous)


@hookimpl
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    register(SamMed3DClicks)
