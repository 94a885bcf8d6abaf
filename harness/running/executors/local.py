"""``local``: every unit in this process, adapter by adapter: nothing else runs on the device while a
model is timed, which makes it the reference run."""

from __future__ import annotations

from collections.abc import Callable

from segbench.running.executors.sharding import by_adapter
from segbench.running.executors.worker import Worker
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.store import RunStore


class LocalExecutor:
    def run(self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]) -> None:
        worker = Worker(plan)
        try:
            for unit in by_adapter(plan, units):
                store.write_unit(unit.unit_id, worker.run(unit))
                done(unit)
        finally:
            worker.close(last=True)
