"""An adapter's declared input (issue 17.3): one declaring ``AdapterMeta(input="raw")`` is handed the file's
own values (Hounsfield units of a CT volume, in the file's dtype) with the case's spacing and the task's
modality, through both volume paths (a 2D adapter slice by slice, a native volume adapter), while a
default adapter keeps getting the task's window as 8-bit, byte for byte what the reader's intensity policy
makes; every row says which input its adapter got."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segbench.data.readers.decode import apply_intensity
from segbench.data.specs import IntensitySpec
from segbench.protocols.slice_cache import slice_image

from .conftest import registered_adapters, run_cli
from .plugin_site import install_plugin

AIR, TISSUE = -1000, 40
ZOOMS = (0.8, 0.7, 2.5)  # NIfTI (x, y, z) voxel size in mm
MODULE = "segbench_raw_probe"
PLUGIN = """
import hashlib, json, os

import numpy as np

from segbench import hookimpl
from segbench.interface import Adapter, AdapterMeta, Capabilities, Prediction, RawImage


def record(kind, image):
    entry = {"adapter": kind, "type": type(image).__name__}
    if isinstance(image, RawImage):
        entry.update(dtype=str(image.dtype), values=sorted(np.unique(image.pixels).tolist()),
                     spacing=list(image.spacing), unit=image.unit, modality=image.modality,
                     shape=list(image.shape), affine=image.affine is not None)
    else:
        entry.update(dtype=str(image.dtype), shape=list(image.shape),
                     sha256=hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest())
    with open(os.environ["RAW_PROBE_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\\n")


def boxes(shape, prompts):
    masks = np.zeros((len(prompts), *shape), bool)
    for mask, prompt in zip(masks, prompts):
        x0, y0, x1, y1 = (int(v) for v in prompt.box)
        mask[y0:y1 + 1, x0:x1 + 1] = True
    return masks


class Probe(Adapter):
    def load(self, options):
        pass

    def encode(self, image):
        record(self.meta.name, image)
        return image.shape[:2]

    def predict(self, state, prompts=None, support=None):
        return Prediction(boxes(state, prompts))


class RawProbe(Probe):
    meta = AdapterMeta(name="rawprobe", family="test", description="records the raw slices it gets",
                       capabilities=Capabilities(box=True), input="raw")


class RgbProbe(Probe):
    meta = AdapterMeta(name="rgbprobe", family="test", description="records the 8-bit slices it gets",
                       capabilities=Capabilities(box=True))


class RawVolumeProbe(Probe):
    meta = AdapterMeta(name="rawvolume", family="test", description="records the raw volume it gets",
                       capabilities=Capabilities(box=True, volume=True), input="raw")

    def encode_volume(self, volume):
        record(self.meta.name, volume)
        return volume.shape

    def predict_volume(self, state, prompts):
        masks = np.zeros((len(prompts), *state), bool)
        for mask, prompt in zip(masks, prompts):
            for z, one in prompt.slices.items():
                mask[z] = boxes(state[1:], [one])[0]
        return Prediction(masks)


@hookimpl
def segbench_register_adapters(register):
    register(RawProbe)
    register(RgbProbe)
    register(RawVolumeProbe)
"""
TASK = """[task]
name = "ct-raw"
version = "1"
description = "a synthetic CT volume: air and a block of soft tissue"
modality = "CT"
dim = 3

[data]
reader = "nifti"
dataset = "ct"
images = "images/*.nii.gz"
mask = "labels/{name}"

[intensity]
policy = "window"
level = 40
width = 400

[labels]
tissue = [1]

[prompts]
protocols = ["slice_boxes"]
"""


def _volume(folder: Path) -> np.ndarray:
    """A (x, y, z) = (16, 20, 5) int16 CT volume of air with a block of soft tissue, and its label."""
    import nibabel

    volume = np.full((16, 20, 5), AIR, dtype=np.int16)
    volume[4:11, 5:15, 1:4] = TISSUE
    affine = np.diag([*ZOOMS, 1.0])
    for sub, array in (("images", volume), ("labels", (volume == TISSUE).astype(np.uint8))):
        (folder / sub).mkdir(parents=True)
        nibabel.save(nibabel.Nifti1Image(array, affine), folder / sub / "case0.nii.gz")
    return volume


def test_raw_adapters_get_hounsfield_units_and_default_adapters_the_readers_window(tmp_path: Path) -> None:
    volume = _volume(tmp_path / "data" / "ct")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "ct-raw.toml").write_text(TASK)
    config = tmp_path / "bench.toml"
    config.write_text('task_dirs = ["tasks"]\n[suites.s]\nadapters = ["rawprobe", "rgbprobe", "rawvolume"]\n')
    config.write_text(config.read_text() + 'tasks = ["ct-raw"]\n')
    log = tmp_path / "seen.jsonl"
    env = {**install_plugin(tmp_path / "site", MODULE, PLUGIN, "segbench-raw-probe"), "RAW_PROBE_LOG": str(log)}
    run_cli(
        *("run", "--config", str(config), "--suite", "s", "--data-root", str(tmp_path / "data")),
        *("--out", str(tmp_path / "out"), "--run-id", "r", "--no-progress", "--save-masks", "0"),
        env=env,
    )
    # the case's slices: the warm-up's phantom image (raw: 1.0 px a pixel) left out
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    seen = [entry for entry in seen if entry.get("unit") != "px" and entry["shape"][:2] in ([20, 16], [5, 20])]
    by = {name: [entry for entry in seen if entry["adapter"] == name] for name in ("rawprobe", "rgbprobe", "rawvolume")}
    spacing = [float(np.float32(ZOOMS[axis])) for axis in (2, 1, 0)]  # the header's float32, in (z, y, x) order
    # the 2D raw adapter: raw slices (y, x) with both HU values, int16 as in the file, the slice's spacing
    assert by["rawprobe"] and all(entry["type"] == "RawImage" for entry in by["rawprobe"])
    assert {entry["dtype"] for entry in by["rawprobe"]} == {"int16"}
    assert all(set(entry["values"]) <= {AIR, TISSUE} for entry in by["rawprobe"])
    assert any(entry["values"] == [AIR, TISSUE] for entry in by["rawprobe"])
    assert all(entry["shape"] == [20, 16] and entry["spacing"] == spacing[1:] for entry in by["rawprobe"])
    assert all(entry["modality"] == "CT" and entry["unit"] == "mm" for entry in by["rawprobe"])
    # the native volume adapter: the whole (z, y, x) volume once, with its spacing and affine
    (whole,) = by["rawvolume"]
    assert whole["type"] == "RawImage" and whole["dtype"] == "int16" and whole["values"] == [AIR, TISSUE]
    assert whole["shape"] == [5, 20, 16] and whole["spacing"] == spacing and whole["affine"]
    # the default adapter: the task's window as 8-bit, byte for byte what the intensity policy gives
    windowed = apply_intensity(volume.transpose(2, 1, 0), IntensitySpec("window", 40.0, 400.0), "case0", channels=False)
    expected = {hashlib.sha256(np.asarray(slice_image(windowed, z)).tobytes()).hexdigest() for z in range(5)}
    assert by["rgbprobe"] and {entry["dtype"] for entry in by["rgbprobe"]} == {"uint8"}
    assert {entry["sha256"] for entry in by["rgbprobe"]} <= expected
    assert all(entry["shape"] == [20, 16, 3] for entry in by["rgbprobe"])

    rows = pl.read_parquet(tmp_path / "out" / "r" / "cases.parquet")
    assert set(rows["status"]) == {"ok"}
    assert dict(rows.group_by("adapter").agg(pl.col("input").unique()).iter_rows()) == {
        "rawprobe": ["raw"],
        "rgbprobe": ["rgb8"],
        "rawvolume": ["raw"],
    }
    # the box prompts are the truth's boxes: each adapter filled them, so every slice scores Dice 1
    assert rows["dice"].to_list() == [1.0] * rows.height

    # the adapter page says which input the adapter got
    site = tmp_path / "web"
    run_cli("report", str(tmp_path / "out" / "r"), "--out", str(site), env=env)
    pages = {path.name: path.read_text() for path in site.glob("adapter-*.html")}
    raw_page = next(text for name, text in pages.items() if "rawprobe" in name)
    rgb_page = next(text for name, text in pages.items() if "rgbprobe" in name)
    assert "<dt>Input</dt><dd>raw intensities" in raw_page
    assert "<dt>Input</dt><dd>8-bit image after the task's intensity policy" in rgb_page


def test_a_raw_adapter_fails_a_case_whose_reader_keeps_no_raw_pixels_and_an_unknown_input_is_refused() -> None:
    from segbench.data.case import Case
    from segbench.data.readers.phantom import phantom
    from segbench.data.taskspec import parse_task
    from segbench.errors import DataError
    from segbench.interface import AdapterMeta, Capabilities, RawImage
    from segbench.running.runner import adapter_input

    spec = parse_task(
        {"task": {"name": "t", "modality": "CT"}, "data": {"reader": "phantom"}, "labels": {"organ": [1]}},
        Path("t.toml"),
    )
    image, masks = phantom(seed=0, index=0)
    case = Case("c", image, masks, (1.0, 1.0), unit="px")
    assert adapter_input("rgb8", spec, case) is image  # the reader's 8-bit image itself, untouched
    with pytest.raises(DataError, match="takes raw intensities, and reader 'phantom' keeps none"):
        adapter_input("raw", spec, case)
    case.raw = image[..., 0].astype(np.int16) - 1000
    given = adapter_input("raw", spec, case)
    assert isinstance(given, RawImage)
    assert given.pixels is case.raw and given.spacing == (1.0, 1.0) and given.unit == "px" and given.modality == "CT"
    with pytest.raises(ValueError, match="input must be one of"):
        AdapterMeta("x", "test", "", Capabilities(), input="hu")  # type: ignore[arg-type]


def test_check_adapter_hands_a_raw_adapter_raw_images(tmp_path: Path) -> None:
    env = {**install_plugin(tmp_path / "site", MODULE, PLUGIN, "segbench-raw-probe"), "RAW_PROBE_LOG": "/dev/null"}
    for name in ("rawprobe", "rawvolume"):
        lines = run_cli("check-adapter", name, env=env).stdout.splitlines()
        assert lines[-1] == f"{name}: passed (0 check(s) failed)"
        assert any("image" in line and "(raw)" in line for line in lines)


IC_TASK = """[task]
name = "ct-ic"
modality = "CT"
dim = 2

[data]
reader = "npz"
dataset = "slices"
images = "*.npz"

[intensity]
policy = "window"
level = 40
width = 400

[labels]
tissue = [1]

[support]
pool_cases = ["s0", "s1", "s2"]

[prompts]
protocols = [{ kind = "support", k = 2 }]
"""


def _ct_slices(folder: Path, count: int = 5) -> dict[str, np.ndarray]:
    """``count`` 2D CT slices (int16 HU, a block of tissue in air, at 0.6 x 0.9 mm) as npz files."""
    folder.mkdir(parents=True)
    slices = {}
    for index in range(count):
        hu = np.full((18, 22), AIR, dtype=np.int16)
        hu[3 + index : 12 + index, 4:15] = TISSUE + 10 * index  # distinct values: which case is which
        np.savez(folder / f"s{index}.npz", imgs=hu, gts=(hu > AIR).astype(np.uint8), spacing=np.array([0.9, 0.6]))
        slices[f"s{index}"] = hu
    return slices


def test_an_in_context_raw_adapter_gets_raw_support_images(tmp_path: Path) -> None:
    """Support sets come as the adapter's queries do: raw pixels (RawImage, the file's dtype and spacing) for
    an adapter declaring ``input="raw"``, the 8-bit window for the others, drawn from the same pool cases."""
    from typing import Any

    from segbench.data.suites import Suite
    from segbench.data.taskspec import load_task
    from segbench.interface import Adapter, AdapterMeta, Capabilities, LoadOptions, Prediction, RawImage
    from segbench.running.execute import execute
    from segbench.running.plan import RunOptions, make_plan

    seen: dict[str, list[Any]] = {"raw-ic": [], "rgb-ic": []}

    class InContext(Adapter):
        def load(self, options: LoadOptions) -> None:
            pass

        def encode(self, image: Any) -> Any:
            return image

        def predict(self, state: Any, prompts: Any = None, support: Any = None) -> Prediction:
            seen[self.meta.name].append((state, support))
            shape = state.shape[:2]
            return Prediction(np.stack([np.asarray(s.masks[0], bool) for s in support]).reshape(-1, *shape))

    class RawInContext(InContext):
        meta = AdapterMeta("raw-ic", "test", "in-context, raw", Capabilities(support_set=True), input="raw")

    class RgbInContext(InContext):
        meta = AdapterMeta("rgb-ic", "test", "in-context, 8-bit", Capabilities(support_set=True))

    slices = _ct_slices(tmp_path / "data" / "slices")
    (tmp_path / "ct-ic.toml").write_text(IC_TASK)
    with registered_adapters(RawInContext, RgbInContext):
        spec = load_task(tmp_path / "ct-ic.toml")
        suite = Suite("s", "", ("raw-ic", "rgb-ic"), ("ct-ic",), None, 0, None, tmp_path / "bench.toml")
        options = RunOptions(device="cpu", data_root=tmp_path / "data", warmup=False, save_masks=0)
        store = execute(make_plan(suite, {"ct-ic": spec}, options), tmp_path / "out", progress=False)
    rows = store.read_cases()
    assert set(rows["status"]) == {"ok"} and set(rows["case_id"]) == {"s3", "s4"}
    assert seen["raw-ic"] and len(seen["raw-ic"]) == len(seen["rgb-ic"])
    for (raw_query, raw_support), (_, rgb_support) in zip(seen["raw-ic"], seen["rgb-ic"], strict=True):
        assert isinstance(raw_query, RawImage) and raw_query.dtype == np.int16
        for raw_set, rgb_set in zip(raw_support, rgb_support, strict=True):
            assert all(isinstance(image, RawImage) for image in raw_set.images)
            assert all(image.dtype == np.uint8 and image.shape == (18, 22, 3) for image in rgb_set.images)
            # the same pool cases, told apart by their tissue value, as the file stores them
            names = [
                next(n for n, hu in slices.items() if np.array_equal(hu, image.pixels)) for image in raw_set.images
            ]
            assert all(name in ("s0", "s1", "s2") for name in names)
            for name, image in zip(names, rgb_set.images, strict=True):
                windowed = apply_intensity(slices[name], IntensitySpec("window", 40.0, 400.0), name, channels=True)
                assert np.array_equal(image, windowed)
            assert all(image.spacing == (0.6, 0.9) and image.modality == "CT" for image in raw_set.images)


@pytest.mark.data
def test_sam_family_adapters_get_the_ct_slices_as_before(data_root: Path) -> None:
    """Issue 17's "the SAM-family adapters' results on the CT slices stay equal to today's": every 2D
    SAM-family adapter (those that ran on the CT slices before raw input existed; SAM-Med3D is a 3D model
    that takes raw voxels, issue 18) still declares 8-bit input, and what an 8-bit adapter is handed for a
    CT slice is the slice's PNG decoded to RGB by PIL, byte for byte; the adapters and their weights being
    unchanged, so are their masks and scores."""
    from PIL import Image

    from segbench import plugins
    from segbench.data.taskspec import discover_tasks
    from segbench.running.runner import adapter_input

    family = {
        name: cls.meta
        for name, cls in plugins.adapters().items()
        if "sam" in cls.meta.family and cls.meta.family != "sam-med3d"
    }
    assert {"litemedsam", "medsam", "sam-vit-b", "sam2.1-hiera-t", "medsam2", "sam-med2d"} <= set(family)
    assert {meta.input for meta in family.values()} == {"rgb8"}
    spec = discover_tasks()["ct-slices"]
    reader = plugins.readers()[spec.reader](spec, data_root)
    for case_id in reader.case_ids()[:2]:
        case = reader.read(case_id)
        image = adapter_input("rgb8", spec, case)
        png = next(path for path in reader.files(case_id) if "/images/" in path.as_posix())
        assert np.array_equal(image, np.asarray(Image.open(png).convert("RGB"))), case_id
