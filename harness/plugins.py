"""The plugin manager and the registries it fills (adapters, readers, executors)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from segbench import hookspecs
from segbench.errors import SegbenchError

ENTRY_POINT_GROUPS = ("segbench.adapters", "segbench.plugins")
REPORT_ENTRY_POINT_GROUP = "segbench.report"


@cache
def plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("segbench")
    manager.add_hookspecs(hookspecs)
    for group in ENTRY_POINT_GROUPS:
        manager.load_setuptools_entrypoints(group)
    return manager


def _collect(hook_name: str, keyed: bool) -> dict[str, Any]:
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}

    def make_register(owner: str) -> Callable[..., None]:
        def register(*args: Any) -> None:
            name, value = (args[0], args[1]) if keyed else (args[0].meta.name, args[0])
            if name in found:
                raise SegbenchError(f"{hook_name}: '{name}' is registered twice ({owners[name]} and {owner})")
            found[name] = value
            owners[name] = owner
        return register

    manager = plugin_manager()
    for implementation in getattr(manager.hook, hook_name).get_hookimpls():
        implementation.function(register=make_register(implementation.plugin_name))
    return found


@cache
def adapters() -> dict[str, type]:
    """Adapter classes by name, from every installed plugin."""
    return dict(sorted(_collect("segbench_register_adapters", keyed=False).items()))


@cache
def readers() -> dict[str, type]:
    return _collect("segbench_register_readers", keyed=True)


@cache
def executors() -> dict[str, Callable[..., Any]]:
    return _collect("segbench_register_executors", keyed=True)


@cache
def report_plugin_manager() -> pluggy.PluginManager:
    """The plugins of ``segbench report`` alone (entry-point group ``segbench.report``): publishing a
    leaderboard never imports model code."""
    manager = pluggy.PluginManager("segbench")
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints(REPORT_ENTRY_POINT_GROUP)
    return manager


def report_template_dirs() -> list[Path]:
    """Template directories of every report plugin (``segbench_report_template_dirs``)."""
    found = report_plugin_manager().hook.segbench_report_template_dirs()
    return [Path(directory) for directories in found for directory in directories]


def adapter_class(name: str) -> type:
    known = adapters()
    if name not in known:
        raise SegbenchError(f"unknown adapter '{name}' (installed: {', '.join(known) or 'none'})")
    return known[name]
