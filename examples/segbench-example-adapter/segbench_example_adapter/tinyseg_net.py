"""The model behind ``tinyseg``: a two-layer convolutional net, kept out of the adapter module so that
listing adapters needs no torch (the adapter names it in ``code_modules``, so its source still counts in
the adapter's fingerprint).

The encoder (3x3 convolution) runs once per image; the decoder (1x1 convolution) turns the encoder's
features, the prompt box as a mask and the mean grey level inside the box into one logit per pixel.
The published weights (:func:`reference_state_dict`, written by ``make_weights.py``) are set by hand,
not trained: the logit is positive inside the box where the smoothed image is brighter than the box's
mean, a classical rule written as a network so that the example has real weights to ship.

The checkpoint is a JSON text (:func:`weights_text`, :func:`read_weights`), not a ``torch.save`` file:
``torch.save`` writes a fresh serialization id into every file, so the same tensors never give the same
bytes twice (nor across torch versions), and a pinned sha256 could only pin a binary committed once.
Written as text, the 14 numbers give the same bytes on every machine, so ``make_weights.py`` rebuilds
exactly the pinned file and a reviewer reads the weights in the diff. Reading it parses JSON and nothing
else: no pickle, nothing from the file is imported or run (what ``torch.load(weights_only=True)`` ensures
for a ``.pt``). A real model's weights are far too large for text: publish the file once, pin its sha256
and read it with segbench's ``read_state_dict`` (see docs/adapters.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.weights.checkpoints import CheckpointError

FORMAT = "segbench-example-adapter/tinyseg-weights"
FORMAT_VERSION = 1


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


def weights_text(state: dict[str, torch.Tensor]) -> str:
    """``state`` as the checkpoint's JSON text, one line per tensor in key order. Each float32 is written
    as Python's shortest repr of its exact value, which reads back bit for bit; so the same tensors always
    give the same bytes."""
    lines = []
    for name in sorted(state):
        tensor = state[name].float()
        entry = {"dtype": "float32", "shape": list(tensor.shape), "values": tensor.flatten().tolist()}
        lines.append(f"{json.dumps(name)}: {json.dumps(entry)}")
    body = ",\n".join(lines)
    return f'{{"format": {json.dumps(FORMAT)}, "version": {FORMAT_VERSION}, "tensors": {{\n{body}\n}}}}\n'


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in the JSON checkpoint at ``path``: only JSON is parsed (nothing is executed), and
    every entry is checked (float32, a list of dimensions, as many finite numbers as they give) before a
    tensor is built; any other content is a :class:`CheckpointError` naming the file."""

    def fail(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a tinyseg weights file ({why})")

    try:
        document: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fail(str(error)) from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise fail(f"format {FORMAT!r} expected")
    if document.get("version") != FORMAT_VERSION:
        raise fail(f"version {document.get('version')!r}, this code reads version {FORMAT_VERSION}")
    tensors = document.get("tensors")
    if not isinstance(tensors, dict):
        raise fail("no tensors")
    state = {}
    for name, entry in tensors.items():
        if not isinstance(entry, dict) or entry.get("dtype") != "float32":
            raise fail(f"{name}: a float32 entry expected")
        shape, values = entry.get("shape"), entry.get("values")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise fail(f"{name}: shape must be a list of dimensions")
        if not isinstance(values, list) or len(values) != math.prod(shape):
            raise fail(f"{name}: {math.prod(shape)} values expected for shape {shape}")
        if not all(type(v) in (int, float) and math.isfinite(v) for v in values):
            raise fail(f"{name}: values must be finite numbers")
        state[name] = torch.tensor(values, dtype=torch.float32).view(shape)
    return state
