"""Metrics against DeepMind's surface-distance (the definition we adopt), and the empty-mask policy."""

from __future__ import annotations

import numpy as np
import pytest
import surface_distance
from scipy import ndimage

from segbench.measuring import metrics


def reference(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> tuple[float, ...]:
    distances = surface_distance.compute_surface_distances(gt, pred, spacing)
    return (
        surface_distance.compute_dice_coefficient(gt, pred),
        surface_distance.compute_surface_dice_at_tolerance(distances, tolerance),
        surface_distance.compute_robust_hausdorff(distances, 95),
    )


def blobs(shape: tuple[int, ...], rng: np.random.Generator, count: int = 3) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    grid = np.indices(shape)
    for _ in range(count):
        center = [rng.integers(n // 4, 3 * n // 4 + 1) for n in shape]
        radius = rng.integers(2, max(3, min(shape) // 3))
        mask |= sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) < radius**2
    return mask


def random_case(rng: np.random.Generator, ndim: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    shape = tuple(int(n) for n in rng.integers(6, 48 if ndim == 3 else 90, size=ndim))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, size=ndim))  # anisotropic
    kind = rng.integers(3)
    if kind == 0:  # noise: dense, ragged surfaces
        return rng.random(shape) < 0.3, rng.random(shape) < 0.3, spacing
    gt = blobs(shape, rng)
    if kind == 1:  # unrelated blobs: large distances (k-d tree path)
        return gt, blobs(shape, rng), spacing
    pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 3))) ^ (rng.random(shape) < 0.02)
    return gt, pred, spacing


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("seed", range(15))
def test_random_cases_match_surface_distance(ndim: int, seed: int) -> None:
    rng = np.random.default_rng([ndim, seed])
    gt, pred, spacing = random_case(rng, ndim)
    if not gt.any() or not pred.any():
        pytest.skip("empty draw")
    for tolerance in (1.0, 2.0):
        expected = reference(gt, pred, spacing, tolerance)
        got = metrics.evaluate(gt, pred, spacing, tolerance)
        assert (got.dice, got.nsd, got.hd95) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.7, 1.3, 3.1)])
@pytest.mark.parametrize("shift", [1, 3])
def test_shifted_cube_is_analytic(spacing: tuple[float, ...], shift: int) -> None:
    gt = np.zeros((24, 24, 24), dtype=bool)
    gt[6:18, 6:18, 6:18] = True
    pred = np.roll(gt, shift, axis=0)
    got = metrics.evaluate(gt, pred, spacing, 2.0)
    assert got.dice == pytest.approx(2 * (12 - shift) / 24)
    # every surfel of a face moved along axis 0 is `shift` slices away from the other surface
    assert got.hd95 == pytest.approx(shift * spacing[0])
    assert (got.dice, got.nsd, got.hd95) == pytest.approx(reference(gt, pred, spacing, 2.0), abs=1e-6)


def test_identical_masks_are_perfect() -> None:
    gt = np.zeros((40, 50), dtype=bool)
    gt[5:30, 10:44] = True
    got = metrics.evaluate(gt, gt.copy(), (0.5, 2.0), 1.0)
    assert (got.dice, got.nsd, got.hd95) == (1.0, 1.0, 0.0)


def test_tolerance_is_in_millimetres() -> None:
    gt = np.zeros((40, 40), dtype=bool)
    gt[10:30, 10:30] = True
    pred = np.roll(gt, 2, axis=0)  # two rows away
    assert metrics.evaluate(gt, pred, (1.0, 1.0), 1.5).nsd < 1.0
    assert metrics.evaluate(gt, pred, (0.5, 1.0), 1.5).nsd == pytest.approx(1.0)  # rows are 0.5 mm


def test_empty_mask_policy() -> None:
    gt = np.zeros((20, 30), dtype=bool)
    empty = np.zeros_like(gt)
    gt[5:10, 5:10] = True
    both = metrics.evaluate(empty, empty, (1.0, 1.0), 2.0)
    assert (both.dice, both.nsd, both.hd95) == (1.0, 1.0, 0.0)
    missed = metrics.evaluate(gt, empty, (2.0, 1.0), 2.0)
    assert (missed.dice, missed.nsd) == (0.0, 0.0)
    assert missed.hd95 == pytest.approx(np.hypot(20 * 2.0, 30 * 1.0))  # the image diagonal in mm
    assert metrics.evaluate(empty, gt, (2.0, 1.0), 2.0) == missed


def test_neighbour_codes_equal_scipy_correlate() -> None:
    from surface_distance import lookup_tables

    rng = np.random.default_rng(0)
    mask = rng.random((7, 9, 11)) < 0.5
    crop = np.zeros(np.array(mask.shape) + 1, np.uint8)
    crop[:-1, :-1, :-1] = mask  # surface-distance's crop: one zero layer at the end of each axis
    expected = ndimage.correlate(crop, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)
    assert np.array_equal(metrics.neighbour_codes(np.pad(mask, 1)), expected)


@pytest.mark.data
@pytest.mark.parametrize(
    "task, label, other", [("brats", "whole_tumour", "tumour_core"), ("la-heart", "left_atrium", None)]
)
def test_real_volumes_match_surface_distance_with_anisotropic_spacing(
    data_root, task: str, label: str, other: str | None
) -> None:
    """Real 3D label maps as ground truth and prediction: BraTS whole tumour against tumour core, and the
    left atrium against itself moved by two slices and five rows; thick slices, unequal in-plane spacing."""
    from .volumes import crop_around, read_case

    case = crop_around(read_case(data_root, task), label, slices=48, margin=6)
    gt = case.labels[label]
    pred = case.labels[other] if other else np.roll(gt, (2, 5), axis=(0, 1))
    for spacing in [(2.5, 0.9, 0.7), (5.0, 0.625, 1.25)]:
        scores = metrics.evaluate(gt, pred, spacing, 2.0)
        assert np.allclose((scores.dice, scores.nsd, scores.hd95), reference(gt, pred, spacing, 2.0), atol=1e-9)
        assert 0 < scores.dice < 1 and scores.hd95 > 0


def _plain(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...], monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Scores with the k-d tree only after the whole neighbourhood: the search as it was before the early switch."""
    with monkeypatch.context() as patch:
        patch.setattr(metrics, "KD_TREE_COST", float("inf"))
        scores = metrics.evaluate(gt, pred, spacing, 2.0)
    return (scores.dice, scores.nsd, scores.hd95)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("seed", range(8))
def test_early_tree_switch_is_bit_exact(ndim: int, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handing surfels to the k-d tree early (after no offsets, or after a few) changes no bit of any score:
    the tree's distances inside the neighbourhood get the search's ranks, so sums run in the same order."""
    rng = np.random.default_rng([ndim, seed, 19])
    gt, pred, spacing = random_case(rng, ndim)
    if not gt.any() or not pred.any():
        pytest.skip("empty draw")
    expected = _plain(gt, pred, spacing, monkeypatch)
    for before_tree in (0, 5, 64):
        monkeypatch.setattr(metrics, "KD_TREE_COST", 0)
        monkeypatch.setattr(metrics, "SEARCH_BEFORE_TREE", before_tree)
        got = metrics.evaluate(gt, pred, spacing, 2.0)
        assert (got.dice, got.nsd, got.hd95) == expected


def test_box_around_an_ellipse_at_1024_is_bit_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """The case the early switch is for (the box baseline: a quarter of the surfels far beyond the
    neighbourhood), and a small structure in a corner of a large image: cropping and the switch change
    no bit, and the values still agree with surface-distance."""
    rows, cols = np.indices((1024, 1024))
    organ = ((rows - 512) / 256) ** 2 + ((cols - 512) / 200) ** 2 < 1
    box = np.zeros_like(organ)
    box[256:769, 312:713] = True
    corner = ((rows - 20) / 15) ** 2 + ((cols - 1000) / 20) ** 2 < 1
    moved = ((rows - 22) / 14) ** 2 + ((cols - 1003) / 21) ** 2 < 1
    for gt, pred in ((organ, box), (corner, moved)):
        got = metrics.evaluate(gt, pred, (1.0, 1.0), 2.0)
        assert (got.dice, got.nsd, got.hd95) == _plain(gt, pred, (1.0, 1.0), monkeypatch)
        assert (got.dice, got.nsd, got.hd95) == pytest.approx(reference(gt, pred, (1.0, 1.0), 2.0), abs=1e-6)


def test_evaluate_many_equals_evaluate_pair_by_pair() -> None:
    rng = np.random.default_rng(7)
    truth = blobs((80, 90), rng)
    other = blobs((80, 90), rng)
    predictions = [ndimage.binary_dilation(truth, iterations=k) for k in range(3)] + [np.zeros_like(truth), other]
    truths = [truth, truth, truth, truth, other.astype(np.uint8)]
    many = metrics.evaluate_many(truths, predictions, (0.8, 1.2), 2.0)
    assert many == [metrics.evaluate(t, p, (0.8, 1.2), 2.0) for t, p in zip(truths, predictions, strict=True)]
    with pytest.raises(ValueError):
        metrics.evaluate_many([truth], [], (1.0, 1.0), 2.0)
