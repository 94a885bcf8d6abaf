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
from collections.abc import Callable
from typing import Any

import numpy as np

from segbench.interface import Adapter, Prediction, RawImage
from segbench.measuring.cost import timed
from segbench.protocols.base import Ask
from segbench.protocols.prompts import ProtocolSpec
from segbench.protocols.propagation import SliceStrategy
from segbench.protocols.slice_cache import SliceEncodings
from segbench.running.session import Session


class VolumeSession(Session):
    """The state of one volume shared by all its protocols (the steps: :meth:`Session.run`)."""

    def __init__(self, adapter: Adapter, volume: np.ndarray | RawImage, device: str):
        """``volume``: (D, H, W) uint8, or a (D, H, W) :class:`RawImage` for an adapter declaring raw input."""
        if len(volume.shape) != 3 or (not isinstance(volume, RawImage) and volume.dtype != np.uint8):
            raise ValueError(f"a volume is (D, H, W) uint8 or raw, got {volume.shape} {volume.dtype}")
        super().__init__(adapter, tuple(volume.shape), device)
        self.volume = volume
        self.native = adapter.meta.capabilities.volume
        self.state: Any = None
        self.encodings: SliceEncodings | None = None
        self.strategy: SliceStrategy | None = None  # the current protocol run's, for a 2D adapter
        if self.native:
            self.state, _ = timed(device, adapter.encode_volume, volume)
        else:
            self.encodings = SliceEncodings(adapter.encode, volume, device)

    def decoder(self, protocol: ProtocolSpec) -> Callable[[Ask], Prediction]:
        if self.encodings is None:
            return lambda ask: self.adapter.predict_volume(self.state, ask.prompts or [])
        strategy = self.strategy = SliceStrategy(self.adapter, self.encodings, protocol.propagates)
        return lambda ask: strategy.predict(ask.prompts or [])

    def encoder_ms_spent(self) -> float:
        return self.encodings.encode_ms_spent if self.encodings else 0.0

    def encode_ms(self) -> float:
        """The encoder time of the slices the protocol used (each slice's first pass, whichever protocol
        paid it); NaN for a volume adapter."""
        if self.encodings is None or self.strategy is None:
            return math.nan
        return self.encodings.cost_ms(self.strategy.touched)
