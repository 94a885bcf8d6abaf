"""``submitit``: shards as a Slurm job array through submitit (or submitit's local executor, for tests).

Each array task runs one shard in order and writes each finished unit atomically into the run directory
itself, so ``--out`` must be on a filesystem every node sees (as must the data root, the checkpoints
and this Python environment; submitit needs that too). On Slurm's timeout or preemption signal submitit
requeues the task with the units it has not written yet. When tasks have died (killed, out of memory,
node lost), the driver finds their units without parts: the first is the one that was in flight and
counts one lost attempt, and all of them go into the next array, until every unit is written or
recorded as failed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from segbench.errors import SegbenchError
from segbench.running.executors.dispatch import Retries, describe
from segbench.running.executors.multigpu import check_unpinned
from segbench.running.executors.sharding import shard_units
from segbench.running.executors.worker import Worker
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.store import RunStore

log = logging.getLogger(__name__)


class ShardJob:
    """One array task: a shard's units, run in order and written as they finish."""

    def __init__(self, plan: RunPlan, run_dir: Path, units: list[WorkUnit], threads: int | None):
        self.plan = plan
        self.run_dir = run_dir
        self.units = list(units)  # those not written yet
        self.threads = threads

    def __call__(self) -> int:
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0")) or None
        worker = Worker(self.plan, threads)
        store = RunStore(self.run_dir)
        written = 0
        try:
            while self.units:
                unit = self.units[0]
                store.write_unit(unit.unit_id, worker.run(unit))
                self.units.pop(0)
                written += 1
        finally:
            worker.close()
        return written

    def checkpoint(self) -> Any:
        """Called by submitit on timeout or preemption: requeue the units not written yet."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(ShardJob(self.plan, self.run_dir, self.units, self.threads))


class SubmititExecutor:
    remote = True  # workers may run on other machines

    def __init__(
        self,
        workers: int = 1,
        threads: int | None = None,
        cluster: str | None = None,
        folder: str | None = None,
        slurm_partition: str | None = None,
        timeout_min: int = 240,
        mem_gb: float | None = None,
        max_retries: int = 2,
        poll_s: float = 5.0,
        **slurm_parameters: Any,
    ):
        others = sorted(key for key in slurm_parameters if not key.startswith("slurm_"))
        if others:
            raise SegbenchError(
                f"executor 'submitit' does not take the option(s) {', '.join(others)} (its "
                "options: workers, threads, cluster, folder, slurm_partition, timeout_min, mem_gb, "
                "max_retries, poll_s, and any submitit slurm_* parameter)"
            )
        if workers < 1:
            raise SegbenchError("--workers must be at least 1")
        self.workers = workers
        self.threads = threads
        self.cluster = cluster
        self.folder = folder
        self.parameters = {
            "slurm_partition": slurm_partition,
            "timeout_min": int(timeout_min),
            "mem_gb": mem_gb,
            **slurm_parameters,
        }
        self.max_retries = max_retries
        self.poll_s = poll_s

    def run(
        self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]
    ) -> Mapping[str, Any]:
        import submitit

        check_unpinned(plan, "submitit")
        folder = Path(self.folder) if self.folder else store.dir / "submitit"
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        cuda = plan.device.startswith("cuda")
        on_this_machine = executor.cluster in ("local", "debug")
        if on_this_machine and cuda and self.workers > 1:
            raise SegbenchError(
                "submitit's local executor would put every job on GPU 0; use --workers 1, or the multigpu executor"
            )
        threads = self.threads or (max(1, (os.cpu_count() or 1) // self.workers) if on_this_machine else None)
        executor.update_parameters(
            name=f"segbench-{plan.run_id}",
            nodes=1,
            tasks_per_node=1,
            gpus_per_node=int(cuda),
            cpus_per_task=threads,
            slurm_array_parallelism=self.workers,
            **self.parameters,
        )
        retries = Retries(plan, self.max_retries)
        pending, arrays = units, 0
        while pending:
            shards = [shard for shard in shard_units(plan, pending, self.workers) if shard]
            before = store.part_stamps()
            jobs = executor.submit_array([ShardJob(plan, store.dir, shard, threads) for shard in shards])
            arrays += 1
            log.info(
                "submitted %d job(s) for %d unit(s) to %s: %s",
                len(jobs),
                len(pending),
                executor.cluster,
                ", ".join(job.job_id for job in jobs),
            )
            try:
                written = self._wait(jobs, pending, before, store, done)
            except BaseException:
                for job in jobs:
                    job.cancel(check=False)
                raise
            pending = []
            for job, shard in zip(jobs, shards, strict=True):
                left = [unit for unit in shard if unit.unit_id not in written]
                if left:
                    pending += self._after_lost_job(job, left, retries, store, done)
        return {
            "workers": self.workers,
            "threads": threads,
            "cluster": executor.cluster,
            "arrays": arrays,
            "folder": str(folder),
        }

    def _wait(
        self,
        jobs: list[Any],
        units: list[WorkUnit],
        before: Mapping[str, Any],
        store: RunStore,
        done: Callable[[WorkUnit], None],
    ) -> set[str]:
        """Wait for the jobs, reporting units as their parts appear; the ids of the units written."""
        written: set[str] = set()
        while True:
            finished = all(job.done() for job in jobs)
            stamps = store.part_stamps()
            for unit in units:
                if unit.unit_id not in written and stamps.get(unit.unit_id) != before.get(unit.unit_id):
                    written.add(unit.unit_id)
                    done(unit)
            if finished:
                return written
            time.sleep(self.poll_s)

    def _after_lost_job(
        self, job: Any, left: list[WorkUnit], retries: Retries, store: RunStore, done: Callable[[WorkUnit], None]
    ) -> list[WorkUnit]:
        """The units to run again of a job that ended with ``left`` unwritten."""
        from submitit.core.utils import FailedJobError

        error = job.exception()
        if isinstance(error, FailedJobError):  # Python raised inside the job: as in the local executor, stop
            raise SegbenchError(f"submitit job {job.job_id} failed:\n{error}")
        in_flight, rest = left[0], left[1:]
        failed = retries.lost(in_flight, describe(error) if error else f"job {job.job_id} ended early ({job.state})")
        if failed is None:
            return left
        store.write_unit(in_flight.unit_id, failed)
        done(in_flight)
        return rest
