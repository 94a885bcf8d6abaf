"""A per-volume cache of slice encodings, so every label, protocol and step that touches a slice
shares one encoder pass (the encoder dominates the cost: ~1.1-1.7 s a slice for LiteMedSAM on 2 CPU
cores, seconds for SAM-family encoders at 1024).

Entries are evicted least-recently-used once their tensors exceed a byte budget
(``SEGBENCH_SLICE_CACHE_MB``, default 2048), so long volumes stream through a bounded amount of
memory; an evicted slice is encoded again when needed. The encoder time of each slice's first pass
is remembered, so a protocol can be charged the encoder cost of the slices it used whether or not
another protocol encoded them first.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from segbench.interface import RawImage
from segbench.measuring.cost import timed

DEFAULT_BUDGET_MB = 2048


def nbytes(obj: Any) -> int:
    """Bytes held by the arrays and tensors inside ``obj`` (dataclasses, mappings, sequences)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):  # a torch tensor
        return int(obj.element_size() * obj.nelement())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(nbytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(nbytes(v) for v in obj)
    return 0


def budget_bytes() -> int:
    return int(float(os.environ.get("SEGBENCH_SLICE_CACHE_MB", DEFAULT_BUDGET_MB)) * 2**20)


def slice_image(volume: np.ndarray | RawImage, z: int) -> np.ndarray | RawImage:
    """Slice ``z`` of a (D, H, W) uint8 volume as the (H, W, 3) image a 2D adapter takes; of a raw volume,
    the raw slice (an adapter declaring raw input does its own channels)."""
    if isinstance(volume, RawImage):
        return volume.slice(z)
    return np.repeat(volume[z][:, :, None], 3, axis=2)


class SliceEncodings:
    """Encodings of the slices of one volume, computed on first use and kept within a byte budget."""

    def __init__(
        self, encode: Callable[[Any], Any], volume: np.ndarray | RawImage, device: str, budget: int | None = None
    ):
        self._encode = encode
        self.volume = volume
        self.device = device
        self.budget = budget_bytes() if budget is None else budget
        self._entries: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._held = 0
        self.first_encode_ms: dict[int, float] = {}
        self.encode_ms_spent = 0.0
        self.misses = 0
        self.hits = 0

    def get(self, z: int) -> Any:
        if z in self._entries:
            self._entries.move_to_end(z)
            self.hits += 1
            return self._entries[z][0]
        state, elapsed = timed(self.device, self._encode, slice_image(self.volume, z))
        self.misses += 1
        self.encode_ms_spent += elapsed
        self.first_encode_ms.setdefault(z, elapsed)
        size = nbytes(state)
        self._entries[z] = (state, size)
        self._held += size
        while self._held > self.budget and len(self._entries) > 1:
            _, (_, freed) = self._entries.popitem(last=False)
            self._held -= freed
        return state

    def cost_ms(self, slices: set[int]) -> float:
        """Encoder time of ``slices`` (each slice's first pass): what a protocol using them would pay alone."""
        return float(sum(self.first_encode_ms.get(z, 0.0) for z in slices))
