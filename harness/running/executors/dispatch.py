"""Feeding shards of work units to a pool of workers, and surviving workers that die.

The driver keeps one unit in flight per worker and writes each unit's result (rows and kept masks) as it
comes back, so a run loses at most the units in flight when anything dies. A worker that dies (killed,
out of memory, its machine lost) is replaced, and the unit it was running goes back to the front of its
shard: it is tried at most ``1 + max_retries`` times, then recorded as a ``failed`` row naming the error, and the run
goes on. An adapter that cannot load is no exception here: its worker (``executors.worker.Worker``, as
in the local executor) returns a failed row for each of its units naming the load error, and the
other adapters run.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Protocol

from segbench.running.executors.sharding import shard_units
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.rows import unit_row
from segbench.running.store import RunStore
from segbench.running.unit_result import UnitResult

log = logging.getLogger(__name__)


class WorkerPool(Protocol):
    """Workers ``0..size-1``, each running the units submitted to it one after the other."""

    size: int

    @property
    def lost(self) -> tuple[type[BaseException], ...]:
        """What a unit's future raises when its worker died."""

    def submit(self, worker: int, unit: WorkUnit) -> Future[UnitResult]: ...

    def replace(self, worker: int) -> None:
        """Start a fresh worker in place of a dead one."""

    def close(self) -> None: ...


class Retries:
    """The bounded retry of units whose worker died while running them."""

    def __init__(self, plan: RunPlan, max_retries: int):
        if max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        self.plan = plan
        self.max_retries = max_retries
        self.attempts: Counter[str] = Counter()

    def lost(self, unit: WorkUnit, error: str, host: str = "", gpu: str = "") -> UnitResult | None:
        """Count a lost attempt at ``unit``: None if it should run again, else its ``failed`` row."""
        self.attempts[unit.unit_id] += 1
        tried = self.attempts[unit.unit_id]
        log.warning(
            "worker lost while running %s/%s/%s (attempt %d of %d): %s",
            unit.adapter,
            unit.task,
            unit.case_id,
            tried,
            1 + self.max_retries,
            error,
        )
        if tried <= self.max_retries:
            return None
        reason = f"its worker died in {tried} attempt(s) at this unit; last: {error}"
        return UnitResult([unit_row(self.plan, unit, host, gpu, status="failed", error=reason)])


def describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def dispatch(
    pool: WorkerPool,
    plan: RunPlan,
    units: list[WorkUnit],
    store: RunStore,
    done: Callable[[WorkUnit], None],
    max_retries: int,
) -> None:
    """Run ``units`` on ``pool``: shard ``k`` on worker ``k``, one unit in flight per worker."""
    queues = [deque(shard) for shard in shard_units(plan, units, pool.size)]
    retries = Retries(plan, max_retries)
    seen_on: dict[int, tuple[str, str]] = {}  # worker -> (host, gpu) of the last rows it returned
    running: dict[Future[UnitResult], tuple[int, WorkUnit]] = {}

    def feed(worker: int) -> None:
        if queues[worker]:
            unit = queues[worker].popleft()
            running[pool.submit(worker, unit)] = (worker, unit)

    for worker in range(pool.size):
        feed(worker)
    while running:
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            worker, unit = running.pop(future)
            try:
                result: UnitResult | None = future.result()
            except pool.lost as error:
                pool.replace(worker)
                result = retries.lost(unit, describe(error), *seen_on.get(worker, ("", "")))
                if result is None:
                    queues[worker].appendleft(unit)
            if result is not None:
                if result.rows:
                    seen_on[worker] = (result.rows[0]["host"], result.rows[0]["gpu"])
                store.write_unit(unit.unit_id, result)
                done(unit)
            feed(worker)
