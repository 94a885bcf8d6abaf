"""Issue 14, item 2: a case never stops a run. Each attack is a small generated dataset run with the
``box`` baseline in process: the bad case becomes a visible failed row (or a warning naming the file),
and every other unit of the run still runs and is written."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import nibabel
import numpy as np
import polars as pl
import pytest
import tifffile
from PIL import Image

from segbench import cli, plugins
from segbench.data.case import Case
from segbench.data.readers.phantom import phantom
from segbench.data.taskspec import load_task
from segbench.errors import ConfigError, DataError, DataWarning
from segbench.measuring.metrics import MARGIN_BUDGET, evaluate, spacing_problem
from segbench.running.store import RunStore

from .test_runner import write_phantom_dataset

PNGS = (
    '[task]\nname = "pngs"\n[data]\nreader = "image_mask_pairs"\ndataset = "pngs"\n'
    'images = "images/*.png"\nmask = "masks/{name}"\n[labels]\norgan = "nonzero"\nlesion = [255]\n'
)
TIFFS = (
    '[task]\nname = "tiffs"\n[data]\nreader = "image_mask_pairs"\ndataset = "tiffs"\n'
    'images = "images/*.tif"\nmask = "masks/{stem}.png"\n[intensity]\npolicy = "minmax"\n'
    '[labels]\norgan = "nonzero"\n'
)
VOLS = (
    '[task]\nname = "vols"\ndim = 3\n[data]\nreader = "nifti"\ndataset = "vols"\nimages = "images/*.nii"\n'
    'mask = "labels/{name}"\n[intensity]\npolicy = "minmax"\n[labels]\norgan = "nonzero"\n'
    '[prompts]\nprotocols = ["slice_boxes"]\n'
)


def write_suite(folder: Path, tasks: dict[str, str], adapters: tuple[str, ...] = ("box",)) -> Path:
    (folder / "tasks").mkdir(parents=True, exist_ok=True)
    for name, text in tasks.items():
        (folder / "tasks" / f"{name}.toml").write_text(text)
    config = folder / "bench.toml"
    config.write_text(
        f'task_dirs = ["tasks"]\n[suites.s]\nadapters = {json.dumps(list(adapters))}\n'
        f"tasks = {json.dumps(list(tasks))}\n"
    )
    return config


def run(folder: Path, config: Path, *extra: str) -> tuple[int, Path, str]:
    """``segbench run`` in process; (exit status, run dir, stderr)."""
    import contextlib
    import io

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = cli.main(
            [
                "run",
                "--config",
                str(config),
                "--suite",
                "s",
                "--data-root",
                str(folder / "data"),
                "--out",
                str(folder / "out"),
                "--run-id",
                "r",
                "--no-progress",
                "--no-warmup",
                *extra,
            ]
        )
    return status, folder / "out" / "r", err.getvalue()


def write_tiffs(root: Path, count: int, nan_case: int) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        image, labels = phantom(3, index)
        pixels = image[..., 0].astype(np.float32)
        if index == nan_case:
            pixels[:5, :5] = np.nan  # a few NaNs: minmax would make the whole image 0 and score it "ok"
        tifffile.imwrite(root / "images" / f"{index:03d}.tif", pixels)
        Image.fromarray(labels["organ"].astype(np.uint8) * 255).save(root / "masks" / f"{index:03d}.png")


def write_volumes(root: Path, zooms: list[tuple[float, float, float]]) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for index, zoom in enumerate(zooms):
        label = np.zeros((24, 24, 6), np.uint8)  # x, y, z
        label[6:16, 8:18, 1:5] = 1
        image = (rng.normal(50, 5, label.shape) + 80 * label).astype(np.float32)
        for folder, array in (("images", image), ("labels", label)):
            volume = nibabel.Nifti1Image(array, np.eye(4))
            volume.header.set_zooms(zoom)
            nibabel.save(volume, root / folder / f"v{index}.nii")


def test_nan_spacing_volume_and_nan_pixel_image_fail_one_row_each(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiffs(data / "tiffs", 3, nan_case=1)
    nan, tiny = float("nan"), 1e-9
    write_volumes(data / "vols", [(1.0, 1.0, 2.0), (1.0, 1.0, nan), (1.0, 1.0, tiny), (1.0, 1.0, 2.0)])
    config = write_suite(tmp_path, {"tiffs": TIFFS, "vols": VOLS})
    started = time.perf_counter()
    status, run_dir, stderr = run(tmp_path, config)
    elapsed = time.perf_counter() - started
    assert status == 0, stderr
    cases = pl.read_parquet(run_dir / "cases.parquet")
    failed = cases.filter(pl.col("status") == "failed").sort("task", "case_id")
    assert failed.select("task", "case_id").rows() == [
        ("tiffs", "images/001"),
        ("vols", "images/v1"),
        ("vols", "images/v2"),
    ]
    errors = failed["error"].to_list()
    assert "images/001.tif" in errors[0] and "non-finite pixel" in errors[0]
    assert "images/v1.nii" in errors[1] and "not finite" in errors[1]
    assert "images/v2.nii" in errors[2] and "voxel" in errors[2]  # refused before any allocation
    ok = cases.filter(pl.col("status") == "ok")
    assert sorted(ok.select("task", "case_id").unique().rows()) == [
        ("tiffs", "images/000"),
        ("tiffs", "images/002"),
        ("vols", "images/v0"),
        ("vols", "images/v3"),
    ]
    assert RunStore(run_dir).read_manifest()["status"] == "complete"
    assert elapsed < 60  # the 1e-9 case used to allocate 1.2 GiB; now it is refused at once
    # a rerun does not die on the same units: they are done (failed), the run completes again
    status, _, stderr = run(tmp_path, config)
    assert status == 0 and "resumed: 7 units reused, 0 to run" in stderr
    status, _, stderr = run(tmp_path, config, "--retry-failed")
    assert status == 0 and "3 to run" in stderr
    assert pl.read_parquet(run_dir / "cases.parquet").filter(pl.col("status") == "failed").height == 3


def test_spacing_is_checked_when_a_case_is_made() -> None:
    image = np.zeros((4, 8, 8), np.uint8)
    labels = {"organ": np.ones((4, 8, 8), bool)}
    for spacing, words in [
        ((1.0, float("nan"), 1.0), "not finite"),
        ((1.0, 0.0, 1.0), "not positive"),
        ((1.0, -1.0, 1.0), "not positive"),
        ((1.0, 1.0, 1e-9), "voxel budget"),
        ((1.0, 1.0, 1e-300), "voxel budget"),
    ]:
        with pytest.raises(DataError, match=words) as caught:
            Case("c", image, labels, spacing, (Path("scan.nii.gz"),))
        assert caught.value.path == "scan.nii.gz"
    with pytest.raises(DataError, match="non-finite pixel"):
        Case("c", np.full((8, 8, 3), np.nan, np.float32), {}, (1.0, 1.0))
    # the budget depends on anisotropy, not scale: a tiny isotropic spacing is fine, and so is real data
    assert spacing_problem((155, 240, 240), (1e-9, 1e-9, 1e-9)) is None
    assert spacing_problem((155, 240, 240), (1.0, 1.0, 1.0)) is None
    assert spacing_problem((80, 512, 512), (5.0, 0.7, 0.7)) is None
    started = time.perf_counter()
    assert spacing_problem((80, 512, 512), (5.0, 0.05, 0.05)) is None  # a ratio of 100
    # a milder anisotropy is refused on a large grid, where the search margin would exceed its budget
    assert f"budget {MARGIN_BUDGET:.3g}" in (spacing_problem((155, 240, 240), (1e-4, 1.0, 1.0)) or "")
    with pytest.raises(ValueError, match="voxel budget"):  # metrics refuse direct calls too
        evaluate(labels["organ"], labels["organ"], (1.0, 1.0, 1e-9), 1.0)
    assert time.perf_counter() - started < 1


def test_empty_ground_truth_is_a_visible_failed_row(tmp_path: Path) -> None:
    data = tmp_path / "data" / "pngs"
    write_phantom_dataset(data, 3)
    size = Image.open(data / "masks" / "001.png").size
    Image.fromarray(np.zeros(size[::-1], np.uint8)).save(data / "masks" / "001.png")
    config = write_suite(tmp_path, {"pngs": PNGS})
    status, run_dir, stderr = run(tmp_path, config)
    assert status == 0, stderr
    cases = pl.read_parquet(run_dir / "cases.parquet")
    failed = cases.filter(pl.col("status") == "failed")
    assert failed["case_id"].to_list() == ["images/001"] and failed["label"].to_list() == ["*"]
    assert "masks/001.png" in failed["error"][0] and "no ground truth" in failed["error"][0]
    assert failed["diagonal"][0] > 0  # the case was read: its penalty diagonal is known
    assert cases.filter(pl.col("status") == "ok")["case_id"].n_unique() == 2


def test_label_in_no_case_and_unmatched_mask_values_warn(tmp_path: Path) -> None:
    data = tmp_path / "data" / "pngs"
    write_phantom_dataset(data, 2)  # masks hold 0, 128 (organ) and 255 (lesion)
    task = PNGS.replace('organ = "nonzero"\nlesion = [255]', "organ = [128]\nlesion = [255]\ncyst = [7]")
    config = write_suite(tmp_path, {"pngs": task})
    status, run_dir, stderr = run(tmp_path, config)
    assert status == 0, stderr
    assert "label 'cyst' is in none of the 2 case(s)" in stderr
    manifest = RunStore(run_dir).read_manifest()
    assert any("'cyst'" in warning for warning in manifest["warnings"])
    # values no label claims: 0/1 masks read with organ = [255] would lose the organ without a word
    (tmp_path / "t.toml").write_text(PNGS.replace('organ = "nonzero"\nlesion = [255]', "organ = [255]"))
    width, height = Image.open(data / "masks" / "001.png").size
    Image.fromarray((np.arange(height)[:, None] < 20) & (np.arange(width) < 20)).convert("L").point(
        lambda v: v // 255
    ).save(data / "masks" / "001.png")  # a 0/1 mask
    reader = plugins.readers()["image_mask_pairs"](load_task(tmp_path / "t.toml"), tmp_path / "data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader.read("images/000")  # 128 and 255: 128 matches no label
        reader.read("images/001")
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 2
    assert "masks/000.png" in messages[0] and "values [128]" in messages[0]
    assert "masks/001.png" in messages[1] and "values [1]" in messages[1]


def test_case_id_collision_names_both_files(tmp_path: Path) -> None:
    data = tmp_path / "data" / "pngs"
    write_phantom_dataset(data, 2)
    Image.open(data / "images" / "001.png").save(data / "images" / "001.bmp")
    (tmp_path / "t.toml").write_text(PNGS.replace("images/*.png", "images/*"))
    with pytest.raises(ConfigError) as caught:
        plugins.readers()["image_mask_pairs"](load_task(tmp_path / "t.toml"), tmp_path / "data")
    assert "001.bmp" in str(caught.value) and "001.png" in str(caught.value) and "images/001" in str(caught.value)


def test_an_adapter_that_cannot_load_is_skipped_while_the_others_run(tmp_path: Path) -> None:
    data = tmp_path / "data" / "pngs"
    write_phantom_dataset(data, 2)
    config = write_suite(tmp_path, {"pngs": PNGS}, adapters=("litemedsam", "box"))
    spec = plugins.adapter_class("litemedsam").meta.checkpoint
    assert spec is not None
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    started = time.perf_counter()
    status, run_dir, stderr = run(tmp_path, config, "--checkpoint", f"{spec.name}={corrupt}")
    assert time.perf_counter() - started < 60  # the load fails before any encoder pass
    assert status == cli.FAILED_EXIT  # issue 13's rule: an adapter that failed every case
    assert "litemedsam failed every one of its cases" in stderr
    assert "skipped: litemedsam: adapter did not load" in stderr
    cases = pl.read_parquet(run_dir / "cases.parquet")
    lite = cases.filter(pl.col("adapter") == "litemedsam")
    assert lite.height == 2 and (lite["status"] == "failed").all()
    assert all(error.startswith("adapter did not load: ") for error in lite["error"])
    box = cases.filter(pl.col("adapter") == "box")
    assert (box["status"] == "ok").all() and box["case_id"].n_unique() == 2
    manifest = RunStore(run_dir).read_manifest()
    assert manifest["status"] == "complete" and manifest["skipped"]["litemedsam"].startswith("adapter did not load")
