"""The CVPR 2024 and 2025 challenges' case scores as pure functions, for the ``cvpr24``/``cvpr25`` protocols.

Written from the official scripts (their code is not copied here):

* JunMa11/CVPR-MedSegFMCompetition ``CVPR25_iter_eval.py``: per case, the DSC is the mean over the
  classes present in the ground truth (``pd.unique``, background skipped) of each class's Dice; NSD at
  2 mm likewise, computed only when that mean DSC exceeds 0.2 and 0 otherwise; DSC_AUC and NSD_AUC are
  ``scipy.integrate.cumulative_trapezoid(values[-5:], np.arange(5))[-1]``: the trapezoid rule over the
  five click steps at x = 0..4 (the box step is excluded, so the maximum is 4); DSC_Final and
  NSD_Final are the last step's values. Its README ("Upper Time Bound During Testing") sets the DSC
  and NSD of a case whose inference exceeds 90 s per class to 0 (the script itself only warns, with
  ``runtime_upperbound = num_class * 90`` beside ``TotalRunningTime``): :func:`cvpr25_case_score` sets
  all four scores of such a case to 0.
* bowang-lab/MedSAM (LiteMedSAM branch) ``evaluation/compute_metrics.py``: the classes are
  ``range(1, gt.max() + 1)`` (a class absent from both masks gives a NaN Dice, so a NaN case mean, as
  DeepMind's 2018 ``compute_dice_coefficient``), the same 0.2 gate, and a 2D case is scored as a
  one-slice 3D volume with spacing (1, 1, 1), so its NSD counts the slice's top and bottom faces as
  surface too.

Surface distances are segbench's (:func:`segbench.measuring.metrics.surface_distances`), equal to the
surface-distance package the scripts ship; tests/test_challenge_scores.py replays the fixtures recorded
by running the official code (tests/fixtures/official/) and compares to 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segbench.measuring import metrics

NSD_GATE = 0.2
NSD_TOLERANCE_MM = 2.0
CLICKS = 5


def _dice_or_nan(gt: np.ndarray, pred: np.ndarray) -> float:
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    return math.nan if total == 0 else 2 * int(np.count_nonzero(gt & pred)) / total


def _nsd(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float) -> float:
    if not gt.any() and not pred.any():
        return math.nan  # surface-distance: 0 / 0
    if not gt.any() or not pred.any():
        return 0.0
    return metrics.surface_dice(metrics.surface_distances(gt, pred, spacing), tolerance_mm)


def multi_class_scores(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: tuple[float, ...],
    classes: Sequence[int],
    tolerance_mm: float = NSD_TOLERANCE_MM,
) -> tuple[float, float]:
    """(DSC, NSD) of one case: means over ``classes``, NSD 0 unless the mean DSC exceeds the gate."""
    dsc = float(np.mean([_dice_or_nan(gt == c, pred == c) for c in classes]))
    if not dsc > NSD_GATE:  # NaN fails the gate too, as in the scripts
        return dsc, 0.0
    return dsc, float(np.mean([_nsd(gt == c, pred == c, spacing, tolerance_mm) for c in classes]))


def cvpr25_classes(gt: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(gt) if c != 0]


def cvpr24_classes(gt: np.ndarray) -> list[int]:
    return list(range(1, int(gt.max()) + 1))


def cvpr24_scores(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...] | None) -> tuple[float, float]:
    """The CVPR 2024 case score; ``spacing`` None for a 2D case (scored as one slice at 1 mm)."""
    classes = cvpr24_classes(gt)
    if gt.ndim == 2:
        return multi_class_scores(gt[..., None], pred[..., None], (1.0, 1.0, 1.0), classes)
    if spacing is None:
        raise ValueError("a 3D case needs its spacing")
    return multi_class_scores(gt, pred, spacing, classes)


def click_auc(values: Sequence[float], clicks: int = CLICKS) -> float:
    """The trapezoid area under the last ``clicks`` steps at unit spacing (x = 0 .. clicks - 1)."""
    tail = np.asarray(values[-clicks:], dtype=np.float64)
    return float(np.sum((tail[1:] + tail[:-1]) / 2))


def case_step_score(dices: Sequence[float] | np.ndarray, nsds: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(DSC, NSD) of a case at one step from its classes' own Dice and NSD at 2 mm (a row per class):
    their means, the NSD 0 unless the mean DSC exceeds the gate (what :func:`multi_class_scores` gives
    from the masks)."""
    dsc = float(np.mean(np.asarray(dices, dtype=np.float64)))
    return (dsc, float(np.mean(np.asarray(nsds, dtype=np.float64)))) if dsc > NSD_GATE else (dsc, 0.0)


@dataclass(frozen=True)
class Cvpr25Score:
    """The four scores ``CVPR25_iter_eval.py`` writes per case; the AUCs None where the click steps
    were not taken (a box-only model's case)."""

    dsc_auc: float | None
    nsd_auc: float | None
    dsc_final: float
    nsd_final: float


def cvpr25_case_score(dscs: Sequence[float], nsds: Sequence[float], over_time_limit: bool) -> Cvpr25Score:
    """A case's CVPR 2025 score from its DSC and NSD per step (the box step, if any, first): the AUCs over
    the last :data:`CLICKS` steps (the click steps, with or without a box), the last step's values, all
    0 when the case was over the time limit."""
    taken = len(dscs) >= CLICKS
    if over_time_limit:
        return Cvpr25Score(0.0 if taken else None, 0.0 if taken else None, 0.0, 0.0)
    return Cvpr25Score(
        click_auc(dscs) if taken else None, click_auc(nsds) if taken else None, float(dscs[-1]), float(nsds[-1])
    )
