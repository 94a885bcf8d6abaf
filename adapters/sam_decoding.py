"""SAM-style prompt decoding, written once for every adapter whose decoder is SAM's or SAM2's.

SAM, MedSAM, MedicoSAM, SAM-Med2D and LiteMedSAM (:mod:`segbench.adapters.sam_base`) and the SAM2 family
(:mod:`segbench.adapters.sam2family`) differ in how they prepare an image and map prompts and masks, not in
how a step's prompts reach the decoder. This module is that part:

* **grouping by shape**: the prompts of one step are grouped by their structure (:class:`PromptShape`: a
  box or not, the number of points, a mask prompt or not) and each group is one decoder call. Prompts of
  one shape batch exactly, with no padding tokens, which would change SAM's attention
  (``SamPredictor.predict_torch`` and ``SAM2ImagePredictor.predict`` take such batches);
* **a lone click is ambiguous**: SAM's paper and both official predictors' notebooks ask for three masks
  (``multimask_output=True``) and keep the one with the highest predicted IoU (:attr:`PromptShape.lone_click`,
  :func:`pick_best`); an adapter may choose otherwise (SAM-Med2D always asks for three, MedSAM never);
* **logits as feedback**: the low-resolution logits of each chosen mask are returned as the prompt's
  feedback and come back, at the next iterative step, as ``Prompt.previous``, the mask prompt.

An adapter supplies one function that decodes a group (:data:`DecodeGroup`); :func:`decode_by_shape` checks
the prompts against the adapter's capabilities, groups them, calls it and puts the answers back in the
prompts' order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segbench.interface import AdapterMeta, Prediction, Prompt


@dataclass(frozen=True)
class PromptShape:
    """What a prompt is made of; prompts of one shape are decoded in one batch."""

    box: bool
    points: int
    mask: bool

    @classmethod
    def of(cls, prompt: Prompt) -> PromptShape:
        points = 0 if prompt.points is None else len(prompt.points)
        return cls(prompt.box is not None, points, prompt.previous is not None)

    @property
    def lone_click(self) -> bool:
        """One point and nothing else: SAM's recommendation is three candidates, the best by predicted IoU."""
        return not self.box and self.points == 1 and not self.mask


def checked_shape(prompt: Prompt, meta: AdapterMeta) -> PromptShape:
    """The prompt's shape, or a ValueError when the adapter cannot take it (a point for a box-only model,
    a mask prompt for a model without one, a prompt with neither a box nor points)."""
    shape = PromptShape.of(prompt)
    capabilities = meta.capabilities
    if shape.points and not capabilities.point:
        raise ValueError(f"{meta.name} takes box prompts only, got points")
    if shape.mask and not capabilities.mask:
        raise ValueError(f"{meta.name} takes no mask prompt, got previous logits")
    if not shape.box and not shape.points:
        raise ValueError(f"{meta.name}: a prompt needs a box or points")
    return shape


def stacked_points(prompts: Sequence[Prompt]) -> tuple[np.ndarray, np.ndarray]:
    """The points ``(n, P, 2)`` as (x, y) and their labels ``(n, P)`` of prompts of one shape."""
    coords = np.stack([np.asarray(p.points, dtype=np.float64) for p in prompts])
    labels = np.stack([np.asarray(p.point_labels) for p in prompts])
    return coords, labels


def stacked_boxes(prompts: Sequence[Prompt]) -> np.ndarray:
    """The boxes ``(n, 4)`` as (x_min, y_min, x_max, y_max) of prompts of one shape."""
    return np.stack([np.asarray(p.box, dtype=np.float64).reshape(4) for p in prompts])


def pick_best(scores: Any, *candidates: Any) -> tuple[Any, ...]:
    """Each prompt's best candidate: ``scores`` is ``(n, C)`` (the predicted IoU of C candidates), each of
    ``candidates`` ``(n, C, ...)``; returns the best scores ``(n,)`` and each candidate array ``(n, ...)``
    at the best index (with C = 1, the only candidate). Works on numpy arrays and torch tensors alike."""
    best = scores.argmax(1)
    if isinstance(scores, np.ndarray):
        rows: Any = np.arange(len(scores))
    else:
        import torch

        rows = torch.arange(len(scores), device=scores.device)
    return (scores[rows, best], *(candidate[rows, best] for candidate in candidates))


@dataclass
class GroupAnswer:
    """The decoder's answer for the n prompts of one group, in the group's order."""

    masks: np.ndarray  # (n, H, W) bool, in the original image
    scores: np.ndarray  # (n,) the chosen masks' predicted IoU
    feedback: Sequence[Any]  # n items: what comes back as Prompt.previous (the chosen low-resolution logits)


DecodeGroup = Callable[[PromptShape, list[Prompt]], GroupAnswer]


def decode_by_shape(
    meta: AdapterMeta, prompts: Sequence[Prompt] | None, size: tuple[int, int], decode: DecodeGroup
) -> Prediction:
    """Decode every prompt of one image, one ``decode`` call per prompt shape; masks ``(N, H, W)`` of an
    image of ``size`` (H, W), scores and feedback in the order of ``prompts``."""
    if not prompts:
        raise ValueError(f"{meta.name} needs prompts (box or points), one per target")
    groups: dict[PromptShape, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        groups[checked_shape(prompt, meta)].append(index)
    masks = np.zeros((len(prompts), *size), dtype=bool)
    scores = np.zeros(len(prompts), dtype=np.float32)
    feedback: list[Any] = [None] * len(prompts)
    for shape, indices in groups.items():
        answer = decode(shape, [prompts[i] for i in indices])
        masks[indices] = answer.masks
        scores[indices] = answer.scores
        for position, index in enumerate(indices):
            feedback[index] = answer.feedback[position]
    return Prediction(masks, scores, feedback)
