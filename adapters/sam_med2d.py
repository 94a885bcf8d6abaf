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
from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.image_encoder import Block, ImageEncoderViT, window_partition, window_unpartition
from torch import nn

from segbench.adapters.sam_base import Frame, PromptShape, SamArchitecture
from segbench.checkpoints import CheckpointSpec
from segbench.hookspecs import hookimpl
from segbench.interface import AdapterMeta, Capabilities

INPUT_SIZE = 256
PATCH_SIZE = 16
EMBED_DIM = 768
DEPTH = 12
HEADS = 12
GLOBAL_ATTENTION = (2, 5, 8, 11)
WINDOW = 14
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


class AdapterLayer(nn.Module):
    """SAM-Med2D's ``Adapter_Layer``: a squeeze-and-excitation channel gate, then a spatial branch
    (3x3 stride-2 conv, 4x4 stride-2 transposed conv) added back, then LayerNorm; tokens (B, H, W, C)."""

    def __init__(self, dim: int, ratio: float = 0.25):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.LayerNorm(dim)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.channel = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(),
                                     nn.Linear(hidden, dim, bias=False), nn.Sigmoid())
        self.spatial = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1, bias=False), nn.ReLU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=2, padding=1, bias=False), nn.ReLU())
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.permute(0, 3, 1, 2)
        batch, channels = x.shape[:2]
        gated = self.channel(self.avg_pool(x).view(batch, channels)).view(batch, channels, 1, 1) * x
        return self.norm((x + self.spatial(gated)).permute(0, 2, 3, 1))


class AdapterBlock(Block):
    """A ViT block of SAM's encoder with SAM-Med2D's adapter beside its MLP."""

    def __init__(self, dim: int, **kwargs: object):
        super().__init__(dim=dim, **kwargs)  # type: ignore[arg-type]
        self.Adapter = AdapterLayer(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (height, width))
        x = shortcut + x
        normed = self.norm2(x)
        return x + self.mlp(normed) + self.Adapter(normed)


class SamMed2DEncoder(ImageEncoderViT):
    """SAM's ViT-B image encoder at 256x256 whose blocks carry adapters."""

    def __init__(self) -> None:
        block = {"num_heads": HEADS, "mlp_ratio": 4.0, "qkv_bias": True, "use_rel_pos": True,
                 "norm_layer": partial(nn.LayerNorm, eps=1e-6)}
        super().__init__(img_size=INPUT_SIZE, patch_size=PATCH_SIZE, embed_dim=EMBED_DIM, depth=0, out_chans=256,
                         window_size=WINDOW, global_attn_indexes=GLOBAL_ATTENTION, **block)
        grid = INPUT_SIZE // PATCH_SIZE
        self.blocks = nn.ModuleList(
            AdapterBlock(EMBED_DIM, window_size=0 if i in GLOBAL_ATTENTION else WINDOW, input_size=(grid, grid),
                         **block)
            for i in range(DEPTH))


def build_sam_med2d() -> Sam:
    grid = INPUT_SIZE // PATCH_SIZE
    model = Sam(
        image_encoder=SamMed2DEncoder(),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                     input_image_size=(INPUT_SIZE, INPUT_SIZE), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3,
                                 iou_head_hidden_dim=256,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return model.eval()


def samed2d_input(image: np.ndarray) -> tuple[np.ndarray, Frame]:
    """The official test-time preprocessing: (H, W, 3) RGB uint8 → (256, 256, 3) float and its frame."""
    bgr = image[..., ::-1].astype(np.float64)  # the official scripts read images with cv2.imread
    normalised = (bgr - np.array(PIXEL_MEAN)) / np.array(PIXEL_STD)
    height, width = image.shape[:2]
    if height < INPUT_SIZE and width < INPUT_SIZE:  # albumentations PadIfNeeded: centred, zeros
        top, left = (INPUT_SIZE - height) // 2, (INPUT_SIZE - width) // 2
        padded = np.zeros((INPUT_SIZE, INPUT_SIZE, 3))
        padded[top:top + height, left:left + width] = normalised
        return padded, Frame((height, width), (height, width), (top, left))
    squashed = cv2.resize(normalised, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_NEAREST)
    return squashed, Frame((height, width), (INPUT_SIZE, INPUT_SIZE))


class SamMed2D(SamArchitecture):
    skip_objects = True
    meta = AdapterMeta(
        name="sam-med2d", family="sam-med2d",
        description="SAM-Med2D (Cheng et al. 2023): SAM ViT-B at 256 with adapters, fine-tuned on SA-Med2D-20M",
        capabilities=Capabilities(box=True, point=True, mask=True, iterative=True, multimask=True),
        version="1", license="Apache-2.0", input_size=INPUT_SIZE, checkpoint=CHECKPOINT,
        preprocessing="BGR, SAM mean/std on 0-255; both sides < 256: centred zero padding to 256, else squash to "
                      "256x256 (nearest); 3 masks, best predicted IoU; previous logits fed back through a sigmoid; "
                      "bilinear to 256, crop or bilinear to the image, sigmoid > 0.5",
        reference="https://github.com/OpenGVLab/SAM-Med2D (test.py, DataLoader.py)",
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
            upscaled = upscaled[..., top:top + height, left:left + width]
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
