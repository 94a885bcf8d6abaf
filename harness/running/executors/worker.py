"""What every executor's worker holds: the plan and at most one loaded adapter."""

from __future__ import annotations

from collections.abc import Callable

from segbench.data.case import Case
from segbench.running import environment
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.rows import unit_row
from segbench.running.runner import LOAD_FAILED, UnitRunner, error_text
from segbench.running.unit_result import UnitResult


class Worker:
    """Runs units one by one. An adapter is loaded (and warmed up) when its first unit arrives, after the
    previous adapter is freed, so a worker and its GPU never hold two models; units should therefore come
    grouped by adapter (as :func:`segbench.running.executors.sharding.shard_units` deals them), so each adapter
    is loaded once.

    An adapter that cannot be loaded (a corrupt checkpoint, a wrong layout: its ``load`` or warm-up
    raises) is not tried again: each of its units becomes one ``failed`` row carrying the load error
    (prefixed ``LOAD_FAILED``, which the run's end reports as the adapter skipped), and the worker goes
    on with the next adapter's units. Every executor runs units through a Worker, so all behave alike."""

    def __init__(self, plan: RunPlan, threads: int | None = None):
        self.plan = plan
        self.runner: UnitRunner | None = None
        self.broken: dict[str, str] = {}  # adapter -> its load error
        if threads:
            import torch

            torch.set_num_threads(threads)

    def run(self, unit: WorkUnit, case: Case | Exception | None = None) -> UnitResult:
        """The unit's result; ``case`` is its case (or the error reading it) when it was read ahead."""
        return self.infer(unit, case)()

    def load(self, adapter: str) -> None:
        """Have ``adapter`` loaded (the previous one freed first), unless its load failed before."""
        if adapter not in self.broken and (self.runner is None or self.runner.setup.name != adapter):
            self.close()
            try:
                self.runner = UnitRunner(self.plan, adapter)
            except Exception as error:
                self.broken[adapter] = f"{LOAD_FAILED}{error_text(error)}"

    def infer(self, unit: WorkUnit, case: Case | Exception | None = None) -> Callable[[], UnitResult]:
        """The unit's model work done here; what it returns scores it (:meth:`UnitRunner.infer`)."""
        self.load(unit.adapter)
        if unit.adapter in self.broken:
            reason = self.broken[unit.adapter]
            result = UnitResult([unit_row(self.plan, unit, environment.host(), "", status="failed", error=reason)])
            return lambda: result
        assert self.runner is not None
        return self.runner.infer(unit, case)

    def close(self, last: bool = False) -> None:
        """Free the loaded adapter; ``last``: the run's end, nothing follows (see :meth:`UnitRunner.close`)."""
        if self.runner is not None:
            self.runner.close(last)
            self.runner = None
