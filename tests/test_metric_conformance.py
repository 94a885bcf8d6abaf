"""Every metric of the table against an independent implementation (issue 16 item 6).

References: DeepMind's surface-distance (ASSD/MASD from its directed average surface distances),
panoptica (clDice, RVD, instance-wise F1/SQ/PQ: ``pip install --no-deps panoptica`` plus pandas,
plotly, ruamel.yaml, connected-components-3d; its pins of numpy<2.3 and rich<14 clash with import-linter,
so it is skipped where absent), MONAI and medpy (the voxel-border ASSD, a known disagreement that is
asserted as such), and for boundary IoU a second formulation (chessboard distance to the outside)
since the official boundary_iou_api is not on PyPI. Random, analytic and anisotropic cases; 1e-6 where
the definitions agree. docs/metrics.md lists each disagreement.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import surface_distance
from scipy import ndimage

from segbench import plugins
from segbench.measuring import instances, shape_metrics
from segbench.measuring.metric_table import POLICY_VERSION, ScoringInputs, score

from .test_metrics import blobs, random_case


def inputs(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> ScoringInputs:
    return ScoringInputs(np.asarray(gt, bool), np.asarray(pred, bool), spacing, 2.0)


def cases(ndim: int, count: int) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    drawn = []
    for seed in range(count):
        gt, pred, spacing = random_case(np.random.default_rng([7, ndim, seed]), ndim)
        if gt.any() and pred.any():
            drawn.append((gt, pred, spacing))
    return drawn


@pytest.mark.parametrize("ndim", [2, 3])
def test_assd_and_masd_equal_surface_distance(ndim: int) -> None:
    for gt, pred, spacing in cases(ndim, 12):  # anisotropic spacings, noise and blobs
        forward, backward = surface_distance.compute_average_surface_distance(
            surface_distance.compute_surface_distances(gt, pred, spacing)
        )
        distances = surface_distance.compute_surface_distances(gt, pred, spacing)
        areas_gt, areas_pred = distances["surfel_areas_gt"], distances["surfel_areas_pred"]
        symmetric = (forward * areas_gt.sum() + backward * areas_pred.sum()) / (areas_gt.sum() + areas_pred.sum())
        s = inputs(gt, pred, spacing)
        assert shape_metrics.masd(s) == pytest.approx((forward + backward) / 2, abs=1e-6)
        assert shape_metrics.assd(s) == pytest.approx(symmetric, abs=1e-6)


def test_surface_metrics_share_one_distance_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.measuring import metrics

    calls = []
    real = metrics.surface_distances
    monkeypatch.setattr(metrics, "surface_distances", lambda *a: calls.append(1) or real(*a))
    gt, pred, spacing = cases(3, 3)[0]
    table = plugins.metrics()
    score(inputs(gt, pred, spacing), [table[name] for name in ("nsd", "hd95", "assd", "masd")])
    assert len(calls) == 1


def test_assd_shifted_slab_identity_and_symmetry() -> None:
    """A slab filling the image across y and x, shifted by two slices along the coarse axis: its caps
    are 2 · 2.5 = 5 mm from the other slab's, its walls on the image border partly coincide, so ASSD
    lies strictly between 0 and 5 mm; it is 0 against itself and symmetric in its arguments."""
    spacing = (2.5, 0.8, 0.6)
    gt = np.zeros((20, 6, 5), bool)
    pred = np.zeros_like(gt)
    gt[5:10] = True
    pred[7:12] = True
    distances = surface_distance.compute_surface_distances(gt, pred, spacing)
    expected = surface_distance.compute_average_surface_distance(distances)
    assert shape_metrics.masd(inputs(gt, pred, spacing)) == pytest.approx(np.mean(expected), abs=1e-6)
    assert 0 < shape_metrics.assd(inputs(gt, pred, spacing)) < 5.0
    assert shape_metrics.assd(inputs(gt, pred, spacing)) == pytest.approx(shape_metrics.assd(inputs(pred, gt, spacing)))
    assert shape_metrics.assd(inputs(gt, gt, spacing)) == 0.0 == shape_metrics.masd(inputs(gt, gt, spacing))


def test_voxel_border_assd_is_a_known_disagreement() -> None:
    """medpy (and MONAI, compared in tests/benchmarks/test_bench_shape_metrics.py: its import alone
    takes ~15 s) measure between border voxels, each weighing one; segbench and surface-distance
    between surfels weighted by area: the values differ (docs/metrics.md)."""
    from medpy.metric import binary

    gt, pred, spacing = cases(3, 6)[1]
    ours = shape_metrics.assd(inputs(gt, pred, spacing))
    voxel = binary.assd(pred, gt, voxelspacing=spacing)
    assert abs(ours - voxel) > 1e-3


def chessboard_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """The boundary band as a distance: mask pixels within ``width`` chessboard steps of a non-mask
    pixel, the image zero-padded (the official code's copyMakeBorder)."""
    padded = np.pad(mask, 1)
    depth = ndimage.distance_transform_cdt(padded, metric="chessboard")
    return (mask & (depth[tuple(slice(1, -1) for _ in mask.shape)] <= width)).astype(bool)


@pytest.mark.parametrize("ndim", [2, 3])
def test_boundary_iou_against_a_second_formulation(ndim: int) -> None:
    for gt, pred, _spacing in cases(ndim, 10):
        width = shape_metrics.boundary_width(gt.shape)
        a, b = chessboard_boundary(gt, width), chessboard_boundary(pred, width)
        expected = np.count_nonzero(a & b) / np.count_nonzero(a | b)
        assert shape_metrics.boundary_iou(inputs(gt, pred, _spacing)) == pytest.approx(expected, abs=1e-12)


def test_boundary_iou_analytic_square_and_official_width() -> None:
    # DRIVE's 584x565 image: round(0.02 * 812.6) = 16 erosions, as the official int(round(.))
    assert shape_metrics.boundary_width((584, 565)) == 16
    assert shape_metrics.boundary_width((10, 10)) == 1  # at least one
    gt = np.zeros((300, 300), bool)
    gt[50:150, 50:150] = True  # side 100; width round(0.02 * 424.26) = 8
    width = shape_metrics.boundary_width(gt.shape)
    assert width == 8
    band = 100**2 - (100 - 2 * width) ** 2
    assert np.count_nonzero(shape_metrics.mask_boundary(gt, width)) == band
    pred = np.roll(gt, 4, axis=1)  # shifted by 4 columns: rows of both bands line up
    # analytic count: both bands are unions of row strips; count column-wise per row class
    a = shape_metrics.mask_boundary(gt, width)
    inner_rows = range(50 + width, 150 - width)
    in_both = 0
    for row in range(300):
        cols_a = set(np.flatnonzero(a[row]))
        cols_b = {c + 4 for c in cols_a}  # pred is gt shifted, so its band is the band shifted
        in_both += len(cols_a & cols_b)
    assert len(inner_rows) == 100 - 2 * width
    expected = in_both / (2 * band - in_both)
    assert shape_metrics.boundary_iou(inputs(gt, pred, (1.0, 1.0))) == pytest.approx(expected, abs=1e-12)
    assert shape_metrics.boundary_iou(inputs(gt, gt, (1.0, 1.0))) == 1.0


def vessels(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Thin random curves (2-3 px wide), vessel-like."""
    mask = np.zeros(shape, bool)
    for _ in range(6):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        angle = rng.uniform(0, 2 * np.pi)
        for _step in range(200):
            angle += rng.normal(0, 0.2)
            y, x = y + np.sin(angle), x + np.cos(angle)
            if not (1 <= y < shape[0] - 2 and 1 <= x < shape[1] - 2):
                break
            mask[int(y) : int(y) + 2, int(x) : int(x) + 2] = True
    return mask


def test_cldice_against_panoptica_2d_and_3d() -> None:
    cldice_module = pytest.importorskip("panoptica.metrics.cldice")
    rng = np.random.default_rng(11)
    pairs = []
    for _ in range(4):
        gt = vessels((96, 96), rng)
        pairs.append((gt, ndimage.binary_dilation(gt) ^ (rng.random(gt.shape) < 0.01), (1.0, 1.0)))
    for gt, pred, spacing in cases(3, 8)[:2]:
        pairs.append((gt, pred, spacing))
    for gt, pred, spacing in pairs:
        expected = cldice_module._compute_centerline_dice_coefficient(gt, pred)
        if np.isnan(expected):  # panoptica: 0/0 when neither skeleton touches the other mask; ours 0
            expected = 0.0
        assert shape_metrics.cldice(inputs(gt, pred, spacing)) == pytest.approx(expected, abs=1e-6)


def test_cldice_analytic_line_inside_a_bar() -> None:
    # a 1-px line is its own skeleton and lies inside the 5-px bar whose skeleton is (almost) the line
    gt = np.zeros((40, 60), bool)
    gt[20, 5:55] = True
    pred = np.zeros_like(gt)
    pred[18:23, 3:57] = True
    s = inputs(gt, pred, (1.0, 1.0))
    skel_pred = shape_metrics.skeleton(pred)
    precision = np.count_nonzero(skel_pred & gt) / np.count_nonzero(skel_pred)
    assert shape_metrics.cldice(s) == pytest.approx(2 * precision / (precision + 1), abs=1e-12)  # Tsens = 1
    assert shape_metrics.cldice(inputs(gt, gt, (1.0, 1.0))) == 1.0


def test_rvd_against_panoptica_and_analytic_cubes() -> None:
    rvd_module = pytest.importorskip("panoptica.metrics.relative_volume_difference")
    for gt, pred, spacing in cases(3, 8):
        expected = rvd_module._compute_relative_volume_difference(gt, pred)
        assert shape_metrics.signed_relative_volume_difference(gt, pred) == pytest.approx(expected, abs=1e-12)
        assert shape_metrics.rvd(inputs(gt, pred, spacing)) == pytest.approx(abs(expected), abs=1e-12)
    gt = np.zeros((30, 30, 30), bool)
    gt[5:15, 5:15, 5:15] = True  # 1000 voxels
    pred = np.zeros_like(gt)
    pred[5:17, 5:15, 5:15] = True  # 1200
    assert shape_metrics.signed_relative_volume_difference(gt, pred) == pytest.approx(0.2)
    assert shape_metrics.rvd(inputs(gt, pred, (3.0, 0.5, 0.5))) == pytest.approx(0.2)  # spacing cancels


def panoptica_result(gt: np.ndarray, pred: np.ndarray):  # type: ignore[no-untyped-def]
    panoptica = pytest.importorskip("panoptica")
    from panoptica.metrics import Metric
    from panoptica.utils.constants import CCABackend

    evaluator = panoptica.Panoptica_Evaluator(
        expected_input=panoptica.InputType.SEMANTIC,
        # cc3d in 2D too: panoptica's 2D default is scipy's 4-connectivity (docs/metrics.md)
        instance_approximator=panoptica.ConnectedComponentsInstanceApproximator(cca_backend=CCABackend.cc3d),
        instance_matcher=panoptica.NaiveThresholdMatching(matching_threshold=0.5, strict_threshold=True),
        instance_metrics=[Metric.IOU],
        global_metrics=[Metric.DSC],
    )
    return evaluator.evaluate(pred.astype(np.uint8), gt.astype(np.uint8), verbose=False)["ungrouped"]


@pytest.mark.parametrize("ndim", [2, 3])
def test_instance_metrics_against_panoptica(ndim: int) -> None:
    rng = np.random.default_rng([3, ndim])
    checked = 0
    for _ in range(6):
        shape = (80, 80) if ndim == 2 else (30, 40, 40)
        gt = blobs(shape, rng, count=int(rng.integers(2, 6)))
        gt &= rng.random(shape) > 0.02  # a few holes, more components at the rim
        pred = ndimage.binary_erosion(gt, iterations=int(rng.integers(0, 3))) | blobs(shape, rng, count=2)
        result = panoptica_result(gt, pred)
        s = inputs(gt, pred, (1.0,) * ndim)
        got = score(s, [plugins.metrics()[n] for n in ("lesion_f1", "lesion_precision", "lesion_recall", "sq", "pq")])
        assert got["lesion_f1"] == pytest.approx(result.rq, abs=1e-6)
        assert got["lesion_precision"] == pytest.approx(result.prec, abs=1e-6)
        assert got["lesion_recall"] == pytest.approx(result.rec, abs=1e-6)
        if result.tp:
            assert got["sq"] == pytest.approx(result.sq, abs=1e-6)
            assert got["pq"] == pytest.approx(result.pq, abs=1e-6)
        checked += 1
    assert checked == 6


def test_instance_metrics_analytic_and_size_buckets() -> None:
    gt = np.zeros((60, 60), bool)
    gt[2:4, 2:4] = True  # 4 px, small: missed
    gt[10:30, 10:30] = True  # 400 px, medium: found
    gt[40:44, 40:44] = True  # 16 px, small: found
    pred = np.zeros_like(gt)
    pred[10:30, 10:28] = True  # IoU 0.9
    pred[40:44, 40:43] = True  # IoU 0.75
    pred[50:55, 5:10] = True  # false positive
    s = inputs(gt, pred, (1.0, 1.0))
    assert instances.lesion_f1(s) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert instances.segmentation_quality(s) == pytest.approx((0.9 + 0.75) / 2)
    assert instances.panoptic_quality(s) == pytest.approx((0.9 + 0.75) / 2 * 4 / 6)
    buckets = instances.recall_by_size(s)
    assert buckets["small"] == 0.5 and buckets["medium"] == 1.0 and math.isnan(buckets["large"])
    records = instances.instance_records(s)
    assert [r["detected"] for r in records] == [0, 1, 1]


def test_edge_case_policy() -> None:
    """The table in docs/metrics.md, policy version POLICY_VERSION."""
    assert POLICY_VERSION
    table = plugins.metrics()
    empty = np.zeros((20, 20), bool)
    full = np.zeros((20, 20), bool)
    full[5:10, 5:10] = True
    diagonal = math.hypot(20, 20)
    both = score(inputs(empty, empty, (1.0, 1.0)), list(table.values()))
    assert both == {
        "dice": 1.0, "nsd": 1.0, "hd95": 0.0, "assd": 0.0, "masd": 0.0, "boundary_iou": 1.0, "cldice": 1.0,
        "rvd": 0.0, "lesion_f1": 1.0, "lesion_precision": 1.0, "lesion_recall": 1.0, "sq": 1.0, "pq": 1.0,
    }  # fmt: skip
    missed = score(inputs(full, empty, (1.0, 1.0)), list(table.values()))
    assert missed["assd"] == missed["masd"] == missed["hd95"] == pytest.approx(diagonal)
    assert missed["rvd"] == 1.0
    assert all(missed[n] == 0.0 for n in ("dice", "nsd", "boundary_iou", "cldice", "lesion_f1", "sq", "pq"))
    spurious = score(inputs(empty, full, (1.0, 1.0)), list(table.values()))
    assert math.isnan(spurious["rvd"]) and spurious["lesion_precision"] == 0.0 and spurious["lesion_recall"] == 1.0


def test_lesion_f1_on_a_real_brats_label(data_root) -> None:  # type: ignore[no-untyped-def]
    """BraTS enhancing tumour (label 4) of one case: 13 components. The prediction keeps all but the
    four smallest exactly and adds one spurious lesion, so TP = n - 4, FN = 4, FP = 1 by construction."""
    import nibabel

    path = data_root / "brats_mri/brats2015TrainingData/train/brats_2013_pat0005_1/OTMultiClass.nii.gz"
    image = nibabel.load(path)
    truth = np.asarray(image.dataobj) == 4
    box = tuple(slice(max(0, int(i.min()) - 8), int(i.max()) + 9) for i in np.nonzero(truth))
    truth = truth[box]  # the tumour's box and a margin: the same components, a tenth of the voxels
    spacing = tuple(float(z) for z in image.header.get_zooms())
    labels, n = ndimage.label(truth, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    assert n >= 6
    smallest = np.argsort(sizes, kind="stable")[:4] + 1
    predicted = truth & ~np.isin(labels, smallest)
    spurious = (slice(0, 4), slice(0, 4), slice(0, 4))
    assert not truth[spurious].any()
    predicted[spurious] = True
    s = inputs(truth, predicted, spacing)
    tp, fn, fp = n - 4, 4, 1
    assert instances.lesion_f1(s) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert instances.lesion_recall(s) == pytest.approx(tp / n)
    assert instances.segmentation_quality(s) == 1.0  # the kept lesions are exact copies
    assert instances.panoptic_quality(s) == pytest.approx(instances.lesion_f1(s))
    records = instances.instance_records(s)
    assert sorted(r["instance"] for r in records if not r["detected"]) == sorted(int(i) for i in smallest)
    missed_sizes = sizes[smallest - 1] * math.prod(spacing)
    buckets = instances.recall_by_size(s)
    for name, low, high in zip(
        instances.SIZE_NAMES, (0.0, *instances.SIZE_EDGES), (*instances.SIZE_EDGES, math.inf), strict=True
    ):
        in_bucket = (sizes * math.prod(spacing) >= low) & (sizes * math.prod(spacing) < high)
        missed = np.count_nonzero((missed_sizes >= low) & (missed_sizes < high))
        if in_bucket.any():
            assert buckets[name] == pytest.approx(1 - missed / np.count_nonzero(in_bucket))
        else:
            assert math.isnan(buckets[name])
    if importlib.util.find_spec("panoptica") is not None:
        result = panoptica_result(truth, predicted)
        assert (result.tp, result.fp, result.fn) == (tp, fp, fn)


def test_cldice_between_chase_observers(data_root) -> None:  # type: ignore[no-untyped-def]
    """Real vessels: CHASE_DB1's second observer scored against the first (the task's ground truth).
    The value (0.852, Dice 0.817) is recomputed from the skeletons here, and equals panoptica's where
    it is installed."""
    from PIL import Image

    folder = data_root / "chase_db1_fundus/CHASEDB1"
    first = np.asarray(Image.open(folder / "Image_01L_1stHO.png")) > 0
    second = np.asarray(Image.open(folder / "Image_01L_2ndHO.png")) > 0
    first, second = (m if m.ndim == 2 else m[..., 0] for m in (first, second))
    s = inputs(first, second, (1.0, 1.0))
    got = score(s, [plugins.metrics()[n] for n in ("dice", "cldice", "boundary_iou")])
    assert 0.5 < got["cldice"] < 1.0 and 0.0 < got["boundary_iou"] < 1.0
    skel_first, skel_second = shape_metrics.skeleton(first), shape_metrics.skeleton(second)
    precision = np.count_nonzero(skel_second & first) / np.count_nonzero(skel_second)
    sensitivity = np.count_nonzero(skel_first & second) / np.count_nonzero(skel_first)
    assert got["cldice"] == pytest.approx(2 * precision * sensitivity / (precision + sensitivity), abs=1e-12)
    if importlib.util.find_spec("panoptica") is not None:
        from panoptica.metrics.cldice import _compute_centerline_dice_coefficient

        assert got["cldice"] == pytest.approx(_compute_centerline_dice_coefficient(first, second), abs=1e-6)
