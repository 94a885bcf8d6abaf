"""SAM-Med2D's image encoder and model, built from segment_anything's parts (the layout and parameter
names of the official ``sam-med2d_b.pth``; see :mod:`segbench.adapters.sam_med2d`). A module of its own
because its layers subclass torch modules: the adapter imports it in ``load()`` only."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.image_encoder import Block, ImageEncoderViT, window_partition, window_unpartition
from torch import nn

# SAM ViT-B's encoder layout (the shapes of the official file); the input size and pixel statistics are the
# adapter's preprocessing facts and come from it (build_sam_med2d), so this module imports nothing back
PATCH_SIZE = 16
EMBED_DIM = 768
DEPTH = 12
HEADS = 12
GLOBAL_ATTENTION = (2, 5, 8, 11)
WINDOW = 14


class AdapterLayer(nn.Module):
    """SAM-Med2D's ``Adapter_Layer``: a squeeze-and-excitation channel gate, then a spatial branch
    (3x3 stride-2 conv, 4x4 stride-2 transposed conv) added back, then LayerNorm; tokens (B, H, W, C)."""

    def __init__(self, dim: int, ratio: float = 0.25):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.LayerNorm(dim)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.channel = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.Sigmoid()
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=2, padding=1, bias=False),
            nn.ReLU(),
        )
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
        super().__init__(dim=dim, **kwargs)
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

    def __init__(self, input_size: int) -> None:
        block = {
            "num_heads": HEADS,
            "mlp_ratio": 4.0,
            "qkv_bias": True,
            "use_rel_pos": True,
            "norm_layer": partial(nn.LayerNorm, eps=1e-6),
        }
        super().__init__(
            img_size=input_size,
            patch_size=PATCH_SIZE,
            embed_dim=EMBED_DIM,
            depth=0,
            out_chans=256,
            window_size=WINDOW,
            global_attn_indexes=GLOBAL_ATTENTION,
            **block,
        )
        grid = input_size // PATCH_SIZE
        self.blocks = nn.ModuleList(
            AdapterBlock(
                EMBED_DIM, window_size=0 if i in GLOBAL_ATTENTION else WINDOW, input_size=(grid, grid), **block
            )
            for i in range(DEPTH)
        )


def build_sam_med2d(input_size: int, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]) -> Sam:
    """SAM-Med2D at ``input_size`` (256) with the pixel statistics its preprocessing uses."""
    grid = input_size // PATCH_SIZE
    model = Sam(
        image_encoder=SamMed2DEncoder(input_size),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(grid, grid),
            input_image_size=(input_size, input_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        ),
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
    )
    return model.eval()
