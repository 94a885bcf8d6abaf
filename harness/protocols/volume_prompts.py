"""Prompt geometry of the volume protocols: key slices, boxes on slices and 3D correction clicks.

Each function turns a 3D target (a (D, H, W) bool mask) into a :class:`VolumePrompt`: 2D prompts on
some slices, the key slice where propagation starts, and the target's extent along the slices. The
protocols are the volume kinds of :mod:`segbench.protocols.kinds` (``key_slice_box``, ``slice_boxes``,
``iterative_3d``); like the 2D ones they depend only on the ground truth (and, for clicks, on the model's own errors),
never on the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from segbench.interface import Prompt, VolumePrompt
from segbench.protocols.prompts import ProtocolSpec, Target, bounding_box, correction_click


def slice_extent(mask: np.ndarray) -> tuple[int, int]:
    """First and last slice (inclusive) on which a (D, H, W) mask is non-empty."""
    present = np.flatnonzero(mask.any(axis=(1, 2)))
    if present.size == 0:
        raise ValueError("the target is empty")
    return int(present[0]), int(present[-1])


def key_slice(mask: np.ndarray, rule: str) -> int:
    """The key slice of a target: ``"middle"`` of its extent along the slices (the non-empty slice
    nearest to it, the lower on a tie, when the target skips the middle), or the ``"largest"`` area
    (the first one on a tie)."""
    areas = mask.sum(axis=(1, 2))
    if rule == "largest":
        return int(np.argmax(areas))
    if rule != "middle":
        raise ValueError(f"unknown key slice rule {rule!r}")
    first, last = slice_extent(mask)
    middle = (first + last) // 2
    present = np.flatnonzero(areas)
    return int(present[np.argmin(np.abs(present - middle))])


def key_slice_box(mask: np.ndarray, rule: str) -> VolumePrompt:
    """The tight 2D box of a (D, H, W) target on its key slice (``rule``: see :func:`key_slice`), with its extent."""
    extent = slice_extent(mask)
    key = key_slice(mask, rule)
    return VolumePrompt({key: Prompt(box=bounding_box(mask[key]))}, key, extent)


def slice_boxes(mask: np.ndarray, every: int) -> VolumePrompt:
    """The tight 2D box of a (D, H, W) target on every ``every``-th slice of its extent (from its first);
    propagation, where a model does it, starts at the first."""
    extent = slice_extent(mask)
    slices = {z: Prompt(box=bounding_box(mask[z])) for z in range(extent[0], extent[1] + 1, every) if mask[z].any()}
    return VolumePrompt(slices, min(slices), extent)


def initial_volume_prompt(spec: ProtocolSpec, target: Target) -> VolumePrompt:
    """The first prompt of a volume protocol for one target (its kind's
    :meth:`~segbench.protocols.base.ProtocolKind.volume_prompt`)."""
    return spec.handler.volume_prompt(target)


def refine_volume_prompt(prompt: VolumePrompt, target: Target, predicted: np.ndarray, feedback: Any) -> VolumePrompt:
    """The next iterative prompt: one CVPR 2025 correction click (26-connected largest error component,
    distance-transform maximum) added to the prompt of the slice it falls on."""
    slices = with_click(prompt.slices, correction_click(target.mask, predicted))
    return VolumePrompt(slices, prompt.key_slice, prompt.z_range, previous=feedback)


def with_click(slices: Mapping[int, Prompt], click: tuple[tuple[int, ...], int] | None) -> dict[int, Prompt]:
    """``slices`` with a 3D ``click`` ((z, y, x), label) added as a point to the prompt of slice z (a new
    prompt there if it had none); ``slices`` as they are when ``click`` is None."""
    slices = dict(slices)
    if click is not None:
        (z, y, x), label = click
        on_slice = slices.get(z, Prompt())
        points = on_slice.points if on_slice.points is not None else np.zeros((0, 2))
        labels = on_slice.point_labels if on_slice.point_labels is not None else np.zeros(0, dtype=np.int64)
        slices[z] = Prompt(
            box=on_slice.box,
            points=np.concatenate([points, [[float(x), float(y)]]]),
            point_labels=np.concatenate([labels, [label]]),
        )
    return slices
