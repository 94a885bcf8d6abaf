"""The SAM2 family: parity with the official image predictor, propagation through a real volume with
random weights, and the official checkpoint layouts of SAM2.1, MedSAM2 and Medical-SAM2."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from segbench import plugins
from segbench.adapters.medsam2 import largest_component
from segbench.adapters.sam2family import LazyFrames, SAM2Family, build_model, package_config
from segbench.interface import LoadOptions, Prompt
from segbench.protocols.prompts import bounding_box, interior_point
from segbench.protocols.slice_cache import SliceEncodings
from segbench.weights.checkpoints import CheckpointError

from .conftest import run_cli
from .volumes import crop_around, read_case

FACTS = json.loads((Path(__file__).parent / "fixtures" / "sam2_checkpoints.json").read_text())


def adapter(name: str, options: LoadOptions) -> SAM2Family:
    instance = plugins.adapter_class(name)()
    instance.load(options)
    return instance


@pytest.fixture(scope="module")
def tiny() -> SAM2Family:
    return adapter("sam2.1-hiera-t", LoadOptions("cpu", None, True))


@pytest.mark.data
def test_2d_masks_equal_the_official_image_predictor(tiny: SAM2Family, data_root: Path) -> None:
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    official_model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    official_model.load_state_dict(tiny.model.state_dict())
    official = SAM2ImagePredictor(official_model)
    case = read_case(data_root, "wbc")
    official.set_image(case.image)
    prompts, expected = [], []
    for mask in case.labels.values():
        box = bounding_box(mask)
        y, x = interior_point(mask)
        click = (np.array([[float(x), float(y)]]), np.array([1]))
        masks, _, logits = official.predict(box=box, multimask_output=False)
        prompts.append(Prompt(box=box))
        expected.append(masks[0])
        masks, scores, _ = official.predict(point_coords=click[0], point_labels=click[1], multimask_output=True)
        prompts.append(Prompt(points=click[0], point_labels=click[1]))
        expected.append(masks[np.argmax(scores)])  # one click: three candidates, the best predicted IoU
        # an iterative step: the box, a click and the previous low-resolution logits
        masks, _, _ = official.predict(
            point_coords=click[0], point_labels=click[1], box=box, mask_input=logits, multimask_output=False
        )
        prompts.append(Prompt(box=box, points=click[0], point_labels=click[1], previous=logits))
        expected.append(masks[0])
    state = tiny.encode(case.image)
    batched = tiny.predict(state, prompts)  # mixed prompt shapes, decoded in batches of equal shape
    for got, want in zip(batched.masks, expected, strict=True):
        assert want.any() and np.array_equal(got, want > 0)
    assert batched.feedback[0].shape == (1, tiny.image_size // 4, tiny.image_size // 4)


def test_volume_state_has_the_keys_of_the_official_init_state(tmp_path: Path) -> None:
    medsam2 = adapter("medsam2", LoadOptions("cpu", None, True))  # 512 input: the cheapest official warm-up
    volume = np.random.default_rng(0).integers(0, 256, (2, 40, 50), dtype=np.uint8)
    for index, grey in enumerate(volume):
        Image.fromarray(grey).convert("RGB").save(tmp_path / f"{index}.jpg")
    official = medsam2.model.init_state(str(tmp_path))
    frames = LazyFrames(volume, medsam2.frame)
    ours = medsam2.model.init_volume_state(frames, SliceEncodings(lambda image: image, volume, "cpu"), False)
    assert set(ours) - {"segbench_features"} == set(official)
    for key in ("num_frames", "video_height", "video_width", "offload_state_to_cpu", "device", "storage_device"):
        assert ours[key] == official[key], key
    assert frames[1].shape == official["images"][1].shape == (3, 512, 512)


@pytest.mark.data
def test_random_weights_propagate_through_a_real_volume_on_cpu(tmp_path: Path, data_root: Path) -> None:
    """A SAM2-family model with --weights random through `segbench run` on a small real crop: every volume
    protocol, rows per (case, label, protocol, step), 3D metrics. MedSAM2 is the family's model at 512
    (SAM2.1 Hiera-T's architecture and the shared propagation code, plus its largest-component step): the
    same path as sam2.1-hiera-t at 1024 for half the CPU time; sam2.1-hiera-t's own propagation is run by
    the adapter contract's volume check."""
    case = crop_around(read_case(data_root, "brats"), "whole_tumour", slices=3, margin=4)
    data = tmp_path / "data" / "crops"
    data.mkdir(parents=True)
    np.savez_compressed(
        data / "brain.npz",
        imgs=case.image,
        gts=case.labels["whole_tumour"].astype(np.uint8),
        spacing=np.array(case.spacing[::-1]),
    )
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "crop.toml").write_text(
        '[task]\nname = "crop"\ndim = 3\n[data]\nreader = "npz"\ndataset = "crops"\nimages = "*.npz"\n'
        '[intensity]\npolicy = "rgb8"\n[labels]\ntumour = "nonzero"\n[prompts]\n'
        'protocols = ["key_slice_box", { kind = "slice_boxes", every = 2 }, { kind = "iterative_3d", clicks = 1 }]\n'
    )
    config = tmp_path / "bench.toml"
    config.write_text('task_dirs = ["tasks"]\n[suites.crop]\nadapters = ["medsam2"]\ntasks = ["crop"]\n')
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--suite",
        "crop",
        "--weights",
        "random",
        "--device",
        "cpu",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        env={"SEGBENCH_CACHE": str(tmp_path / "cache")},
    )
    rows = pl.read_parquet(Path(result.stdout.strip().splitlines()[-1]) / "cases.parquet")
    assert (rows["status"] == "ok").all(), rows["error"].to_list()
    assert sorted(zip(rows["prompt"], rows["step"], strict=True)) == [
        ("iterative3d_middle_box1", 0),
        ("iterative3d_middle_box1", 1),
        ("key_box_middle", 0),
        ("slice_boxes_every2", 0),
    ]
    assert rows.select(pl.col("dice").is_between(0, 1).all() & pl.col("nsd").is_between(0, 1).all()).item()
    assert rows["encode_ms"].is_nan().all() and (rows["decode_ms"] > 0).all() and (rows["total_ms"] > 0).all()
    assert rows["weights"].unique().to_list() == ["random"] and rows["peak_rss_mb"].min() > 0
    clicked = json.loads(rows.filter(pl.col("step") == 1)["prompt_json"][0])[0]
    assert sum(len(p.get("points", [])) for p in clicked["slices"].values()) == 1  # one 3D correction click


def _saved_size(obj: object, path: Path) -> int:
    torch.save(obj, path)  # torch names the archive after the file, as the official files were
    return path.stat().st_size


@pytest.mark.parametrize("name, seed", [("sam2.1-hiera-t", 1), ("medsam2", 2), ("medical-sam2", 3)])
def test_official_layouts_round_trip_through_read_state_dict(name: str, seed: int, tmp_path: Path) -> None:
    writer = adapter(name, LoadOptions("cpu", None, True, seed=seed))
    state = writer.model.state_dict()
    path = tmp_path / writer.meta.checkpoint.filename
    if name == "medical-sam2":  # net.state_dict() after net.to(torch.bfloat16): a plain bf16 OrderedDict
        stored = OrderedDict((k, v.to(torch.bfloat16)) for k, v in state.items())
        size = _saved_size(stored, path)
        assert abs(size / FACTS[name]["size"] - 1) < 1e-3  # the official file's size: SAM 2.0 Hiera-T in bf16
    else:  # {"model": state_dict} in float32
        size = _saved_size({"model": state}, path)
        assert abs(size / FACTS["sam2.1-hiera-t"]["size"] - 1) < 1e-3
    reader = adapter(name, LoadOptions("cpu", path))
    for key, value in reader.model.state_dict().items():
        expected = stored[key].float() if name == "medical-sam2" else state[key]
        assert torch.equal(value, expected), key


def test_medsam2_config_builds_the_layout_of_the_checkpoint_it_was_trained_from() -> None:
    facts = FACTS["medsam2"]
    medsam2 = build_model(plugins.adapter_class("medsam2").config_path())
    base = build_model(package_config("sam2.1/sam2.1_hiera_t.yaml"))  # what MedSAM2 loaded strictly
    assert medsam2.image_size == facts["image_size"] and base.image_size == 1024
    ours = {k: tuple(v.shape) for k, v in medsam2.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in base.state_dict().items()}
    assert (
        sum(k.startswith("memory_attention.layers.") and k.endswith(".linear1.weight") for k in ours)
        == facts["memory_attention_layers"]
    )
    rope = medsam2.memory_attention.layers[0].self_attn
    assert rope.freqs_cis.shape[0] == facts["rope_feat_sizes"][0] * facts["rope_feat_sizes"][1]
    size_mb = sum(v.numel() * 4 for v in medsam2.state_dict().values()) / 1e6
    assert abs(size_mb - facts["listed_size_mb"]) < 0.5  # the Hub lists the float32 files at 156 MB


@pytest.mark.parametrize("name", ["sam2.1-hiera-s", "sam2.1-hiera-b+", "sam2.1-hiera-l"])
def test_larger_sam2_configs_hold_the_tensors_of_their_official_files(name: str) -> None:
    """Tensor bytes of the built architecture against the official file size: the rest is the zip and
    pickle overhead, about 330 bytes a tensor in every official SAM2.1 file."""
    with torch.random.fork_rng():
        model = build_model(plugins.adapter_class(name).config_path())
    state = model.state_dict()
    overhead = FACTS[name]["size"] - sum(v.numel() * v.element_size() for v in state.values())
    assert 250 * len(state) < overhead < 450 * len(state)


def test_keys_that_do_not_match_are_named_not_dropped(tmp_path: Path) -> None:
    writer = adapter("medical-sam2", LoadOptions("cpu", None, True))
    state = OrderedDict((k, v.to(torch.bfloat16)) for k, v in writer.model.state_dict().items())
    del state["sam_mask_decoder.iou_token.weight"]
    state["memory_bank.feature"] = torch.zeros(4)
    torch.save(state, tmp_path / "MedSAM2_pretrain.pth")
    with pytest.raises(CheckpointError) as error:
        adapter("medical-sam2", LoadOptions("cpu", tmp_path / "MedSAM2_pretrain.pth"))
    assert "sam_mask_decoder.iou_token.weight" in str(error.value) and "memory_bank.feature" in str(error.value)


@pytest.mark.data
def test_medsam2_keeps_the_largest_3d_component(data_root: Path) -> None:
    atrium = crop_around(read_case(data_root, "la-heart"), "left_atrium", slices=30, margin=10).labels["left_atrium"]
    noisy = atrium.copy()
    noisy[0, :3, :3] = True  # a speck in a corner, not connected to the atrium
    kept = largest_component(noisy)
    assert np.array_equal(kept, largest_component(atrium)) and not kept[0, :3, :3].any()
    assert largest_component(np.zeros_like(atrium)).sum() == 0
