"""Instance-wise evaluation of a binary mask: lesion detection and panoptic quality (issue 16 item 4).

The ground truth and the prediction are split into connected components (full connectivity: 8 in 2D,
26 in 3D, as cc3d's and the CVPR 2025 script's default); a ground-truth instance and a predicted one
match when their IoU exceeds 0.5 (strictly), which makes the matching unique without an assignment
step (Kirillov et al., "Panoptic Segmentation", 2019: two instances overlapping a third by more than
half of their union cannot both exist). Then, with TP matched pairs, FP unmatched predictions and FN
unmatched ground-truth instances:

* lesion-wise precision = TP / (TP + FP), recall = TP / (TP + FN), **F1** = 2TP / (2TP + FP + FN),
  which is panoptica's and Kirillov's **RQ** (recognition quality);
* **SQ** (segmentation quality) = the mean IoU of the matched pairs; **PQ** = SQ · RQ;
* recall by lesion size (:func:`recall_by_size`): ground-truth instances bucketed by their volume in
  mm³ (mm² in 2D; pixels when the spacing is 1) at :data:`SIZE_EDGES`;
* one record per ground-truth instance (:func:`instance_records`) for tasks that ask for a row per
  lesion.

panoptica (the reference in tests/test_metric_conformance.py) matches at IoU >= 0.5 by default; the
two differ only when an IoU is exactly 0.5 (docs/metrics.md). The component labelling and the pair
table are computed once per scored pair and shared by the metrics here
(:meth:`ScoringInputs.shared`). Edge cases: no instance on either side is a perfect answer (1 for
all); instances on one side only give 0 (SQ 0 as no pair matches).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from segbench.hookspecs import hookimpl
from segbench.measuring.metric_table import MetricSpec, ScoringInputs

MATCH_IOU = 0.5
# lesion-size buckets (mm³ in 3D, mm² in 2D): small < 100 <= medium < 1000 <= large
SIZE_EDGES: tuple[float, ...] = (100.0, 1000.0)
SIZE_NAMES: tuple[str, ...] = ("small", "medium", "large")


@dataclass(frozen=True)
class Matching:
    """Connected components of both masks and their IoU > 0.5 matches."""

    truth_sizes: np.ndarray  # voxels of ground-truth instance i + 1
    pred_sizes: np.ndarray
    matched_truth: np.ndarray  # ground-truth instance index (0-based) of each match
    matched_pred: np.ndarray
    matched_iou: np.ndarray

    @property
    def tp(self) -> int:
        return len(self.matched_truth)

    @property
    def fp(self) -> int:
        return len(self.pred_sizes) - self.tp

    @property
    def fn(self) -> int:
        return len(self.truth_sizes) - self.tp


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels 1..n of the mask's connected components (full connectivity) and n."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labels, count = ndimage.label(mask, structure=structure)
    return labels, int(count)


def match(truth: np.ndarray, predicted: np.ndarray) -> Matching:
    truth_labels, n_truth = components(truth)
    pred_labels, n_pred = components(predicted)
    truth_sizes = np.bincount(truth_labels.ravel(), minlength=n_truth + 1)[1:]
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:]
    both = truth_labels.astype(np.int64) * (n_pred + 1) + pred_labels
    pairs = np.bincount(both[(truth_labels > 0) & (pred_labels > 0)], minlength=1)
    codes = np.flatnonzero(pairs)
    gt_index, pred_index = codes // (n_pred + 1) - 1, codes % (n_pred + 1) - 1
    intersection = pairs[codes]
    iou = intersection / (truth_sizes[gt_index] + pred_sizes[pred_index] - intersection)
    keep = iou > MATCH_IOU
    return Matching(truth_sizes, pred_sizes, gt_index[keep], pred_index[keep], iou[keep])


def _matching(inputs: ScoringInputs) -> Matching:
    return inputs.shared("segbench.measuring.instances.match", lambda s: match(s.truth, s.predicted))


def _ratio(numerator: float, denominator: float) -> float:
    return 1.0 if denominator == 0 else numerator / denominator


def lesion_f1(inputs: ScoringInputs) -> float:
    m = _matching(inputs)
    return _ratio(2 * m.tp, 2 * m.tp + m.fp + m.fn)


def lesion_precision(inputs: ScoringInputs) -> float:
    m = _matching(inputs)
    return _ratio(m.tp, m.tp + m.fp)


def lesion_recall(inputs: ScoringInputs) -> float:
    m = _matching(inputs)
    return _ratio(m.tp, m.tp + m.fn)


def segmentation_quality(inputs: ScoringInputs) -> float:
    m = _matching(inputs)
    if m.tp:
        return float(np.mean(m.matched_iou))
    return 1.0 if m.fp + m.fn == 0 else 0.0


def panoptic_quality(inputs: ScoringInputs) -> float:
    return segmentation_quality(inputs) * lesion_f1(inputs)


def recall_by_size(inputs: ScoringInputs, edges: tuple[float, ...] = SIZE_EDGES) -> dict[str, float]:
    """Recall of the ground-truth instances in each size bucket (NaN for a bucket with none)."""
    m = _matching(inputs)
    voxel = math.prod(inputs.spacing)
    bucket = np.searchsorted(np.asarray(edges), m.truth_sizes * voxel, side="right")
    detected = np.zeros(len(m.truth_sizes), dtype=bool)
    detected[m.matched_truth] = True
    names = SIZE_NAMES if len(edges) == len(SIZE_NAMES) - 1 else tuple(f"bucket{i}" for i in range(len(edges) + 1))
    return {
        name: float(detected[bucket == i].mean()) if np.any(bucket == i) else math.nan for i, name in enumerate(names)
    }


def instance_records(inputs: ScoringInputs) -> list[dict[str, float | int]]:
    """One record per ground-truth instance: its size (voxels and mm), whether it was found, its IoU."""
    m = _matching(inputs)
    voxel = math.prod(inputs.spacing)
    iou = np.zeros(len(m.truth_sizes))
    iou[m.matched_truth] = m.matched_iou
    return [
        {
            "instance": i + 1,
            "voxels": int(size),
            "size_mm": float(size * voxel),
            "detected": int(iou[i] > 0),
            "iou": float(iou[i]),
        }
        for i, size in enumerate(m.truth_sizes)
    ]


_POLICY = "no instance on either side 1; instances on one side only 0"
INSTANCE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("lesion_f1", "Lesion F1", "", True, 3, _POLICY, lesion_f1, 0.0),
    MetricSpec("lesion_precision", "Lesion precision", "", True, 3, _POLICY, lesion_precision, 0.0),
    MetricSpec("lesion_recall", "Lesion recall", "", True, 3, _POLICY, lesion_recall, 0.0),
    MetricSpec("sq", "SQ", "", True, 3, _POLICY, segmentation_quality, 0.0),
    MetricSpec("pq", "PQ", "", True, 3, _POLICY, panoptic_quality, 0.0),
)


@hookimpl
def segbench_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    for spec in INSTANCE_METRICS:
        register(spec)
