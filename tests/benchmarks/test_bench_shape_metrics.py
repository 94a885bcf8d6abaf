"""Speed of each new metric against its reference library, on the same masks (issue 16 item 6).

Run: python -m pytest tests/benchmarks/test_bench_shape_metrics.py --benchmark-only -s
Each test prints segbench's time, the library's and the ratio; the values are checked equal where the
definitions agree (docs/metrics.md). Libraries that are not installed are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
import surface_distance
from scipy import ndimage

from segbench.measuring import instances, shape_metrics
from segbench.measuring.metric_table import ScoringInputs

from .test_bench_metrics import ellipsoid_pair


def best_of(function: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name: str, ours: float, theirs: float, library: str) -> None:
    print(f"\n{name}: segbench {ours * 1e3:.1f} ms, {library} {theirs * 1e3:.1f} ms ({theirs / ours:.1f}x)")


def fresh(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> ScoringInputs:
    return ScoringInputs(gt, pred, spacing, 2.0)


def test_assd_masd_speed_against_surface_distance(benchmark) -> None:  # type: ignore[no-untyped-def]
    gt, pred, spacing = ellipsoid_pair()
    got = benchmark(lambda: (shape_metrics.assd(s := fresh(gt, pred, spacing)), shape_metrics.masd(s)))
    theirs = best_of(
        lambda: surface_distance.compute_average_surface_distance(
            surface_distance.compute_surface_distances(gt, pred, spacing)
        ),
        repeats=1,
    )
    forward, backward = surface_distance.compute_average_surface_distance(
        surface_distance.compute_surface_distances(gt, pred, spacing)
    )
    assert got[1] == pytest.approx((forward + backward) / 2, abs=1e-6)
    report("ASSD+MASD 64x256x256", benchmark.stats.stats.min, theirs, "surface-distance")
    monai_metrics = pytest.importorskip("monai.metrics")
    import torch

    batch = [torch.from_numpy(m[None, None].astype(np.float32)) for m in (pred, gt)]
    monai = best_of(
        lambda: monai_metrics.compute_average_surface_distance(*batch, symmetric=True, spacing=list(spacing)),
        repeats=1,
    )
    report("ASSD (voxel-border, not equal) 64x256x256", benchmark.stats.stats.min, monai, "MONAI")


def vessel_pair() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices((584, 565))
    gt = np.zeros((584, 565), bool)
    for k in range(12):  # sinusoidal vessels, 2-4 px wide
        gt |= np.abs(rows - (40 + 45 * k + 20 * np.sin(cols / (30 + 5 * k)))) < 1 + k % 3
    return gt, ndimage.binary_dilation(gt) & ~(np.random.default_rng(0).random(gt.shape) < 0.05)


def test_cldice_speed_against_panoptica(benchmark) -> None:  # type: ignore[no-untyped-def]
    cldice = pytest.importorskip("panoptica.metrics.cldice")
    gt, pred = vessel_pair()
    got = benchmark(lambda: shape_metrics.cldice(fresh(gt, pred, (1.0, 1.0))))
    theirs = best_of(lambda: cldice._compute_centerline_dice_coefficient(gt, pred))
    assert got == pytest.approx(cldice._compute_centerline_dice_coefficient(gt, pred), abs=1e-6)
    report("clDice 584x565 (DRIVE size)", benchmark.stats.stats.min, theirs, "panoptica")


def test_boundary_iou_speed(benchmark) -> None:  # type: ignore[no-untyped-def]
    gt, pred = vessel_pair()
    benchmark(lambda: shape_metrics.boundary_iou(fresh(gt, pred, (1.0, 1.0))))
    print(f"\nBoundary IoU 584x565: segbench {benchmark.stats.stats.min * 1e3:.1f} ms (no library on PyPI)")


def lesions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    grid = np.indices((96, 128, 128))
    gt = np.zeros((96, 128, 128), bool)
    for _ in range(40):
        centre = rng.integers(8, 88), rng.integers(8, 120), rng.integers(8, 120)
        gt |= sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) < rng.integers(2, 6) ** 2
    pred = ndimage.binary_dilation(gt) & (rng.random(gt.shape) > 0.01)
    return gt, pred


def test_instance_metrics_speed_against_panoptica(benchmark) -> None:  # type: ignore[no-untyped-def]
    panoptica = pytest.importorskip("panoptica")
    from panoptica.metrics import Metric

    gt, pred = lesions()
    evaluator = panoptica.Panoptica_Evaluator(
        expected_input=panoptica.InputType.SEMANTIC,
        instance_approximator=panoptica.ConnectedComponentsInstanceApproximator(),
        instance_matcher=panoptica.NaiveThresholdMatching(matching_threshold=0.5, strict_threshold=True),
        instance_metrics=[Metric.IOU],
        global_metrics=[Metric.DSC],
    )

    def ours() -> tuple[float, float]:
        s = fresh(gt, pred, (1.0, 1.0, 1.0))
        return instances.lesion_f1(s), instances.panoptic_quality(s)

    got = benchmark(ours)
    result = evaluator.evaluate(pred.astype(np.uint8), gt.astype(np.uint8), verbose=False)["ungrouped"]
    assert got == pytest.approx((result.rq, result.pq), abs=1e-6)
    theirs = best_of(lambda: evaluator.evaluate(pred.astype(np.uint8), gt.astype(np.uint8), verbose=False))
    report("lesion F1 + PQ 96x128x128, ~40 lesions", benchmark.stats.stats.min, theirs, "panoptica")
