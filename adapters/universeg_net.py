"""UniverSeg's network (Butoi, Gonzalez Ortiz et al., ICCV 2023), written for segbench.

The architecture follows the published model (JJGO/UniverSeg, ``universeg/model.py``): a U-Net whose
every block is a *CrossBlock*. A CrossBlock first applies a *CrossConv* to every (query, support
example) pair: one 3x3 convolution over the channel concatenation ``[query, support_i]``, no
non-linearity. The query's new features are the mean of these interactions over the support set; the
support's new features are the interactions themselves. Then one 3x3 convolution + LeakyReLU for the
query and another for the support examples. Encoder: blocks of 64 features at 128, 64, 32 and 16
pixels (2x2 max pooling between them); decoder: three blocks at 32, 64 and 128 pixels after bilinear
upsampling (``align_corners=True``, as ``nn.UpsamplingBilinear2d``) and concatenation with the skip;
a 1x1 convolution gives one logit map. The query enters with 1 channel, each support example with 2
(image and label), all at 128x128 in [0, 1].

The module and parameter names (``enc_blocks.0.cross.cross_conv.weight``,
``enc_blocks.0.target.vmapped.conv.weight``, ``out_conv.conv.bias``, ...) are those of the official
``universeg_v1_nf64_ss64_STA.pt``, so the released state dict loads strictly.

One implementation choice differs from the reference code and not in its result: the CrossConv
weight is split into its query and support halves, so the query half is convolved once per query
instead of once per (query, support) pair. ``conv([q, s]) = conv_q(q) + conv_s(s)``; the pairwise
tensor is never materialised, which saves memory and about a third of the network's compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_FEATURES = (64, 64, 64, 64)
QUERY_CHANNELS = 1
SUPPORT_CHANNELS = 2  # image + label
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default, as in the published model


def _init_conv(conv: nn.Conv2d, nonlinearity: Literal["leaky_relu", "linear"]) -> None:
    """The published initialisation: Kaiming normal with the gain of the following non-linearity, zero bias."""
    nn.init.kaiming_normal_(conv.weight, nonlinearity=nonlinearity)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _per_element(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a (N, C, H, W) module (or function) to a (B, S, C, H, W) tensor, element by element along S."""
    batch, group = x.shape[:2]
    out = module(x.reshape(batch * group, *x.shape[2:]))
    return out.reshape(batch, group, *out.shape[1:])


class ConvLayer(nn.Module):
    """Convolution (same padding) + optional LeakyReLU; the parameters live under ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, activate: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.activate = activate
        _init_conv(self.conv, "leaky_relu" if activate else "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.leaky_relu(x, LEAKY_SLOPE) if self.activate else x


class PerElement(nn.Module):
    """Wraps a layer so it runs on every element of a group (the reference's ``Vmap``: key ``vmapped``)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.vmapped = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_element(self.vmapped, x)


class CrossConv(nn.Module):
    """One 3x3 convolution over ``[query, support_i]`` for every support example i (no activation).

    Input: query (B, 1, Cq, H, W), support (B, S, Cs, H, W); output (B, S, out, H, W). The weight has
    the reference's shape (out, Cq + Cs, 3, 3), query channels first."""

    def __init__(self, query_channels: int, support_channels: int, out_channels: int):
        super().__init__()
        self.query_channels = query_channels
        self.cross_conv = nn.Conv2d(query_channels + support_channels, out_channels, 3, padding=1)
        _init_conv(self.cross_conv, "linear")

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        weight, bias = self.cross_conv.weight, self.cross_conv.bias
        split = self.query_channels
        query_part = _per_element(lambda x: F.conv2d(x, weight[:, :split], bias, padding=1), query)
        support_part = _per_element(lambda x: F.conv2d(x, weight[:, split:], None, padding=1), support)
        return support_part + query_part  # (B, S, out, H, W) + (B, 1, out, H, W)


class CrossBlock(nn.Module):
    """CrossConv, mean over the support set for the query, then a conv + LeakyReLU on each side."""

    def __init__(self, query_channels: int, support_channels: int, features: int):
        super().__init__()
        self.cross = CrossConv(query_channels, support_channels, features)
        self.target = PerElement(ConvLayer(features, features))
        self.support = PerElement(ConvLayer(features, features))

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        interaction = self.cross(query, support)
        query = interaction.mean(dim=1, keepdim=True)
        return self.target(query), self.support(interaction)


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return _per_element(lambda t: F.max_pool2d(t, 2, 2), x)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return _per_element(lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True), x)


class UniverSegNet(nn.Module):
    """``forward(query (B, 1, H, W), support_images (B, S, 1, H, W), support_labels (B, S, 1, H, W))``
    → logits (B, 1, H, W). H and W must be divisible by 2 ** (len(features) - 1)."""

    def __init__(self, features: tuple[int, ...] = ENCODER_FEATURES):
        super().__init__()
        self.enc_blocks = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        query_ch, support_ch = QUERY_CHANNELS, SUPPORT_CHANNELS
        for width in features:
            self.enc_blocks.append(CrossBlock(query_ch, support_ch, width))
            query_ch = support_ch = width
        skip_widths = features[-2::-1]  # the outputs of every encoder block but the last, deepest first
        decoder_widths = features[-2::-1]  # the decoder mirrors the encoder
        for width, skip in zip(decoder_widths, skip_widths, strict=True):
            self.dec_blocks.append(CrossBlock(query_ch + skip, support_ch + skip, width))
            query_ch = support_ch = width
        self.out_conv = ConvLayer(query_ch, 1, kernel_size=1, activate=False)

    def forward(self, query: torch.Tensor, support_images: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        target = query[:, None]
        support = torch.cat([support_images, support_labels], dim=2)
        skips = []
        for index, block in enumerate(self.enc_blocks):
            target, support = block(target, support)
            if index < len(self.enc_blocks) - 1:
                skips.append((target, support))
                target, support = _downsample(target), _downsample(support)
        for block in self.dec_blocks:
            target_skip, support_skip = skips.pop()
            target = torch.cat([_upsample(target), target_skip], dim=2)
            support = torch.cat([_upsample(support), support_skip], dim=2)
            target, support = block(target, support)
        return self.out_conv(target[:, 0])
