"""Surface, boundary, topology and volume metrics beyond Dice/NSD/HD95 (issue 16 item 4), as metric-table rows.

Definitions (each checked against an independent library in tests/test_metric_conformance.py; every
known disagreement is written in docs/metrics.md):

* **ASSD** (average symmetric surface distance) = the surfel-weighted mean of both directed distance
  sets, (Σ d(g→P)·a_g + Σ d(p→G)·a_p) / (Σ a_g + Σ a_p); **MASD** (mean average surface distance) = the
  mean of the two directed means, as DeepMind's ``surface_distance.compute_average_surface_distance``
  returns them. Both reuse the surfel distances that NSD and HD95 use
  (:attr:`ScoringInputs.distances`, one computation per pair). Surfels are weighted by contour length
  (2D) or area (3D) in mm, so these are not medpy's/MONAI's voxel-border ASSD (docs/metrics.md).
* **Boundary IoU** (Cheng et al., CVPR 2021, the official ``boundary_iou_api`` ``mask_to_boundary``):
  a mask's boundary is the mask minus its erosion by ``d`` iterations of a full 3x3 (3x3x3)
  structuring element, the image zero-padded so a mask cut by the image border has a boundary there;
  ``d = round(0.02 · image diagonal in pixels)``, at least 1. Boundary IoU = |∂G ∩ ∂P| / |∂G ∪ ∂P|.
  Pixels, not mm, as the official code (its ratio is of the image diagonal); 3D uses the voxel
  diagonal and a 26-neighbourhood.
* **clDice** (Shit et al., CVPR 2021): Tprec = |S(P) ∩ G| / |S(P)|, Tsens = |S(G) ∩ P| / |S(G)|,
  clDice = 2·Tprec·Tsens / (Tprec + Tsens), skeletons by ``skimage.morphology.skeletonize`` (Zhang's
  method in 2D, Lee's in 3D) — the paper's and panoptica's recipe.
* **RVD** (relative volume difference) = |V(P) − V(G)| / V(G), the absolute value of panoptica's and
  MetricsReloaded's signed (V(P) − V(G)) / V(G) (:func:`signed_relative_volume_difference`), so that
  lower is better and a mean does not cancel over- and under-segmentation.

Edge cases follow :data:`segbench.measuring.metric_table.POLICY_VERSION` (the table in docs/metrics.md):
both masks empty is a perfect answer (ASSD/MASD 0, boundary IoU 1, clDice 1, RVD 0); one empty is the
worst (distances: the image diagonal in mm, as HD95; boundary IoU 0; clDice 0); RVD with an empty
ground truth and a non-empty prediction is undefined (NaN, as MetricsReloaded).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from segbench.hookspecs import hookimpl
from segbench.lazy import lazy_import
from segbench.measuring import metrics
from segbench.measuring.metric_table import MetricSpec, ScoringInputs

# scikit-image on first use (a clDice row): its import is ~0.4 s of a run's start that no default metric needs
morphology = lazy_import("skimage.morphology")

BOUNDARY_DILATION_RATIO = 0.02  # the official boundary_iou_api default


def directed_mean_distances(distances: metrics.SurfaceDistances) -> tuple[float, float]:
    """Surfel-weighted mean distance from the ground truth's surface to the prediction's and back."""
    return (
        float(np.sum(distances.gt_to_pred * distances.areas_gt) / np.sum(distances.areas_gt)),
        float(np.sum(distances.pred_to_gt * distances.areas_pred) / np.sum(distances.areas_pred)),
    )


def assd(inputs: ScoringInputs) -> float:
    distances = inputs.distances
    if distances is None:
        return _empty_distance(inputs)
    total = np.sum(distances.gt_to_pred * distances.areas_gt) + np.sum(distances.pred_to_gt * distances.areas_pred)
    return float(total / (np.sum(distances.areas_gt) + np.sum(distances.areas_pred)))


def masd(inputs: ScoringInputs) -> float:
    distances = inputs.distances
    if distances is None:
        return _empty_distance(inputs)
    return float(np.mean(directed_mean_distances(distances)))


def _empty_distance(inputs: ScoringInputs) -> float:
    if not inputs.truth.any() and not inputs.predicted.any():
        return 0.0
    return metrics.image_diagonal_mm(inputs.truth.shape, inputs.spacing)


def boundary_width(shape: tuple[int, ...], ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    """Erosion iterations of the official code: round(ratio · diagonal in pixels), at least 1.
    Python's round (half to even), as the official ``int(round(...))``."""
    return max(1, int(round(ratio * math.sqrt(sum(n * n for n in shape)))))


def mask_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask minus its erosion by ``width`` iterations of the full 3^n element, zeros outside."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    eroded = ndimage.binary_erosion(mask, structure=structure, iterations=width, border_value=0)
    return mask & ~eroded


def boundary_iou(inputs: ScoringInputs) -> float:
    truth, predicted = inputs.truth, inputs.predicted
    if not truth.any() and not predicted.any():
        return 1.0
    if not truth.any() or not predicted.any():
        return 0.0
    width = boundary_width(truth.shape)
    gt_boundary, pred_boundary = mask_boundary(truth, width), mask_boundary(predicted, width)
    return float(np.count_nonzero(gt_boundary & pred_boundary) / np.count_nonzero(gt_boundary | pred_boundary))


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang (2D) or Lee (3D) skeleton, as bool."""
    return np.asarray(morphology.skeletonize(mask), dtype=bool)


def cldice(inputs: ScoringInputs) -> float:
    truth, predicted = inputs.truth, inputs.predicted
    if not truth.any() and not predicted.any():
        return 1.0
    if not truth.any() or not predicted.any():
        return 0.0
    skel_pred, skel_truth = skeleton(predicted), skeleton(truth)
    precision = int(np.count_nonzero(skel_pred & truth)) / max(int(np.count_nonzero(skel_pred)), 1)
    sensitivity = int(np.count_nonzero(skel_truth & predicted)) / max(int(np.count_nonzero(skel_truth)), 1)
    if precision + sensitivity == 0:
        return 0.0
    return float(2 * precision * sensitivity / (precision + sensitivity))


def signed_relative_volume_difference(truth: np.ndarray, predicted: np.ndarray) -> float:
    """(V(P) − V(G)) / V(G): >0 over-, <0 under-segmentation; 0 when both are empty, NaN when only G is."""
    v_truth, v_pred = int(np.count_nonzero(truth)), int(np.count_nonzero(predicted))
    if v_truth == 0:
        return 0.0 if v_pred == 0 else math.nan
    return (v_pred - v_truth) / v_truth


def rvd(inputs: ScoringInputs) -> float:
    return abs(signed_relative_volume_difference(inputs.truth, inputs.predicted))


SHAPE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("assd", "ASSD", "length", False, 2, "both empty 0; one empty the image diagonal", assd, "diagonal"),
    MetricSpec("masd", "MASD", "length", False, 2, "both empty 0; one empty the image diagonal", masd, "diagonal"),
    MetricSpec("boundary_iou", "Boundary IoU", "", True, 3, "both empty 1; one empty 0", boundary_iou, 0.0),
    MetricSpec("cldice", "clDice", "", True, 3, "both empty 1; one empty 0", cldice, 0.0),
    MetricSpec(
        "rvd",
        "|RVD|",
        "",
        False,
        3,
        "both empty 0; empty prediction 1; empty ground truth undefined (NaN)",
        rvd,
        1.0,
    ),
)


@hookimpl
def segbench_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    for spec in SHAPE_METRICS:
        register(spec)
