"""The model behind ``tinyseg``: a two-layer convolutional net, kept out of the adapter module so that
listing adapters needs no torch (the adapter names it in ``code_modules``, so its source still counts in
the adapter's fingerprint).

The encoder (3x3 convolution) runs once per image; the decoder (1x1 convolution) turns the encoder's
features, the prompt box as a mask and the mean grey level inside the box into one logit per pixel.
The published weights (:func:`reference_state_dict`, written by ``make_weights.py``) are set by hand,
not trained: the logit is positive inside the box where the smoothed image is brighter than the box's
mean, a classical rule written as a network so that the example has real weights to ship.
"""

from __future__ import annotations

import torch
from torch import nn


class TinySegNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        self.decoder = nn.Conv2d(4, 1, kernel_size=1)

    def encode(self, grey: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) grey levels in [0, 1] -> (B, 2, H, W) features."""
        return torch.relu(self.encoder(grey))

    def decode(self, features: torch.Tensor, boxes: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Features (1, 2, H, W) of one image, N box masks (N, 1, H, W) and N levels (N,) -> logits (N, H, W)."""
        count = boxes.shape[0]
        planes = levels.view(count, 1, 1, 1).expand_as(boxes)
        inputs = torch.cat([features.expand(count, -1, -1, -1), boxes, planes], dim=1)
        return self.decoder(inputs)[:, 0]


def reference_state_dict() -> dict[str, torch.Tensor]:
    """The weights of checkpoint ``tinyseg-v1``: channel 0 of the encoder is a 3x3 mean, channel 1 is
    unused; the decoder gives ``10 * (smoothed - level) + 20 * (box - 1)``."""
    encoder_weight = torch.zeros(2, 1, 3, 3)
    encoder_weight[0] = 1 / 9
    return {
        "encoder.weight": encoder_weight,
        "encoder.bias": torch.zeros(2),
        "decoder.weight": torch.tensor([10.0, 0.0, 20.0, -10.0]).view(1, 4, 1, 1),
        "decoder.bias": torch.tensor([-20.0]),
    }
