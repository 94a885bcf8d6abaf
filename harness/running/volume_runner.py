"""Running the volume protocols of one case: native volume adapters and 2D adapters alike.

A :class:`VolumeSession` belongs to one work unit (one adapter, one volume). Adapters with
``Capabilities(volume=True)`` get ``encode_volume`` once and ``predict_volume`` per protocol step;
every other adapter runs through :class:`~segbench.protocols.propagation.SliceStrategy` with one
:class:`~segbench.protocols.slice_cache.SliceEncodings` shared by all labels, protocols and steps of the volume.

Timing per protocol: for 2D adapters ``encode_ms`` is the encoder time of the slices the protocol used
(each slice's first pass, whichever protocol paid it) and ``decode_ms`` a step's time without encoder
passes; for volume adapters, which encode as they propagate, ``encode_ms`` is empty and ``decode_ms``
is the whole ``predict_volume`` call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from segbench.interface import Adapter, VolumePrompt, check_masks
from segbench.measuring.cost import timed
from segbench.protocols.prompts import ProtocolSpec, Target
from segbench.protocols.propagation import SliceStrategy
from segbench.protocols.slice_cache import SliceEncodings
from segbench.protocols.volume_prompts import initial_volume_prompt, refine_volume_prompt


@dataclass
class VolumeStep:
    decode_ms: float
    masks: np.ndarray  # (N, D, H, W) bool, one per target
    prompts: list[VolumePrompt]


class VolumeSession:
    """The state of one volume shared by all its protocols."""

    def __init__(self, adapter: Adapter, volume: np.ndarray, device: str):
        if volume.ndim != 3 or volume.dtype != np.uint8:
            raise ValueError(f"a volume is (D, H, W) uint8, got {volume.shape} {volume.dtype}")
        self.adapter = adapter
        self.volume = volume
        self.device = device
        self.native = adapter.meta.capabilities.volume
        self.state: Any = None
        self.encodings: SliceEncodings | None = None
        if self.native:
            self.state, _ = timed(device, adapter.encode_volume, volume)
        else:
            self.encodings = SliceEncodings(adapter.encode, volume, device)

    def run(self, protocol: ProtocolSpec, targets: list[Target]) -> tuple[list[VolumeStep], float]:
        """Every step of ``protocol`` for ``targets``; returns the steps and the protocol's encoder time."""
        prompts = [initial_volume_prompt(protocol, target) for target in targets]
        strategy = None
        if self.native:

            def predict(batch: list[VolumePrompt]) -> Any:
                return self.adapter.predict_volume(self.state, batch)
        else:
            assert self.encodings is not None
            strategy = SliceStrategy(self.adapter, self.encodings, protocol.propagates)
            predict = strategy.predict
        steps: list[VolumeStep] = []
        for step in range(protocol.steps):
            spent = self.encodings.encode_ms_spent if self.encodings else 0.0
            prediction, elapsed = timed(self.device, predict, prompts)
            masks = check_masks(prediction.masks, (len(prompts), *self.volume.shape))
            encoder = (self.encodings.encode_ms_spent - spent) if self.encodings else 0.0
            steps.append(VolumeStep(elapsed - encoder, masks, prompts))
            if step + 1 < protocol.steps:
                feedback = prediction.feedback or [None] * len(prompts)
                prompts = [
                    refine_volume_prompt(p, t, m, f)
                    for p, t, m, f in zip(prompts, targets, masks, feedback, strict=True)
                ]
        encode_ms = self.encodings.cost_ms(strategy.touched) if strategy and self.encodings else math.nan
        return steps, encode_ms
