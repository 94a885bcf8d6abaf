"""What every executor's worker holds: the plan and at most one loaded adapter."""

from __future__ import annotations

from typing import Any

from segbench.plan import RunPlan, WorkUnit
from segbench.runner import UnitRunner


class Worker:
    """Runs units one by one. An adapter is loaded (and warmed up) when its first unit arrives, after the
    previous adapter is freed, so a worker and its GPU never hold two models; units should therefore come
    grouped by adapter (as :func:`segbench.executors.sharding.shard_units` deals them), so each adapter
    is loaded once."""

    def __init__(self, plan: RunPlan, threads: int | None = None):
        self.plan = plan
        self.runner: UnitRunner | None = None
        if threads:
            import torch

            torch.set_num_threads(threads)

    def run(self, unit: WorkUnit) -> list[dict[str, Any]]:
        if self.runner is None or self.runner.setup.name != unit.adapter:
            self.close()
            self.runner = UnitRunner(self.plan, unit.adapter)
        return self.runner.run(unit)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
