"""Timing and memory of model calls, measured the way a performance engineer would.

* Time: ``time.perf_counter`` around the call; on CUDA the device is synchronised before and after,
  so asynchronous kernels are counted in the call that launched them.
* Memory: on CUDA the allocator's peak (``max_memory_allocated``), reset before each case; on every
  device the process's peak resident set size, reset before each case through
  ``/proc/self/clear_refs`` on Linux (elsewhere the larger of RSS before and after the case).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(device: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """``function(*args, **kwargs)`` and its wall time in milliseconds (CUDA-synchronised)."""
    _synchronize(device)
    start = time.perf_counter()
    result = function(*args, **kwargs)
    _synchronize(device)
    return result, (time.perf_counter() - start) * 1000.0


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemoryPeak:
    device_mb: float = float("nan")  # CUDA allocator peak on GPU; the RSS peak on CPU
    rss_mb: float = float("nan")


@contextmanager
def peak_memory(device: str) -> Iterator[MemoryPeak]:
    """Measure the peak memory of the enclosed block; the result is filled in on exit."""
    peak = MemoryPeak()
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    exact = _reset_rss_peak()
    before = current_rss_mb()
    try:
        yield peak
    finally:
        hwm = _status_kib("VmHWM") if exact else None
        peak.rss_mb = hwm / 1024 if hwm is not None else max(before, current_rss_mb())
        if cuda:
            import torch

            torch.cuda.synchronize()
            peak.device_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak.device_mb = peak.rss_mb
