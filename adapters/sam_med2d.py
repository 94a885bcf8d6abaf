"""SAM-Med2D (OpenGVLab/SAM-Med2D): SAM ViT-B at 256x256 with an adapter layer in every encoder block.

The architecture is built here from segment_anything's parts; the parameter names and shapes are
those of the official ``sam-med2d_b.pth``: the image encoder's blocks each carry an ``Adapter`` (a
channel gate, ``channel.0``/``channel.2``, and a strided conv / transposed conv spatial branch,
``spatial.0``/``spatial.2``, then a LayerNorm ``norm``), applied to the normalised input of the MLP
(``x + mlp(norm2(x)) + Adapter(norm2(x))``); the positional embedding is 16x16 and the relative
position tables of the global-attention blocks are 31 long; prompt encoder and mask decoder are SAM's.

The official file is ``{"model": state_dict, "optimizer": <a pickled torch.optim.Adam>}``: it is read
with ``skip_objects``, so the optimizer becomes an inert placeholder and only the model part is used.

Preprocessing follows the official evaluation (``test.py`` with ``DataLoader.TestingDataset``): the
image is read as OpenCV does (BGR), normalised with SAM's mean/std on 0-255, and then either, when both
sides are under 256, zero-padded to 256x256 around the centre, or squashed to 256x256 with nearest-
neighbour interpolation. Prompts are mapped the same way. The decoder always returns three masks and
the one with the highest predicted IoU is kept (``multimask`` on, as in ``test.py``); at refinement
steps the previous low-resolution logits go back through a sigmoid as the mask prompt, as the official
``generate_point`` does. Masks: bilinear to 256, then the padding is cropped or the result is resized
bilinearly to the image, and sigmoid > 0.5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from segbench.adapters.sam_base import Frame, SamArchitecture
from segbench.adapters.sam_decoding import PromptShape
from segbench.hookspecs import hookimpl
from segbench.interface import AdapterMeta, Capabilities, CheckpointSpec, ModelCard
from segbench.lazy import lazy_import

cv2 = lazy_import("cv2")
if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

INPUT_SIZE = 256
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

CHECKPOINT = CheckpointSpec(
    name="sam-med2d",
    filename="sam-med2d_b.pth",
    url="https://drive.google.com/file/d/1ARiB5RkSsWmAB_8mqWnwDF8ZKTtFwsjl/view",
    sha256="",  # neither the authors nor any mirror found publishes a checksum or the exact size
    size=0,
    manual_download=True,
)


def build_sam_med2d() -> torch.nn.Module:
    """The architecture with (seeded) random weights; its layers live in :mod:`segbench.adapters.sam_med2d_net`,
    imported here so that declaring the adapter needs no torch."""
    from segbench.adapters.sam_med2d_net import build_sam_med2d as build

    return build(INPUT_SIZE, PIXEL_MEAN, PIXEL_STD)


def samed2d_input(image: np.ndarray) -> tuple[np.ndarray, Frame]:
    """The official test-time preprocessing: (H, W, 3) RGB uint8 → (256, 256, 3) float and its frame."""
    bgr = image[..., ::-1].astype(np.float64)  # the official scripts read images with cv2.imread
    normalised = (bgr - np.array(PIXEL_MEAN)) / np.array(PIXEL_STD)
    height, width = image.shape[:2]
    if height < INPUT_SIZE and width < INPUT_SIZE:  # albumentations PadIfNeeded: centred, zeros
        top, left = (INPUT_SIZE - height) // 2, (INPUT_SIZE - width) // 2
        padded = np.zeros((INPUT_SIZE, INPUT_SIZE, 3))
        padded[top : top + height, left : left + width] = normalised
        return padded, Frame((height, width), (height, width), (top, left))
    squashed = cv2.resize(normalised, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_NEAREST)
    return squashed, Frame((height, width), (INPUT_SIZE, INPUT_SIZE))


class SamMed2D(SamArchitecture):
    skip_objects = True
    code_modules: ClassVar[tuple[str, ...]] = ("segbench.adapters.sam_med2d_net",)
    meta = AdapterMeta(
        name="sam-med2d",
        family="sam-med2d",
        description="SAM-Med2D (Cheng et al. 2023): SAM ViT-B at 256 with adapters, fine-tuned on SA-Med2D-20M",
        capabilities=Capabilities(box=True, point=True, mask=True, iterative=True, multimask=True),
        version="1",
        license="Apache-2.0",
        input_size=INPUT_SIZE,
        checkpoint=CHECKPOINT,
        preprocessing="BGR, SAM mean/std on 0-255; both sides < 256: centred zero padding to 256, else squash to "
        "256x256 (nearest); 3 masks, best predicted IoU; previous logits fed back through a sigmoid; "
        "bilinear to 256, crop or bilinear to the image, sigmoid > 0.5",
        reference="https://github.com/OpenGVLab/SAM-Med2D (test.py, DataLoader.py)",
        card=ModelCard(
            paper="https://arxiv.org/abs/2308.16184",
            code="https://github.com/OpenGVLab/SAM-Med2D",
            trained_on=("sa-1b", "sa-med2d-20m", "amos22", "totalsegmentator", "kvasir-seg", "cvc-clinicdb"),
            trained_on_source="Cheng et al. 2023 (arXiv:2308.16184): SAM ViT-B fine-tuned on SA-Med2D-20M, whose "
            "source sets Ye et al. 2023 (arXiv:2311.11969) list; AMOS and TotalSegmentator slices are what the "
            "repository ships as its training demo (data_demo/image2label_train.json); Kvasir-SEG and CVC-ClinicDB "
            "confirmed by the authors in OpenGVLab/SAM-Med2D issue 43",
            notes="SA-Med2D-20M's other source sets are not mapped to segbench's ids",
        ),
    )

    def build(self) -> torch.nn.Module:
        return build_sam_med2d()

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        array, frame = samed2d_input(image)
        tensor = torch.as_tensor(array, dtype=torch.float32, device=self.options.device)
        return tensor.permute(2, 0, 1)[None].contiguous(), frame

    def postprocess(self, logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        upscaled = F.interpolate(logits, (INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        if frame.resized != (INPUT_SIZE, INPUT_SIZE):  # padded: crop the image back out
            top, left = frame.offset
            height, width = frame.resized
            upscaled = upscaled[..., top : top + height, left : left + width]
        else:
            upscaled = F.interpolate(upscaled, frame.original, mode="bilinear", align_corners=False)
        return upscaled[:, 0] > 0

    def mask_prompt(self, previous: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(previous)

    def multimask(self, shape: PromptShape) -> bool:
        return True


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(SamMed2D)
