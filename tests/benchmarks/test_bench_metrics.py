"""Metric speed: segbench's NSD + HD95 against DeepMind's surface-distance on the same 3D masks.

Run: python -m pytest tests/benchmarks/test_bench_metrics.py --benchmark-only -s
The ratio is printed; the values must be equal.
"""

from __future__ import annotations

import statistics
import time

import nibabel
import numpy as np
import pytest
import surface_distance
from scipy import ndimage

from segbench.measuring import metrics

from ..conftest import find_data_root

SHAPE = (64, 256, 256)
TOLERANCE_MM = 2.0


def ellipsoid_pair() -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """An organ-sized ellipsoid and a prediction off by a slice and a few voxels, CT-like spacing."""
    z, y, x = np.indices(SHAPE)
    gt = ((z - 32) / 20) ** 2 + ((y - 128) / 80) ** 2 + ((x - 120) / 70) ** 2 < 1
    pred = ((z - 33) / 21) ** 2 + ((y - 126) / 78) ** 2 + ((x - 124) / 72) ** 2 < 1
    return gt, pred, (2.5, 0.8, 0.8)


def brats_pair() -> tuple[np.ndarray, np.ndarray, tuple[float, ...]] | None:
    """A real BraTS whole-tumour mask in a 64x256x256 block, and as the prediction a copy grown by a
    voxel and moved by a voxel in each axis (zero-filled, no wrap-around)."""
    root = find_data_root()
    if root is None:
        return None
    case = sorted((root / "brats_mri").glob("brats2015TrainingData/*/*"))[0]
    label = np.asarray(nibabel.load(case / "OTMultiClass.nii.gz").dataobj).transpose(2, 1, 0) > 0
    centre = int(np.argmax(label.sum(axis=(1, 2))))
    start = max(0, min(centre - 32, label.shape[0] - 64))
    gt = np.zeros(SHAPE, dtype=bool)
    gt[:, 8:248, 8:248] = label[start : start + 64]
    grown = ndimage.binary_dilation(gt)
    pred = np.zeros_like(gt)
    pred[1:, 1:, 1:] = grown[:-1, :-1, :-1]
    return gt, pred, (1.0, 1.0, 1.0)


def reference(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    distances = surface_distance.compute_surface_distances(gt, pred, spacing)
    return (
        surface_distance.compute_surface_dice_at_tolerance(distances, TOLERANCE_MM),
        surface_distance.compute_robust_hausdorff(distances, 95),
    )


def ours(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    scores = metrics.evaluate(gt, pred, spacing, TOLERANCE_MM)
    return scores.nsd, scores.hd95


def median_seconds(function, *args, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@pytest.mark.parametrize("name", ["ellipsoids", "brats"])
def test_nsd_hd95_speed_against_surface_distance(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    pair = ellipsoid_pair() if name == "ellipsoids" else brats_pair()
    if pair is None:
        pytest.skip("BraTS data not found (SEGBENCH_DATA)")
    gt, pred, spacing = pair
    benchmark.group = "nsd+hd95 64x256x256"
    got = benchmark(ours, gt, pred, spacing)
    expected = reference(gt, pred, spacing)
    assert got == pytest.approx(expected, abs=1e-6)
    ratio = median_seconds(reference, gt, pred, spacing) / benchmark.stats.stats.median
    benchmark.extra_info["speedup_vs_surface_distance"] = round(ratio, 1)
    print(
        f"\n{name}: NSD {got[0]:.6f}, HD95 {got[1]:.4f} mm (equal to surface-distance); "
        f"segbench is {ratio:.1f}x faster than surface-distance"
    )
    assert ratio >= 10


def test_dice_nsd_hd95_2d(benchmark) -> None:  # type: ignore[no-untyped-def]
    rows, cols = np.indices((1072, 1920))
    gt = ((rows - 500) / 300) ** 2 + ((cols - 900) / 420) ** 2 < 1
    pred = ((rows - 510) / 290) ** 2 + ((cols - 905) / 430) ** 2 < 1
    benchmark.group = "metrics 2D 1920x1072"
    benchmark(metrics.evaluate, gt, pred, (1.0, 1.0), TOLERANCE_MM)
