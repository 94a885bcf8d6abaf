"""segbench's CVPR 2024/2025 case scores against the official scripts' own numbers (issue 16 item 2, metric part).

Fixtures (tests/fixtures/official/, provenance inside each file):
* cvpr25_iter_eval.json — JunMa11/CVPR-MedSegFMCompetition @ 748e862d162e3e3ee8197bd4085b19bbbe0bb8a0,
  CVPR25_iter_eval.py (compute_multi_class_dsc, compute_multi_class_nsd, sample_coord, compute_edt and
  the click loop) with SurfaceDice.py;
* cvpr24_compute_metrics.json — bowang-lab/MedSAM branch LiteMedSAM @ b0fab476e54e631dd412b25e0db9fdf2a2b0f54c,
  evaluation/compute_metrics.py (compute_metrics on 2D_/3D_ npz files) with evaluation/SurfaceDice.py;
* microsam_iterative_prompts.json — computational-cell-analytics/micro-sam @ 3acdcd72958395d51c86da1414770b603a781173,
  micro_sam/prompt_generators.py IterativePromptGenerator (clicks only; for the microsam protocol's tests).
Command: the official functions compiled from those files at those commits by a scratch script outside
the project, the docker call replaced by a stand-in model that the fixture describes (the ground truth
moved and eroded/dilated, then each click sets its class to the ground truth within 3 voxels); the
official code never enters segbench. Here the stand-in model is replayed from the recorded clicks and
the scores are recomputed with :mod:`segbench.measuring.challenge`, to 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segbench.measuring import challenge

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((FIXTURES / name).read_text())


def shift(labels: np.ndarray, offset: list[int]) -> np.ndarray:
    out = np.zeros_like(labels)
    src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, labels.shape, strict=True))
    dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, labels.shape, strict=True))
    out[dst] = labels[src]
    return out


def initial(gt: np.ndarray, offset: list[int], erode: int) -> np.ndarray:
    moved = shift(gt, offset)
    if not erode:
        return moved
    structure = ndimage.generate_binary_structure(gt.ndim, gt.ndim)
    out = np.zeros_like(moved)
    for c in np.unique(moved)[1:]:
        grow = ndimage.binary_erosion if erode > 0 else ndimage.binary_dilation
        out[grow(moved == c, structure, iterations=abs(erode))] = c
    return out


def fix(pred: np.ndarray, gt: np.ndarray, cls: int, center: list[int], radius: int) -> np.ndarray:
    """Inside the ball of ``radius`` voxels around ``center``, class ``cls`` becomes the ground truth's."""
    window = tuple(slice(max(0, c - radius), c + radius + 1) for c in center)
    grid = np.ogrid[tuple(slice(w.start, min(w.stop, n)) for w, n in zip(window, gt.shape, strict=True))]
    region = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2
    pred = pred.copy()
    local_pred, local_gt = pred[window], gt[window]
    local_pred[region & (local_gt == cls)] = cls
    local_pred[region & (local_gt != cls) & (local_pred == cls)] = 0
    return pred


def la_label(root: Path) -> np.ndarray:
    import h5py

    with h5py.File(root / "la_heart_mri/2018LA_Seg_Training Set/ULHWPWKKLTE921LQLH1P/mri_norm2.h5") as f:
        return np.asarray(f["label"]).astype(np.uint8)


def brats_label(root: Path) -> np.ndarray:
    import nibabel

    path = root / "brats_mri/brats2015TrainingData/test/brats_2013_pat0001_1/OTMultiClass.nii.gz"
    return np.asarray(nibabel.load(path).dataobj).astype(np.uint8)


def ct_labels(root: Path) -> np.ndarray:
    from PIL import Image

    labels = None
    for i, name in enumerate(["liver", "spleen", "inferior_vena_cava", "aorta"], start=1):
        mask = (
            np.asarray(Image.open(root / f"ct_slices_samed2d_demo/data_demo/masks/amos_0006_90_{name}_000.png")) > 127
        )
        mask = mask if mask.ndim == 2 else mask[..., 0]
        labels = np.zeros(mask.shape, np.uint8) if labels is None else labels
        labels[mask & (labels == 0)] = i
    assert labels is not None
    return labels


def test_fixtures_carry_their_provenance() -> None:
    for name in ("cvpr25_iter_eval.json", "cvpr24_compute_metrics.json", "microsam_iterative_prompts.json"):
        source = load(name)["source"]
        assert len(source["commit"]) == 40 and source["repository"] and source["command"] and source["files"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_cvpr25_steps_auc_and_final_equal_the_official_script(data_root: Path, index: int) -> None:
    case = load("cvpr25_iter_eval.json")["cases"][index]
    gt = brats_label(data_root) if case["case"].startswith("brats") else la_label(data_root)
    assert list(gt.shape) == case["shape"]
    model = case["stand_in_model"]
    pred = initial(gt, model["initial"]["offset"], model["initial"]["erode"])
    classes = challenge.cvpr25_classes(gt)
    assert classes == case["classes"]
    spacing = tuple(case["spacing"])
    dscs, nsds = [], []
    for step in case["steps"]:
        for click in step["clicks"]:  # every class's click comes from the previous prediction
            if click["coordinate"] is not None:
                pred = fix(pred, gt, click["class"], click["coordinate"], model["click_fix_radius_voxels"])
        dsc, nsd = challenge.multi_class_scores(gt, pred, spacing, classes)
        assert dsc == pytest.approx(step["dsc"], abs=1e-6)
        assert nsd == pytest.approx(step["nsd"], abs=1e-6)
        dscs.append(dsc)
        nsds.append(nsd)
    assert challenge.click_auc(dscs) == pytest.approx(case["DSC_AUC"], abs=1e-6)
    assert challenge.click_auc(nsds) == pytest.approx(case["NSD_AUC"], abs=1e-6)
    assert (dscs[-1], nsds[-1]) == pytest.approx((case["DSC_Final"], case["NSD_Final"]), abs=1e-6)


def test_cvpr24_case_scores_equal_the_official_script(data_root: Path) -> None:
    cases = load("cvpr24_compute_metrics.json")["cases"]
    gts = {"2D_CT": ct_labels(data_root), "3D_MR_la": la_label(data_root), "3D_MR_brats": brats_label(data_root)}
    for case in cases:
        gt = next(v for k, v in gts.items() if case["case"].startswith(k))
        pred = initial(gt, case["stand_in_prediction"]["offset"], case["stand_in_prediction"]["erode"])
        spacing = None if case["spacing"] is None else tuple(case["spacing"])
        dsc, nsd = challenge.cvpr24_scores(gt, pred, spacing)
        assert dsc == pytest.approx(case["dsc"], abs=1e-6)
        assert nsd == pytest.approx(case["nsd"], abs=1e-6)
    assert len(cases) == 4


def test_click_auc_is_the_trapezoid_over_the_five_click_steps() -> None:
    # box step excluded: only the last five values count, at x = 0..4
    assert challenge.click_auc([0.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == pytest.approx(4.0)
    assert challenge.click_auc([0.9, 0.0, 0.5, 0.5, 0.5, 1.0]) == pytest.approx(0.25 + 0.5 + 0.5 + 0.75)


def test_nsd_is_gated_on_the_mean_dsc() -> None:
    gt = np.zeros((1, 40, 40), np.uint8)
    gt[0, 5:25, 5:25] = 1
    gt[0, 30:35, 30:35] = 2
    far = np.zeros_like(gt)
    far[0, 24:26, 24:26] = 1  # class 1 barely overlaps, class 2 missed: mean DSC < 0.2
    dsc, nsd = challenge.multi_class_scores(gt, far, (1.0, 1.0, 1.0), challenge.cvpr25_classes(gt))
    assert dsc < challenge.NSD_GATE and nsd == 0.0
    near = gt.copy()
    near[0, 5:25, 5:11] = 0  # DSC still > 0.2: NSD computed, the moved edge beyond 2 mm
    dsc, nsd = challenge.multi_class_scores(gt, near, (1.0, 1.0, 1.0), challenge.cvpr25_classes(gt))
    assert dsc > challenge.NSD_GATE and 0.5 < nsd < 1.0
