"""Timing and memory of model calls, measured the way a performance engineer would.

* Time: ``time.perf_counter`` around the call; on CUDA the device is synchronised before and after,
  so asynchronous kernels are counted in the call that launched them.
* Machine speed: before each case a fixed reference workload (a float32 matrix product) is timed on
  the case's device (``probe_ms``), so a comparison of two runs can tell a slower machine (CPU steal,
  frequency scaling, a busy neighbour) from slower code.
* Memory: on CUDA the allocator's peak (``max_memory_allocated``), reset before each case; on every
  device the process's peak resident set size, reset before each case through
  ``/proc/self/clear_refs`` on Linux (elsewhere the larger of RSS before and after the case).
"""

from __future__ import annotations

import functools
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


# Matrix side: ~14 ms on the 2-core x86 dev VM, a few ms on an H100. Long enough to span scheduler
# time slices as a model's calls do: under a competing busy process, a 3 ms product came out 4.4x
# slower while LiteMedSAM was 2.1x slower, and a 14 ms one 1.7-2.2x.
PROBE_SIDE = {"cpu": 1024, "cuda": 4096}


@functools.cache
def _probe_operand(device: str) -> Any:
    import torch

    side = PROBE_SIDE["cuda" if device.startswith("cuda") else "cpu"]
    generator = torch.Generator().manual_seed(0)
    return torch.rand(side, side, generator=generator).to(device)


def machine_probe_ms(device: str) -> float:
    """Wall time (ms) of a fixed matrix product on ``device``: the machine's speed at this moment.

    The same work every time (with torch's threads, as the models use them), so between two runs of
    the same code its ratio is the machine's drift alone; `segbench compare` divides a latency ratio
    by it (see ``segbench.compare``)."""
    import torch

    operand = _probe_operand(device)
    with torch.inference_mode():
        return timed(device, torch.mm, operand, operand)[1]


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
