"""Every shared dataset is read through its task file: shapes, dtypes, labels, spacing, counts."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pytest

from segbench import plugins
from segbench.data.readers.decode import read_image_file
from segbench.data.taskspec import discover_tasks, load_task, parse_task
from segbench.errors import ConfigError, DataError

TASKS = discover_tasks()

# case counts per PROVENANCE.md; OCT: the 32 case folders on disk (the PROVENANCE table says 31 but
# lists 32) minus the 4 excluded as inconsistent or duplicate
EXPECTED_CASES = {
    "wbc": 100,
    "kvasir": 60,
    "cvc": 29,
    "ct-slices": 4,
    "drive": 20,
    "chase": 28,
    "cxr-lungs": 60,
    "oct-layers": 28,
    "brats": 6,
    "la-heart": 10,
}


def reader_for(name: str, root: Path):
    spec = TASKS[name]
    return plugins.readers()[spec.reader](spec, root)


def test_every_dataset_has_a_task() -> None:
    datasets = {spec.dataset for spec in TASKS.values() if spec.dataset}
    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if shared.is_dir():
        assert datasets == {p.name for p in shared.iterdir() if p.is_dir()}
    assert set(EXPECTED_CASES) <= set(TASKS)


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(EXPECTED_CASES))
def test_reader_reads_dataset(name: str, data_root: Path) -> None:
    reader = reader_for(name, data_root)
    ids = reader.case_ids()
    assert len(ids) == EXPECTED_CASES[name]
    spec = TASKS[name]
    for case_id in (ids[0], ids[-1]):
        case = reader.read(case_id)
        assert case.image.dtype == np.uint8
        if spec.dim == 2:
            assert case.image.ndim == 3 and case.image.shape[2] == 3
        else:
            assert case.image.ndim == 3 and len(case.spacing) == 3
        assert case.labels and all(mask.dtype == bool and mask.shape == case.shape for mask in case.labels.values())
        assert any(mask.any() for mask in case.labels.values())
        assert all(s > 0 for s in case.spacing)
        assert all(path.is_file() for path in reader.files(case_id))


@pytest.mark.data
def test_wbc_labels_follow_the_mask_semantics(data_root: Path) -> None:
    case = reader_for("wbc", data_root).read("Dataset 1/001")
    raw = read_image_file(data_root / "wbc" / "Dataset 1" / "001.png")
    assert np.array_equal(case.labels["whole_cell"], raw > 0)
    assert np.array_equal(case.labels["nucleus"], raw == 255)
    assert case.labels["nucleus"].sum() < case.labels["whole_cell"].sum()


@pytest.mark.data
def test_cvc_frames_need_tifffile_and_are_read(data_root: Path) -> None:
    case = reader_for("cvc", data_root).read("CVC-ClinicDB/Original/1")
    assert case.image.shape == (288, 384, 3)
    assert 0 < case.labels["polyp"].mean() < 0.5


@pytest.mark.data
def test_cxr_masks_are_resized_to_the_image(data_root: Path) -> None:
    case = reader_for("cxr-lungs", data_root).read("Viral Pneumonia/images/Viral Pneumonia-1")
    assert case.image.shape[:2] == (299, 299) and case.labels["lungs"].shape == (299, 299)


@pytest.mark.data
def test_ct_slices_unite_instances_of_a_structure(data_root: Path) -> None:
    case = reader_for("ct-slices", data_root).read("data_demo/images/s0619_32")
    assert {"hip_left", "hip_right", "colon"} <= set(case.labels)
    parts = [
        read_image_file(p) > 127
        for p in sorted((data_root / "ct_slices_samed2d_demo/data_demo/masks").glob("s0619_32_hip_left_*.png"))
    ]
    assert len(parts) == 2 and np.array_equal(case.labels["hip_left"], parts[0] | parts[1])


@pytest.mark.data
def test_volumes_are_zyx_with_spacing(data_root: Path) -> None:
    brats = reader_for("brats", data_root).read(reader_for("brats", data_root).case_ids()[0])
    assert brats.image.shape == (155, 240, 240) and brats.spacing == (1.0, 1.0, 1.0)
    tumour, core = brats.labels["whole_tumour"], brats.labels["tumour_core"]
    assert core.sum() < tumour.sum() and not (core & ~tumour).any()
    la = reader_for("la-heart", data_root).read(reader_for("la-heart", data_root).case_ids()[0])
    assert la.image.shape[0] == 88 and la.spacing == (0.625, 0.625, 0.625)


@pytest.mark.data
def test_npz_reader_reads_a_medsam_style_volume(data_root: Path, tmp_path: Path) -> None:
    """MedSAM's npz layout (imgs (D, H, W), gts, spacing in SimpleITK's x, y, z order), made from BraTS."""
    case_dir = next((data_root / "brats_mri").glob("brats2015TrainingData/*/*"))
    image = nibabel.load(case_dir / "Flair_subtrMeanDivStd.nii.gz")
    gts = np.asarray(nibabel.load(case_dir / "OTMultiClass.nii.gz").dataobj).astype(np.uint8).transpose(2, 1, 0)
    imgs = np.asarray(image.dataobj).transpose(2, 1, 0)
    (tmp_path / "cases").mkdir()
    np.savez_compressed(tmp_path / "cases" / "brain.npz", imgs=imgs, gts=gts, spacing=np.array([1.0, 1.0, 2.5]))
    spec = parse_task(
        {
            "task": {"name": "npz", "dim": 3},
            "data": {"reader": "npz", "dataset": "cases", "images": "*.npz"},
            "intensity": {"policy": "percentile"},
            "labels": {"tumour": "nonzero"},
        },
        tmp_path / "t.toml",
    )
    case = plugins.readers()["npz"](spec, tmp_path).read("brain")
    assert case.image.shape == imgs.shape and case.spacing == (2.5, 1.0, 1.0)
    assert np.array_equal(case.labels["tumour"], gts > 0)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="broken.png"):
        read_image_file(bad)


def test_bad_task_file_names_file_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[task]\nname = "x"\n[data]\nreader = "image_mask_pairs"\n[labels]\ncell = "all"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*cell"):
        load_task(path)
    path.write_text("[task\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_task(path)


def test_missing_data_root_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="--data-root"):
        reader_for("wbc", None)
