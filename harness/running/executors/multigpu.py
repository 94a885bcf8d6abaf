"""``multigpu``: one worker process per visible GPU of this machine.

Each worker is a fresh (spawned, never forked: CUDA does not survive a fork) process with
``CUDA_VISIBLE_DEVICES`` pinned to its own GPU, so no two models ever share a GPU while they are timed.
Workers send each unit's result (its rows and kept masks, a :class:`~segbench.running.unit_result.UnitResult`)
back to this process, which writes it to the run directory.

Without a GPU the executor refuses to start, unless CPU worker processes are asked for explicitly with
``--workers N`` (``--device cpu``): useful to use the cores of a big CPU machine, at the price of
timings measured with ``cores / N`` threads each.

A worker ends when this driver dies (:mod:`segbench.running.executors.lifeline`): killing the driver never
leaves a worker holding a model and its memory.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from segbench.errors import SegbenchError
from segbench.running.executors.dispatch import dispatch
from segbench.running.executors.lifeline import die_with_parent
from segbench.running.executors.worker import Worker
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.store import RunStore
from segbench.running.unit_result import UnitResult


def gpu_ids(visible: str | None, count: int) -> list[str]:
    """The GPUs workers can be pinned to: the first ``count`` entries of ``CUDA_VISIBLE_DEVICES``
    (indices or UUIDs) when it is set, else ``0..count-1`` (``count``: the GPUs torch sees)."""
    if visible is None:
        return [str(index) for index in range(count)]
    return [entry.strip() for entry in visible.split(",") if entry.strip()][:count]


def check_unpinned(plan: RunPlan, executor: str) -> None:
    """Executors that place workers on GPUs need ``--device cuda`` (or cpu), not one pinned GPU."""
    if plan.device.startswith("cuda:"):
        raise SegbenchError(
            f"--device {plan.device} pins one GPU; the {executor} executor gives each worker "
            "its own GPU: use --device cuda"
        )


class MultiGpuExecutor:
    def __init__(self, workers: int | None = None, threads: int | None = None, max_retries: int = 2):
        self.workers = workers
        self.threads = threads
        self.max_retries = max_retries

    def _environments(self, plan: RunPlan) -> list[dict[str, str]]:
        check_unpinned(plan, "multigpu")
        if plan.device == "cpu":
            if not self.workers:
                raise SegbenchError(
                    "the multigpu executor runs one worker per GPU and this run is on the CPU "
                    "(--device cpu, or no GPU found); use --executor local, or ask for CPU "
                    "worker processes explicitly with --workers N"
                )
            return [{} for _ in range(self.workers)]
        import torch

        gpus = gpu_ids(os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
        workers = self.workers or len(gpus)
        if workers > len(gpus):
            raise SegbenchError(
                f"--workers {workers}, but this machine shows {len(gpus)} GPU(s) "
                f"({', '.join(gpus) or 'none'}); the multigpu executor never puts two "
                "workers on one GPU"
            )
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus[:workers]]

    def run(
        self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]
    ) -> Mapping[str, Any]:
        environments = self._environments(plan)
        threads = self.threads or max(1, (os.cpu_count() or 1) // len(environments))
        pool = ProcessWorkerPool(plan, environments, threads)
        try:
            dispatch(pool, plan, units, store, done, self.max_retries)
        finally:
            pool.close()
        return {
            "workers": len(environments),
            "threads": threads,
            "gpus": [env.get("CUDA_VISIBLE_DEVICES", "") for env in environments],
        }


class ProcessWorkerPool:
    """A one-process pool per worker: a dead process breaks only its own pool, which is replaced."""

    lost = (BrokenProcessPool,)

    def __init__(self, plan: RunPlan, environments: list[dict[str, str]], threads: int):
        self.plan = plan
        self.environments = environments
        self.threads = threads
        self.size = len(environments)
        self.pools = [self._start(worker) for worker in range(self.size)]

    def _start(self, worker: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.plan, self.environments[worker], self.threads, os.getpid()),
        )

    def submit(self, worker: int, unit: WorkUnit) -> Future[UnitResult]:
        return self.pools[worker].submit(_run_unit, unit)

    def replace(self, worker: int) -> None:
        self.pools[worker].shutdown(wait=False, cancel_futures=True)
        self.pools[worker] = self._start(worker)

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)


_worker: Worker | None = None  # the worker of this process, in a pool's worker process


def _start_worker(plan: RunPlan, environment: dict[str, str], threads: int, driver_pid: int) -> None:
    global _worker
    die_with_parent(driver_pid)  # first: a driver killed while this worker loads a model takes it along
    os.environ.update(environment)  # before anything initialises CUDA in this fresh process
    _worker = Worker(plan, threads)


def _run_unit(unit: WorkUnit) -> UnitResult:
    if _worker is None:
        raise RuntimeError("_run_unit runs in a worker process started by ProcessWorkerPool")
    return _worker.run(unit)
