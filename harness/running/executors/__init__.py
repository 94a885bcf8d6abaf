"""Executors: how the pending work units of a run get executed.

An executor is built by its factory from keyword options (``segbench run --workers 2 --address ADDR``
and ``--executor-option KEY=VALUE`` arrive as keyword arguments; an option the factory does not take is
a clear error). Its ``run`` receives the plan, the pending units and the store; it writes each finished
unit with ``store.write_unit`` (atomic) and calls ``done(unit)`` for progress. It may return what it ran
with (workers, threads per worker), which the manifest records with the session. An executor whose
workers may sit on other machines sets ``remote = True``: the driver then does not check the device.

Built-ins, registered below exactly as a third-party plugin registers its own executors:

* ``local``: this process, adapter by adapter (the reference run);
* ``pipelined``: this process, with reading ahead, scoring and writing on threads beside the model;
* ``multigpu``: one worker process per visible GPU of this machine;
* ``ray``: Ray actors holding one GPU each, on this machine or an existing cluster;
* ``submitit``: Slurm job arrays (or submitit's local executor).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from segbench import plugins
from segbench.errors import SegbenchError
from segbench.hookspecs import hookimpl
from segbench.running.executors.local import LocalExecutor
from segbench.running.executors.multigpu import MultiGpuExecutor
from segbench.running.executors.pipelined import PipelinedExecutor
from segbench.running.executors.ray_actors import RayExecutor
from segbench.running.executors.slurm import SubmititExecutor
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.store import RunStore


class Executor(Protocol):
    def run(
        self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]
    ) -> Mapping[str, Any] | None: ...


def create(name: str, options: Mapping[str, Any] | None = None) -> Executor:
    """The executor ``name`` built with ``options``."""
    options = dict(options or {})
    factory = factory_of(name)
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            takes = ", ".join(parameters) or "none"
            raise SegbenchError(
                f"executor '{name}' does not take the option(s) {', '.join(unknown)} (its options: {takes})"
            )
    return factory(**options)


def factory_of(name: str) -> Callable[..., Executor]:
    factories = plugins.executors()
    if name not in factories:
        raise SegbenchError(f"unknown executor '{name}' (installed: {', '.join(factories)})")
    return factories[name]


@hookimpl
def segbench_register_executors(register: Callable[[str, Callable[..., Executor]], None]) -> None:
    register("local", LocalExecutor)
    register("pipelined", PipelinedExecutor)
    register("multigpu", MultiGpuExecutor)
    register("ray", RayExecutor)
    register("submitit", SubmititExecutor)
