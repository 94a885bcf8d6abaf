"""Timing and memory of model calls, measured the way a performance engineer would.

* Time: ``time.perf_counter`` around the call; on CUDA the device is synchronised before and after,
  so asynchronous kernels are counted in the call that launched them.
* Machine speed: a fixed reference workload (a float32 matrix product) timed on the case's device
  every 10 s of a run (``probe_ms``), so a comparison of two runs can tell a slower machine
  (CPU steal, frequency scaling, a busy neighbour) from slower code.
* Memory: on CUDA the allocator's peak (``max_memory_allocated``), reset before each case; on every
  device the process's peak resident set size, reset before each case through
  ``/proc/self/clear_refs`` on Linux (elsewhere the larger of RSS before and after the case). On the
  CPU the model's memory is that peak less a baseline, the process's RSS just before the adapter's
  ``load`` (the interpreter, torch, numpy and the harness are not the model's): the ``box`` baseline
  read 1,144 MB as whole-process RSS, almost all of it imported libraries.
"""

from __future__ import annotations

import math
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
PROBE_REPEATS = 3
PROBE_INTERVAL_S = 10.0  # ~56 ms of products every 10 s: about 0.6% of a run on a 2-core CPU
# At most this share of a run's wall time goes to the probe: on a busy host its products slow down with
# everything else (4 x ~180 ms on the dev VM at load 13, 730 ms a LiteMedSAM case, 2.7% of its time), so
# the wait after a probe is at least its own duration over this share
PROBE_SHARE = 0.01


class MachineProbe:
    """The machine's speed: the median wall time (ms) of a fixed matrix product on one device.

    The same work every time, with torch's threads as the models use them, so between two runs of the
    same code its ratio is the machine's drift alone (`segbench compare` uses it, see
    ``segbench.reporting.compare``). One untimed product first wakes the thread pool, whose sleeping threads
    would otherwise be timed; then the median of three. Re-measured when the last figure is older
    than ``interval_s``, so a transient at one moment is outvoted by the others in a comparison's
    median, while the cheap baselines' thousand-a-second cases do not each pay for a product.
    Measured on the dev VM, nine fresh processes, the probe after LiteMedSAM's warm-up against its
    median encode: 12.3-26.2 ms against 1177-2565 ms, the encode 96-116 probes long in each."""

    def __init__(self, device: str, interval_s: float = PROBE_INTERVAL_S):
        self.device = device
        self.interval_s = interval_s
        self._ms = float("nan")
        self._at = -math.inf
        self._wait = interval_s

    def _measure(self) -> float:
        """Made and dropped each time, so no case's peak memory holds the operand. On a CPU where torch
        is not imported (a run of baselines that never call it) the same product through numpy's BLAS
        (measured side by side on the dev VM: within the run-to-run spread of torch's), so a baseline's
        run does not import torch for its probe alone; runs of one adapter probe alike either way."""
        side = PROBE_SIDE["cuda" if self.device.startswith("cuda") else "cpu"]
        if self.device == "cpu" and "torch" not in sys.modules:
            import numpy as np

            matrix = np.random.default_rng(0).random((side, side), dtype=np.float32)
            timed(self.device, np.matmul, matrix, matrix)
            times = sorted(timed(self.device, np.matmul, matrix, matrix)[1] for _ in range(PROBE_REPEATS))
            return times[len(times) // 2]
        import torch

        generator = torch.Generator(self.device).manual_seed(0)
        with torch.inference_mode():
            operand = torch.rand(side, side, device=self.device, generator=generator)
            timed(self.device, torch.mm, operand, operand)
            times = sorted(timed(self.device, torch.mm, operand, operand)[1] for _ in range(PROBE_REPEATS))
        return times[len(times) // 2]

    def ms(self) -> float:
        """The latest figure, measured now if it is older than ``interval_s`` (or, where the last probe
        took more than ``PROBE_SHARE`` of that, than its duration over ``PROBE_SHARE``)."""
        if time.monotonic() - self._at > self._wait:
            start = time.monotonic()
            self._ms = self._measure()
            self._at = time.monotonic()
            self._wait = max(self.interval_s, (self._at - start) / PROBE_SHARE)
        return self._ms


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
    device_mb: float = float("nan")  # CUDA allocator peak on GPU; on CPU the RSS peak less the baseline
    rss_mb: float = float("nan")


@contextmanager
def peak_memory(device: str, baseline_mb: float = 0.0) -> Iterator[MemoryPeak]:
    """Measure the peak memory of the enclosed block; the result is filled in on exit. On the CPU
    ``device_mb`` is the RSS peak less ``baseline_mb`` (at least 0)."""
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
            peak.device_mb = max(0.0, peak.rss_mb - baseline_mb)
