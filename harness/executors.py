"""Executors: how the pending work units of a run get executed.

An executor receives the plan, the pending units and the store; it must write each finished unit
with ``store.write_unit`` (atomic) and call ``done(unit)`` for progress. The built-in ``local``
executor runs everything in this process, one adapter at a time, so speed and memory are measured
with nothing else on the device. Executors are plugins (``segbench_register_executors``).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from typing import Protocol

from segbench.hookspecs import hookimpl
from segbench.plan import RunPlan, WorkUnit
from segbench.runner import UnitRunner
from segbench.store import RunStore


class Executor(Protocol):
    def run(self, plan: RunPlan, units: list[WorkUnit], store: RunStore,
            done: Callable[[WorkUnit], None]) -> None: ...


class LocalExecutor:
    """In process, adapter by adapter, unit by unit."""

    def run(self, plan: RunPlan, units: list[WorkUnit], store: RunStore,
            done: Callable[[WorkUnit], None]) -> None:
        ordered = sorted(units, key=lambda u: list(plan.adapters).index(u.adapter))
        for adapter, group in groupby(ordered, key=lambda u: u.adapter):
            runner = UnitRunner(plan, adapter)
            for unit in group:
                store.write_unit(unit.unit_id, runner.run(unit))
                done(unit)
            runner.close()


@hookimpl
def segbench_register_executors(register: Callable[[str, Callable[..., Executor]], None]) -> None:
    register("local", LocalExecutor)
