"""SAM family: each model's preprocessing against an independent statement of its official recipe,
prompt mapping, mask postprocessing and batched decoding (real architectures, random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.transform import resize

from segbench.adapters.sam import MedicoSAM, MedSAM
from segbench.adapters.sam_base import Frame, SamArchitecture
from segbench.adapters.sam_med2d import SamMed2D
from segbench.interface import LoadOptions, Prompt

SAM_MEAN = np.array([123.675, 116.28, 103.53])
SAM_STD = np.array([58.395, 57.12, 57.375])
SHAPES = [(120, 90), (200, 255), (288, 384), (300, 180), (1072, 1920)]


def random_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


def loaded(cls: type[SamArchitecture]) -> SamArchitecture:
    adapter = cls()
    adapter.load(LoadOptions("cpu", None, random_weights=True))
    return adapter


@pytest.fixture(scope="module")
def medsam() -> SamArchitecture:
    return loaded(MedSAM)


@pytest.fixture(scope="module")
def medicosam() -> SamArchitecture:
    return loaded(MedicoSAM)


@pytest.fixture(scope="module")
def samed2d() -> SamArchitecture:
    return loaded(SamMed2D)


def model_input(adapter: SamArchitecture, image: np.ndarray) -> tuple[np.ndarray, Frame]:
    with torch.inference_mode():
        tensor, frame = adapter.preprocess(image)
    return tensor[0].permute(1, 2, 0).numpy(), frame


# --- MedSAM: MedSAM_Inference.py -------------------------------------------------------------------


def medsam_recipe(image: np.ndarray) -> np.ndarray:
    """MedSAM_Inference.py, restated: squash to 1024x1024 with skimage's cubic spline (anti-aliased,
    range kept), cast to uint8, min-max over the whole image; no mean/std, no padding."""
    img_1024 = resize(image, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    return (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)


@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_medsam_input_is_the_official_recipe(medsam: SamArchitecture, shape: tuple[int, int]) -> None:
    image = random_image(shape)
    array, frame = model_input(medsam, image)
    assert array.shape == (1024, 1024, 3)  # squashed, not padded: content everywhere
    np.testing.assert_allclose(array, medsam_recipe(image), atol=1e-6)
    assert array.min() == 0 and array.max() == 1  # [0, 1], no SAM mean/std
    height, width = shape
    box = np.array([10.0, 20, width - 11, height - 31])
    expected = box / np.array([width, height, width, height]) * 1024
    np.testing.assert_allclose(frame.to_input(box.reshape(2, 2)).reshape(4), expected, rtol=1e-12)


def test_medsam_masks_are_the_sigmoid_resized_bilinearly_then_thresholded(medsam: SamArchitecture) -> None:
    logits = torch.randn(2, 1, 256, 256) * 4
    frame = Frame((300, 500), (1024, 1024))
    expected = (
        torch.nn.functional.interpolate(torch.sigmoid(logits), (300, 500), mode="bilinear", align_corners=False)[:, 0]
        > 0.5
    )
    assert torch.equal(medsam.postprocess(logits, frame), expected)


def test_medsam_refuses_points(medsam: SamArchitecture) -> None:
    state = type("State", (), {"frame": Frame((10, 10), (1024, 1024))})()
    with pytest.raises(ValueError, match="box prompts only"):
        medsam.predict(state, [Prompt(points=np.array([[1.0, 2.0]]), point_labels=np.array([1]))])


# --- MedicoSAM: medico-sam's percentile normalisation, then micro_sam's SamPredictor ----------------


def medicosam_recipe(image: np.ndarray) -> np.ndarray:
    """torch_em's normalize_percentile (1/99, float32, eps 1e-7) x 255 as medico-sam's raw transform,
    clipped to 0-255; micro_sam's _to_image (min-max, x 255, uint8); SamPredictor: ResizeLongestSide
    with PIL (bilinear) to 1024, SAM mean/std, zero padding bottom/right."""
    raw = image.astype("float32")
    v_lower = np.percentile(raw, 1.0, keepdims=True)
    v_upper = np.percentile(raw, 99.0, keepdims=True) - v_lower
    raw -= v_lower
    raw /= v_upper + 1e-7
    raw = np.clip(raw * 255, 0, 255)
    raw = raw.astype("float32") - raw.min()
    eight_bit = (raw / raw.max() * 255).astype("uint8")
    height, width = image.shape[:2]
    scale = 1024 / max(height, width)
    size = (int(width * scale + 0.5), int(height * scale + 0.5))
    resized = np.asarray(Image.fromarray(eight_bit).resize(size, Image.Resampling.BILINEAR))
    out = np.zeros((1024, 1024, 3))
    out[: size[1], : size[0]] = (resized - SAM_MEAN) / SAM_STD
    return out


@pytest.mark.parametrize("shape", SHAPES[2:4])
def test_medicosam_input_is_percentile_then_sam(medicosam: SamArchitecture, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(90, 40, (*shape, 3)), 0, 255).astype(np.uint8)  # tails beyond p1/p99
    array, frame = model_input(medicosam, image)
    np.testing.assert_allclose(array, medicosam_recipe(image), atol=1e-5)
    assert frame.resized == (round(shape[0] * 1024 / max(shape)), round(shape[1] * 1024 / max(shape)))


# --- SAM-Med2D: test.py + DataLoader.TestingDataset ------------------------------------------------


def samed2d_recipe(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """cv2.imread order (BGR), (image - mean) / std; both sides < 256: albumentations PadIfNeeded (centred,
    zeros); else Resize(256, 256, INTER_NEAREST), restated as OpenCV's nearest index floor(i * src/dst)."""
    normalised = (image[..., ::-1] - SAM_MEAN) / SAM_STD
    height, width = image.shape[:2]
    if height < 256 and width < 256:
        top, left = int((256 - height) / 2.0), int((256 - width) / 2.0)
        return np.pad(normalised, ((top, 256 - height - top), (left, 256 - width - left), (0, 0))), (top, left)
    rows = np.minimum(np.floor(np.arange(256) * (height / 256)).astype(int), height - 1)
    cols = np.minimum(np.floor(np.arange(256) * (width / 256)).astype(int), width - 1)
    return normalised[rows][:, cols], (0, 0)


@pytest.mark.parametrize("shape", SHAPES)
def test_samed2d_input_is_the_official_recipe(samed2d: SamArchitecture, shape: tuple[int, int]) -> None:
    image = random_image(shape, seed=2)
    array, frame = model_input(samed2d, image)
    expected, offset = samed2d_recipe(image)
    assert array.shape == (256, 256, 3)
    np.testing.assert_allclose(array, expected, atol=1e-5)
    assert frame.offset == offset
    height, width = shape
    box = np.array([[5.0, 7.0], [width - 3.0, height - 2.0]])
    if offset != (0, 0):  # padded: prompts move with the image
        np.testing.assert_allclose(frame.to_input(box), box + [offset[1], offset[0]])
    else:
        np.testing.assert_allclose(frame.to_input(box), box * [256 / width, 256 / height])


def test_samed2d_masks_crop_the_padding_or_resize(samed2d: SamArchitecture) -> None:
    logits = torch.full((1, 1, 64, 64), -5.0)
    logits[..., 20:40, 24:32] = 5.0  # a block in the low-resolution frame, 4x upscaled: rows 80-160
    padded = samed2d.postprocess(logits, Frame((100, 120), (100, 120), (78, 68)))
    assert padded.shape == (1, 100, 120)
    rows, cols = np.nonzero(padded[0].numpy())
    assert abs(rows.min() - (80 - 78)) <= 2 and abs(cols.min() - (96 - 68)) <= 2
    squashed = samed2d.postprocess(logits, Frame((512, 1024), (256, 256)))
    rows, cols = np.nonzero(squashed[0].numpy())
    assert squashed.shape == (1, 512, 1024) and abs(rows.min() - 160) <= 3 and abs(cols.min() - 384) <= 5


# --- batching and feedback (shared by the family; SAM-Med2D's 256 encoder is the cheap one) --------


@pytest.fixture(scope="module")
def samed2d_state(samed2d: SamArchitecture):
    return samed2d.encode(random_image((300, 400), seed=3))


MIXED = [
    Prompt(box=np.array([40.0, 30, 200, 180])),
    Prompt(points=np.array([[120.0, 100]]), point_labels=np.array([1])),
    Prompt(box=np.array([90.0, 100, 150, 160])),
    Prompt(points=np.array([[60.0, 60], [250, 200]]), point_labels=np.array([1, 0])),
]


def test_mixed_prompts_in_one_call_equal_each_prompt_alone(samed2d: SamArchitecture, samed2d_state) -> None:
    batch = samed2d.predict(samed2d_state, MIXED)
    assert batch.masks.shape == (4, 300, 400) and batch.masks.dtype == bool and len(batch.feedback) == 4
    for index, prompt in enumerate(MIXED):
        alone = samed2d.predict(samed2d_state, [prompt])
        assert (batch.masks[index] != alone.masks[0]).mean() < 1e-4
        assert batch.scores[index] == pytest.approx(alone.scores[0], abs=1e-4)


def test_feedback_is_the_chosen_low_res_logits_and_changes_the_next_step(
    samed2d: SamArchitecture, samed2d_state
) -> None:
    first = samed2d.predict(samed2d_state, MIXED[:1])
    assert first.feedback[0].shape == (1, 64, 64)
    assert np.array_equal(samed2d.postprocess(first.feedback[0][None], samed2d_state.frame).numpy(), first.masks)
    click = dict(points=np.array([[150.0, 120]]), point_labels=np.array([0]))
    with_mask = samed2d.predict(samed2d_state, [Prompt(box=MIXED[0].box, previous=first.feedback[0], **click)])
    without = samed2d.predict(samed2d_state, [Prompt(box=MIXED[0].box, **click)])
    assert not np.array_equal(with_mask.scores, without.scores)  # the mask prompt reaches the decoder


def test_a_prompt_needs_a_box_or_points(samed2d: SamArchitecture, samed2d_state) -> None:
    with pytest.raises(ValueError, match="needs a box or points"):
        samed2d.predict(samed2d_state, [Prompt(points=np.zeros((0, 2)), point_labels=np.zeros(0))])
