"""``ray``: workers as Ray actors, on this machine (a local ``ray.init()``) or on an existing cluster
(``--address``, or ``RAY_ADDRESS``; a session already initialised in this process is used as it is).

Each actor reserves one whole GPU (``num_gpus=1``: Ray pins ``CUDA_VISIBLE_DEVICES``, and never
places two actors on one GPU) and ``threads`` CPUs, and holds one adapter at a time. Actors return each
unit's result (rows and kept masks) to the driver, which writes it to the run directory: the results need no shared
filesystem, only the data root and the checkpoints must be at the same paths on every node.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from segbench.errors import SegbenchError
from segbench.running.executors.dispatch import dispatch
from segbench.running.executors.multigpu import check_unpinned
from segbench.running.executors.worker import Worker
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.store import RunStore
from segbench.running.unit_result import UnitResult

log = logging.getLogger(__name__)


class RayExecutor:
    remote = True  # workers may run on other machines

    def __init__(
        self, address: str | None = None, workers: int | None = None, threads: int | None = None, max_retries: int = 2
    ):
        self.address = address
        self.workers = workers
        self.threads = threads
        self.max_retries = max_retries

    def run(
        self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]
    ) -> Mapping[str, Any]:
        import ray

        check_unpinned(plan, "ray")
        started = not ray.is_initialized()
        if started:
            connecting = self.address or os.environ.get("RAY_ADDRESS")
            if connecting:
                ray.init(address=self.address)
            else:
                ray.init(address=self.address, include_dashboard=False)
        try:
            workers, threads, gpus = self._shape(plan, ray.cluster_resources(), ray.nodes())
            pool = RayWorkerPool(plan, workers, threads, gpus)
            try:
                dispatch(pool, plan, units, store, done, self.max_retries)
            finally:
                pool.close()
            return {
                "workers": workers,
                "threads": threads,
                "gpus_per_worker": gpus,
                "address": ray.get_runtime_context().gcs_address,
            }
        finally:
            if started:
                ray.shutdown()

    def _shape(
        self, plan: RunPlan, resources: Mapping[str, float], nodes: list[dict[str, Any]]
    ) -> tuple[int, int, int]:
        """(workers, threads per worker, GPUs per worker) for this cluster."""
        cpus, cluster_gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if plan.device == "cpu":
            gpus = 0
            workers = self.workers or max(1, sum(1 for node in nodes if node.get("Alive")))  # one per machine
        else:
            gpus = 1
            workers = self.workers or cluster_gpus
            if not workers:
                raise SegbenchError(
                    "the Ray cluster has no GPU; run with --device cpu, or pass --workers N to "
                    "wait for an autoscaler to add GPU nodes"
                )
            if workers > cluster_gpus:
                log.warning(
                    "%d GPU workers asked for, the Ray cluster has %d GPU(s) now: the others wait for GPUs to be added",
                    workers,
                    cluster_gpus,
                )
        threads = self.threads or max(1, cpus // workers)
        return workers, threads, gpus


class RayWorkerPool:
    """One actor per worker; a dead actor is replaced by a new one (Ray does not restart it)."""

    def __init__(self, plan: RunPlan, size: int, threads: int, gpus: int):
        import ray

        self.size = size
        self.lost = (ray.exceptions.RayActorError,)
        self.threads = threads
        self.plan = ray.put(plan)
        self.actor_class = ray.remote(Worker).options(num_cpus=threads, num_gpus=gpus, max_restarts=0)
        self.actors = [self._start() for _ in range(size)]

    def _start(self) -> Any:
        return self.actor_class.remote(self.plan, self.threads)

    def submit(self, worker: int, unit: WorkUnit) -> Future[UnitResult]:
        return self.actors[worker].run.remote(unit).future()

    def replace(self, worker: int) -> None:
        import ray

        ray.kill(self.actors[worker], no_restart=True)  # it may be unreachable rather than dead
        self.actors[worker] = self._start()

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
