"""The plugin manager and the registries it fills (adapters, readers, executors).

Built-in plugins are registered from :data:`DEFAULT_PLUGINS`, a list of module names inside segbench
(pluggy's own pattern), so a new built-in module counts without reinstalling; each is imported only when
the hook it implements is first asked for, so listing adapters never imports the executors (and the run
plan, metrics and polars behind them). Third-party plugins come through the entry-point groups
:data:`ENTRY_POINT_GROUPS`; segbench's own entry points there name built-in modules and are skipped, so
nothing registers twice.

A plugin that cannot be loaded never takes the others down: its entry point, module and the last line of
its error are kept in :attr:`SegbenchPluginManager.broken` (``segbench adapters`` lists them), and a
module that implements no hook (a function named like a hook without ``@hookimpl``, a misspelt hook
name, or nothing at all) is kept with a warning in :attr:`SegbenchPluginManager.warnings`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from segbench import hookspecs
from segbench.errors import SegbenchError
from segbench.strict import closest

ENTRY_POINT_GROUPS = ("segbench.adapters", "segbench.plugins")
REPORT_ENTRY_POINT_GROUP = "segbench.report"

ADAPTER_MODULES = (
    "segbench.adapters.baselines",
    "segbench.adapters.incontext_baselines",
    "segbench.adapters.litemedsam",
    "segbench.adapters.universeg",
    "segbench.adapters.sam",
    "segbench.adapters.sam_med2d",
    "segbench.adapters.sam2family",
    "segbench.adapters.medsam2",
    "segbench.adapters.medical_sam2",
)
# built-in plugin modules by the hook they implement (registered when that hook is first called)
DEFAULT_PLUGINS: dict[str, tuple[str, ...]] = {
    "segbench_register_adapters": ADAPTER_MODULES,
    "segbench_register_readers": ("segbench.data.readers",),
    "segbench_register_executors": ("segbench.running.executors",),
    "segbench_register_protocols": ("segbench.protocols.kinds",),
    "segbench_register_metrics": (
        "segbench.measuring.metric_table",
        "segbench.measuring.shape_metrics",
        "segbench.measuring.instances",
    ),
}
HOOKS = tuple(name for name in dir(hookspecs) if name.startswith("segbench_"))


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded: its entry point (or built-in module), module and error."""

    name: str
    group: str  # its entry-point group, "built-in", or the hook that raised
    module: str
    error: str  # the last line of the exception, e.g. "ModuleNotFoundError: No module named 'torch_xyz'"


def _last_line(error: BaseException) -> str:
    return traceback.format_exception_only(error)[-1].strip()


class SegbenchPluginManager(pluggy.PluginManager):
    """pluggy's manager, keeping what went wrong while loading plugins instead of raising it."""

    def __init__(self) -> None:
        super().__init__("segbench")
        self.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []
        self.warnings: list[str] = []

    def add_plugin(
        self,
        name: str,
        group: str,
        load: Callable[[], Any],
        module: str,
        dist: importlib.metadata.Distribution | None = None,
    ) -> Any | None:
        """Load a plugin with ``load()`` and register it as ``name``; None (and a :class:`BrokenPlugin`)
        when it fails to import or to register, a warning when it implements no hook."""
        try:
            plugin = load()
            self.register(plugin, name=name)
        except Exception as error:  # any failure of someone else's import: listed, never raised
            self.broken.append(BrokenPlugin(name, group, module, _last_line(error)))
            return None
        if dist is not None:
            self._plugin_distinfo.append((plugin, dist))  # type: ignore[arg-type]  # what pluggy records
        self._check_hooks(name, module, plugin)
        return plugin

    def _check_hooks(self, name: str, module: str, plugin: Any) -> None:
        implemented = [caller.name for caller in self.get_hookcallers(plugin) or []]
        where = f"plugin '{name}' ({module})"
        for hook in implemented:
            if hook not in HOOKS:
                near = closest(hook, HOOKS)
                hint = f"; did you mean '{near}'?" if near else f" (hooks: {', '.join(HOOKS)})"
                self.warnings.append(f"{where} implements '{hook}', which is no segbench hook{hint}")
        if any(hook in HOOKS for hook in implemented):
            return
        unmarked = [attr for attr in dir(plugin) if attr in HOOKS and callable(getattr(plugin, attr, None))]
        if unmarked:
            self.warnings.append(
                f"{where} registers nothing: {', '.join(unmarked)} lacks @hookimpl (from segbench import hookimpl)"
            )
        elif not implemented:
            self.warnings.append(f"{where} registers nothing: it implements no segbench hook ({', '.join(HOOKS)})")

    def add_builtins(self, modules: Iterable[str]) -> None:
        """Register segbench's own plugin modules not registered yet."""
        for module in modules:
            if not self.has_plugin(module) and module not in {b.name for b in self.broken}:
                self.add_plugin(module, "built-in", lambda m=module: importlib.import_module(m), module)

    def load_entry_points(self, group: str) -> None:
        """Register the plugins of an entry-point group, except segbench's own built-in modules."""
        builtin = {module for modules in DEFAULT_PLUGINS.values() for module in modules}
        for entry in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            if entry.module in builtin or self.has_plugin(entry.name) or self.is_blocked(entry.name):
                continue
            self.add_plugin(entry.name, group, entry.load, entry.value, entry.dist)


@cache
def plugin_manager() -> SegbenchPluginManager:
    """The manager with every third-party plugin; the built-ins join when their hook is first called."""
    manager = SegbenchPluginManager()
    for group in ENTRY_POINT_GROUPS:
        manager.load_entry_points(group)
    return manager


def loaded_plugin_manager() -> SegbenchPluginManager:
    """:func:`plugin_manager` with every built-in plugin registered too."""
    manager = plugin_manager()
    for modules in DEFAULT_PLUGINS.values():
        manager.add_builtins(modules)
    return manager


def _collect(
    hook_name: str, keyed: bool, name_of: Callable[[Any], str] = lambda value: value.meta.name
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}

    def make_register(owner: str) -> Callable[..., None]:
        def register(*args: Any) -> None:
            name, value = (args[0], args[1]) if keyed else (name_of(args[0]), args[0])
            if name in found:
                raise SegbenchError(f"{hook_name}: '{name}' is registered twice ({owners[name]} and {owner})")
            found[name] = value
            owners[name] = owner

        return register

    manager = plugin_manager()
    manager.add_builtins(DEFAULT_PLUGINS.get(hook_name, ()))
    for implementation in getattr(manager.hook, hook_name).get_hookimpls():
        try:
            implementation.function(register=make_register(implementation.plugin_name))
        except SegbenchError:  # one name registered by two plugins: the user must choose
            raise
        except Exception as error:  # a plugin whose hook fails is broken like one that fails to import
            module = getattr(implementation.plugin, "__name__", type(implementation.plugin).__name__)
            manager.broken.append(BrokenPlugin(implementation.plugin_name, hook_name, module, _last_line(error)))
    return found


@cache
def adapters() -> dict[str, type]:
    """Adapter classes by name, from every plugin that loaded (see :func:`broken_plugins` for the others)."""
    return dict(sorted(_collect("segbench_register_adapters", keyed=False).items()))


@cache
def readers() -> dict[str, type]:
    return _collect("segbench_register_readers", keyed=True)


@cache
def executors() -> dict[str, Callable[..., Any]]:
    return _collect("segbench_register_executors", keyed=True)


@cache
def protocols() -> dict[str, type]:
    """Protocol kind classes by their ``kind``."""
    return _collect("segbench_register_protocols", keyed=False, name_of=lambda kind: kind.kind)


@cache
def metrics() -> dict[str, Any]:
    """Metric specs by name (:class:`segbench.measuring.metric_table.MetricSpec`)."""
    return _collect("segbench_register_metrics", keyed=False, name_of=lambda spec: spec.name)


def broken_plugins() -> list[BrokenPlugin]:
    """The plugins that failed to load so far (call :func:`adapters` first to try the adapter modules)."""
    return list(plugin_manager().broken)


def plugin_warnings() -> list[str]:
    """Warnings about the plugins loaded so far (modules that register nothing, unknown hook names)."""
    return list(plugin_manager().warnings)


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


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """ "unknown adapter 'x'; did you mean 'y'? (known: ...)": the message for a name that is not there."""
    known = sorted(known)
    near = closest(name, known)
    hint = f"; did you mean '{near}'?" if near else ""
    return f"unknown {kind} '{name}'{hint} (known: {', '.join(known) or 'none'})"


def adapter_class(name: str) -> type:
    known = adapters()
    if name not in known:
        message = unknown_name("adapter", name, known)
        broken = broken_plugins()
        if broken:  # the adapter may live in a plugin that failed to import
            message += "; plugins that failed to load: " + "; ".join(
                f"{b.name} ({b.module}: {b.error})" for b in broken
            )
        raise SegbenchError(message)
    return known[name]
