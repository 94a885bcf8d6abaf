"""The nninteractive adapter against the official package (issue 18.1): the restated architecture against the
published checkpoint's size, the checkpoint layout round trip (weights_only, zero missing and unexpected keys),
the adapter's masks equal to the official inference session's driven directly (random weights, a real BraTS
crop, a box and include/exclude clicks over two iterative steps; a lasso and include/exclude scribbles), and the
adapter contract.

The published network (ResEnc L, 192-cubed patches) needs minutes a volume on two CPU cores, so everything that
runs it here uses the same architecture class with a small configuration (:data:`SMALL`: a 64-cubed patch, about
the least that the session's refinement planner, which leaves a 24-voxel margin a side, covers; 4 to 16
features; the contract's wider :data:`WIDE` without AutoZoom).
The published configuration itself is checked without a forward pass (built on the meta device).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segbench.interface import LoadOptions, Prompt, RawImage, VolumePrompt
from segbench.running.adapter_check import check_adapter

from .volumes import read_case

pytest.importorskip("nnInteractive.inference.inference_session", reason="the nninteractive extra is not installed")

import torch  # noqa: E402  (after the skip: the package brings its torch pins)

from segbench.adapters.nninteractive import (  # noqa: E402
    CHECKPOINT,
    CONFIGURATION,
    DATASET_JSON,
    INTERACTION_CHANNELS,
    PUBLISHED,
    TRAINER,
    Architecture,
    NNInteractive,
    build_network,
    plans,
    write_model_folder,
)
from segbench.weights.checkpoints import CheckpointError  # noqa: E402

SMALL = Architecture(patch_size=(64, 64, 64), features_per_stage=(4, 8, 16, 16), blocks_per_stage=(1, 1, 1, 1))
# for the contract's 150 x 200 phantom: a patch wide enough that the refinement after a box needs few passes
WIDE = Architecture(patch_size=(64, 128, 128), features_per_stage=(2, 4, 8, 8), blocks_per_stage=(1, 1, 1, 1))


class SmallNNInteractive(NNInteractive):
    architecture = SMALL


class WideNoZoom(NNInteractive):
    architecture = WIDE
    autozoom = False  # each AutoZoom step resamples a crop of 4x the patch (256 x 512 x 512 here): minutes on a CPU


def test_the_published_architecture_has_the_published_checkpoint_size() -> None:
    """The restated plans (ResEnc L, 8 input channels, 2 outputs) hold, in fp32, all but the release's
    metadata: the bytes of the unique parameters and buffers are below the published file's size and within
    0.5% of it (the file adds plans, log and grad scaler: about 1.7 MB)."""
    with torch.device("meta"):
        network = build_network(plans(PUBLISHED), seed=0)
    tensors = {id(t): t for t in [*network.parameters(), *network.buffers()]}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    assert 0.995 * CHECKPOINT.size < size < CHECKPOINT.size
    first = next(m for m in network.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.in_channels == 1 + INTERACTION_CHANNELS


def test_interaction_channels_are_the_sessions_v1_layout() -> None:
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    session = nnInteractiveInferenceSession(device=torch.device("cpu"), torch_n_threads=torch.get_num_threads())
    assert session._legacy_default_capability()["interaction_channels"] + 1 == INTERACTION_CHANNELS


def _nnunet_checkpoint(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    """A model folder whose checkpoint holds what nnU-Net's trainer saves (``save_checkpoint``), numpy floats
    in its log included; the release deletes ``optimizer_state`` and ``init_args["dataset_json"]``."""
    path = write_model_folder(folder, plans(SMALL), state)
    torch.save(
        {
            "network_weights": state,
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
            "grad_scaler_state": None,
            "logging": {"train_losses": [np.float64(-0.5), np.float32(-0.6)], "lrs": [0.01, 0.0099]},
            "_best_ema": np.float64(0.7),
            "current_epoch": 2,
            "init_args": {
                "plans": plans(SMALL),
                "configuration": CONFIGURATION,
                "fold": 0,
                "dataset_json": DATASET_JSON,
                "device": torch.device("cpu"),
            },
            "trainer_name": TRAINER,
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        path,
    )
    return path


def test_checkpoint_layout_round_trip(tmp_path: Path) -> None:
    state = build_network(plans(SMALL), seed=3).state_dict()
    path = _nnunet_checkpoint(tmp_path / "nnInteractive_v1.0", state)
    adapter = SmallNNInteractive()
    adapter.load(LoadOptions(checkpoint=path))
    loaded = adapter.session.network.state_dict()
    assert sorted(set(state) - set(loaded)) == [] and sorted(set(loaded) - set(state)) == []
    assert all(torch.equal(state[key], loaded[key]) for key in state)


class _Pickled:  # any class: weights_only refuses to import it
    pass


def test_a_checkpoint_that_pickles_an_object_is_refused(tmp_path: Path) -> None:
    path = write_model_folder(tmp_path / "nnInteractive_v1.0", plans(SMALL), {})
    torch.save({"network_weights": {}, "trainer_name": TRAINER, "init_args": {}, "x": _Pickled()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        SmallNNInteractive().load(LoadOptions(checkpoint=path))


def _brats_crop(data_root: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """12 slices around the middle of case 0's whole tumour, cropped to its box plus 4 voxels: raw FLAIR."""
    case = read_case(data_root, "brats")
    assert case.raw is not None
    mask = case.labels["whole_tumour"]
    zs, ys, xs = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    middle = (zs[0] + zs[-1]) // 2
    window = (
        slice(middle - 6, middle + 6),
        slice(max(0, ys[0] - 4), ys[-1] + 5),
        slice(max(0, xs[0] - 4), xs[-1] + 5),
    )
    return np.ascontiguousarray(case.raw[window]), mask[window], case.spacing


def _adapter_on(folder: Path, seed: int, image: np.ndarray, spacing: tuple[float, ...]) -> tuple[NNInteractive, Any]:
    """The small adapter loaded from a model folder of weights drawn with ``seed`` (written to ``folder``,
    for the official session to load too), and its state for ``image``."""
    path = write_model_folder(folder, plans(SMALL), build_network(plans(SMALL), seed=seed).state_dict())
    adapter = SmallNNInteractive()
    adapter.load(LoadOptions(checkpoint=path, seed=0))
    return adapter, adapter.encode_volume(RawImage(image, spacing))


def _official_session(folder: Path, image: np.ndarray) -> Any:
    """The official session on ``folder``'s model and ``image``, set up as the README and the CVPR 2025
    baseline (predict.py) set it up."""
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    session = nnInteractiveInferenceSession(
        device=torch.device("cpu"), use_torch_compile=False, torch_n_threads=torch.get_num_threads(),
        do_autozoom=True, interactions_storage="tensor", enable_undo=False,
    )  # fmt: skip
    session.initialize_from_trained_model_folder(str(folder))
    session.set_image(image[None])
    return session


def test_masks_equal_the_official_sessions(data_root: Path, tmp_path: Path) -> None:
    image, truth, spacing = _brats_crop(data_root)
    key = image.shape[0] // 2
    rows, cols = np.nonzero(truth[key])
    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=float)  # inclusive x0, y0, x1, y1
    inside = np.argwhere(truth[key])[len(rows) // 2]  # (y, x)
    other = key + 2
    outside = np.argwhere(~truth[other])[0]  # a background voxel on another slice, for an exclude click

    folder = tmp_path / "nnInteractive_v1.0"
    adapter, state = _adapter_on(folder, 0, image, spacing)
    first = VolumePrompt(
        {key: Prompt(box=box, points=np.array([inside[::-1]], float), point_labels=np.array([1]))}, key, (0, 11)
    )
    step1 = adapter.predict_volume(state, [first])
    second = VolumePrompt(
        {**first.slices, other: Prompt(points=np.array([outside[::-1]], float), point_labels=np.array([0]))},
        key,
        (0, 11),
        previous=step1.feedback[0],
    )
    step2 = adapter.predict_volume(state, [second])

    # the official session, driven as the README and the CVPR 2025 baseline (predict.py) drive it
    session = _official_session(folder, image)
    x0, y0, x1, y1 = box
    bbox = [[key, key + 1], [y0, y1 + 1], [x0, x1 + 1]]  # half-open, a 2D box on slice `key`
    expected = []
    for step in (1, 2):
        target = torch.zeros(image.shape, dtype=torch.uint8)
        session.set_target_buffer(target)
        np.random.seed(0)  # the refinement planner's fallback draws from numpy's global RNG
        if step == 1:
            session.reset_interactions()
        else:
            session.add_initial_seg_interaction(expected[0].astype(np.uint8), run_prediction=False)
        session.add_bbox_interaction(bbox, include_interaction=True, run_prediction=False)
        session.add_point_interaction((key, *inside), include_interaction=True, run_prediction=step == 1)
        if step == 2:
            session.add_point_interaction((other, *outside), include_interaction=False, run_prediction=True)
        expected.append(target.numpy() > 0)

    for got, want in zip((step1.masks[0], step2.masks[0]), expected, strict=True):
        assert 0 < want.sum() < want.size  # a real mask, not all or nothing
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(expected[0], expected[1])  # the exclude click changed the mask


def test_drawn_prompts_equal_the_official_sessions_whole_volume_drawings(data_root: Path, tmp_path: Path) -> None:
    """A lasso and a scribble drawn by segbench's own rule (:mod:`segbench.protocols.drawn`) on the key slice,
    and an exclude scribble on another: the adapter hands the session each drawing's crop with its
    ``interaction_bbox``; the official session here is given the README's whole-volume masks instead."""
    from segbench.protocols.drawn import lasso, scribble

    image, truth, spacing = _brats_crop(data_root)
    key, other = image.shape[0] // 2, image.shape[0] // 2 - 3
    outline, stroke = lasso(truth[key]), scribble(truth[key], 1)
    away = np.zeros(truth[other].shape, bool)
    rows, cols = np.nonzero(~truth[other])
    away[rows[0], cols[0] : cols[0] + 6] = True  # a short stroke in the background of another slice
    away &= ~truth[other]

    folder = tmp_path / "nnInteractive_v1.0"
    adapter, state = _adapter_on(folder, 1, image, spacing)
    prompt = VolumePrompt(
        {
            key: Prompt(lassos=outline[None], scribbles=stroke[None], scribble_labels=np.array([1])),
            other: Prompt(scribbles=away[None], scribble_labels=np.array([0])),
        },
        key,
        (0, image.shape[0] - 1),
    )
    got = adapter.predict_volume(state, [prompt]).masks[0]

    session = _official_session(folder, image)
    target = torch.zeros(image.shape, dtype=torch.uint8)
    session.set_target_buffer(target)
    np.random.seed(0)
    session.reset_interactions()

    def whole(z: int, mask: np.ndarray) -> np.ndarray:
        volume = np.zeros(image.shape, np.uint8)
        volume[z] = mask
        return volume

    session.add_lasso_interaction(whole(key, outline), include_interaction=True, run_prediction=False)
    session.add_scribble_interaction(whole(key, stroke), include_interaction=True, run_prediction=False)
    session.add_scribble_interaction(whole(other, away), include_interaction=False, run_prediction=True)
    want = target.numpy() > 0
    assert 0 < want.sum() < want.size
    np.testing.assert_array_equal(got, want)


def test_the_adapter_keeps_the_contract() -> None:
    """The full contract (box, points, two iterative steps, a volume, 2D images as one-slice volumes) on the
    small configuration; tests/test_adapter_contract.py runs the published one without a forward pass."""
    results = check_adapter(WideNoZoom)
    failed = [result.line() for result in results if result.status == "fail"]
    assert not failed, "\n".join(failed)
    ran = {result.name for result in results if result.status == "pass"}
    assert {"load", "encode", "box", "point", "drawn", "iterative", "volume"} <= ran


def test_autozoom_is_off_with_random_weights_only(tmp_path: Path) -> None:
    """Random weights change the prediction at the patch border by noise, so AutoZoom would time zoom passes
    a trained model would not take: off for ``--weights random``, the session's default with a checkpoint."""
    random = SmallNNInteractive()
    random.load(LoadOptions(random_weights=True))
    assert random.session.do_autozoom is False
    path = write_model_folder(
        tmp_path / "nnInteractive_v1.0", plans(SMALL), build_network(plans(SMALL), 0).state_dict()
    )
    trained = SmallNNInteractive()
    trained.load(LoadOptions(checkpoint=path))
    assert trained.session.do_autozoom is True


def test_the_card_counts_one_pass_of_the_sessions_network_on_one_patch() -> None:
    """nnInteractive's cost per target is a data-dependent number of network passes, so its card's figure is
    one pass (``Adapter.network_pass``): the session's own network, on the image and interaction channels of
    one patch of the configuration, counted independently here on a network built from the same plans."""
    from torch.utils.flop_counter import FlopCounterMode

    from segbench.running.model_cards import measure

    figures = measure(SmallNNInteractive)
    network = build_network(plans(SMALL), seed=0)
    assert figures.sample.kind == "patch" and figures.sample.shape == SMALL.patch_size
    assert figures.params == sum(p.numel() for p in network.parameters())
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros((1, 1 + INTERACTION_CHANNELS, *SMALL.patch_size)))
    assert figures.encode_flops == 0 and figures.predict_flops == counter.get_total_flops() > 0
