"""The plugin manager and the registries it fills (adapters, readers, executors, protocol kinds, metrics,
pages), as pluggy's eggsample and datasette host theirs.

Built-in plugins are registered from :data:`DEFAULT_PLUGINS`, a list of module names inside segbench,
so a new built-in module counts without reinstalling; each is imported only when the hook it implements
is first asked for, so listing adapters never imports the executors (and the run plan, metrics and
polars behind them). Entry points are for third parties alone (the groups :data:`ENTRY_POINT_GROUPS`;
report plugins :data:`REPORT_ENTRY_POINT_GROUP`): segbench declares none, and an old install's entry
point that names a built-in module is skipped, so nothing registers twice.

Hooks are called through pluggy (``subset_hook_caller``, one plugin at a time, see :func:`collect`), and
what each ``register`` is given is checked against the hook's :class:`Registry` (an adapter must
subclass :class:`segbench.interface.Adapter`, a reader :class:`segbench.data.readers.base.Reader`, a
metric be a ``MetricSpec``, a page a ``Page``). The contracts of the wings are named, not imported: the
host depends on no wing (the import-linter contract in pyproject.toml counts type-only imports too), so
only :func:`adapters` is typed by its class statically; the others are checked when registered.

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
from functools import cache, partial
from pathlib import Path
from typing import Any

import pluggy

from segbench import hookspecs
from segbench.errors import SegbenchError
from segbench.interface import Adapter
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
    "segbench.adapters.sam_med3d",
    "segbench.adapters.nninteractive",
)
# built-in plugin modules by the hook they implement (registered when that hook is first called)
DEFAULT_PLUGINS: dict[str, tuple[str, ...]] = {
    "segbench_register_adapters": ADAPTER_MODULES,
    "segbench_register_readers": ("segbench.data.readers",),
    "segbench_register_executors": ("segbench.running.executors",),
    "segbench_register_protocols": (
        "segbench.protocols.kinds",
        "segbench.protocols.challenge_kinds",
        "segbench.protocols.sammed3d",
        "segbench.protocols.given_kinds",
        "segbench.protocols.drawn",
    ),
    "segbench_register_metrics": (
        "segbench.measuring.metric_table",
        "segbench.measuring.shape_metrics",
        "segbench.measuring.instances",
    ),
    "segbench_register_pages": ("segbench.reporting.site_pages",),  # asked by `segbench report` alone
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
            self._plugin_distinfo.append((plugin, dist))  # what pluggy's own entry-point loading records
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
                self.add_plugin(module, "built-in", partial(importlib.import_module, module), module)

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


class PluginContractError(SegbenchError):
    """A plugin registered something that is not what its hook takes (the plugin is then broken)."""


@dataclass(frozen=True)
class Registry:
    """What one registering hook collects: the contract every registered value must meet and its name.

    ``contract`` is ``"module:Class"``: registered classes must subclass it (``instances``: registered
    values must be instances of it). It is named, not imported, because the host depends on no wing;
    it is imported when the hook is first called, as the built-in plugins are. An empty ``contract``
    takes any class carrying the attribute ``key`` (protocol kinds) or, keyed, any callable (executors).
    ``keyed`` hooks are called as ``register(name, value)``, the others as ``register(value)`` with the
    name read from the value's attribute path ``key``."""

    hook: str
    what: str  # "adapter", "reader", ... for messages
    contract: str = ""
    instances: bool = False
    keyed: bool = False
    key: str = ""

    def resolve(self) -> type | None:
        if not self.contract:
            return None
        module, _, name = self.contract.partition(":")
        found: type = getattr(importlib.import_module(module), name)
        return found

    def name_of(self, value: Any) -> str:
        for attribute in self.key.split("."):
            value = getattr(value, attribute)
        if not isinstance(value, str) or not value:
            raise TypeError(f"its {self.key} is {value!r}, not a name")
        return value

    def check(self, value: Any, contract: type | None) -> str | None:
        """Why ``value`` cannot be registered here ("<value>, which is not ..."), or None when it can."""
        shown = value.__qualname__ if isinstance(value, type) else repr(value)
        if contract is not None:
            if self.instances:
                ok = isinstance(value, contract)
            else:
                ok = isinstance(value, type) and issubclass(value, contract)
            if not ok:
                relation = "an instance" if self.instances else "a subclass"
                return f"{shown}, which is not {relation} of {contract.__module__}.{contract.__qualname__}"
        elif self.keyed and not callable(value):
            return f"{shown}, which is not callable"
        elif not self.keyed and not isinstance(value, type):
            return f"{shown}, which is not a class"
        return None


ADAPTERS = Registry("segbench_register_adapters", "adapter", "segbench.interface:Adapter", key="meta.name")
READERS = Registry("segbench_register_readers", "reader", "segbench.data.readers.base:Reader", keyed=True)
EXECUTORS = Registry("segbench_register_executors", "executor", keyed=True)
PROTOCOLS = Registry("segbench_register_protocols", "protocol kind", key="kind")
METRICS = Registry(
    "segbench_register_metrics", "metric", "segbench.measuring.metric_table:MetricSpec", instances=True, key="name"
)
PAGES = Registry("segbench_register_pages", "page", "segbench.reporting.site_pages:Page", instances=True, key="name")


def collect(registry: Registry, manager: SegbenchPluginManager | None = None) -> dict[str, Any]:
    """Call ``registry.hook`` through pluggy, one plugin at a time (``subset_hook_caller``), so that a
    plugin whose hook raises, or that registers something the hook does not take, is kept in
    :attr:`SegbenchPluginManager.broken` with nothing of it registered, and the others still register.
    A name registered by two plugins raises, naming both: the user must choose."""
    manager = manager or plugin_manager()
    builtin = DEFAULT_PLUGINS.get(registry.hook, ())
    manager.add_builtins(builtin)
    # segbench's own first, then the others in registration order
    implementations = sorted(
        getattr(manager.hook, registry.hook).get_hookimpls(), key=lambda impl: impl.plugin_name not in builtin
    )
    contract = registry.resolve() if implementations else None
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for implementation in implementations:
        owner = implementation.plugin_name
        module = getattr(implementation.plugin, "__name__", type(implementation.plugin).__name__)
        staged: dict[str, Any] = {}

        def register(*args: Any, owner: str = owner, module: str = module, staged: dict[str, Any] = staged) -> None:
            where = f"{registry.hook}: plugin '{owner}' ({module})"
            if len(args) != (2 if registry.keyed else 1):
                takes = "register(name, value)" if registry.keyed else "register(value)"
                raise PluginContractError(f"{where} called register with {len(args)} argument(s); it takes {takes}")
            value = args[-1]
            problem = registry.check(value, contract)
            if problem:
                raise PluginContractError(f"{where} registered {problem}")
            try:
                name = args[0] if registry.keyed else registry.name_of(value)
            except (AttributeError, TypeError) as error:
                raise PluginContractError(f"{where} registered a {registry.what} without a name: {error}") from error
            if name in staged:
                raise PluginContractError(f"{where} registered the {registry.what} '{name}' twice")
            staged[name] = value

        others = [other.plugin for other in implementations if other is not implementation]
        alone = manager.subset_hook_caller(registry.hook, remove_plugins=others)
        try:
            alone(register=register)
        except Exception as error:  # a plugin whose hook fails is broken like one that fails to import
            manager.broken.append(BrokenPlugin(owner, registry.hook, module, _last_line(error)))
            continue
        for name, value in staged.items():
            if name in found:
                raise SegbenchError(f"{registry.hook}: '{name}' is registered twice ({owners[name]} and {owner})")
            found[name] = value
            owners[name] = owner
    return found


@cache
def adapters() -> dict[str, type[Adapter]]:
    """Adapter classes by name, from every plugin that loaded (see :func:`broken_plugins` for the others)."""
    return dict(sorted(collect(ADAPTERS).items()))


@cache
def readers() -> dict[str, type]:
    """Reader classes (subclasses of :class:`segbench.data.readers.base.Reader`) by the name a task's
    ``[data] reader`` gives."""
    return collect(READERS)


@cache
def executors() -> dict[str, Callable[..., Any]]:
    """Executor factories by the name ``segbench run --executor`` gives."""
    return collect(EXECUTORS)


@cache
def protocols() -> dict[str, type]:
    """Protocol kind classes by their ``kind``."""
    return collect(PROTOCOLS)


@cache
def metrics() -> dict[str, Any]:
    """Metric specs by name (:class:`segbench.measuring.metric_table.MetricSpec`)."""
    return collect(METRICS)


def broken_plugins() -> list[BrokenPlugin]:
    """The plugins that failed to load so far (call :func:`adapters` first to try the adapter modules)."""
    return list(plugin_manager().broken)


def plugin_warnings() -> list[str]:
    """Warnings about the plugins loaded so far (modules that register nothing, unknown hook names)."""
    return list(plugin_manager().warnings)


@cache
def report_plugin_manager() -> SegbenchPluginManager:
    """The plugins of ``segbench report`` alone (entry-point group ``segbench.report``): publishing a
    leaderboard never imports model code."""
    manager = SegbenchPluginManager()
    manager.load_entry_points(REPORT_ENTRY_POINT_GROUP)
    return manager


def _report_plugins_loaded(manager: SegbenchPluginManager) -> None:
    """A site is published whole or not at all: a report plugin that failed stops the build."""
    if manager.broken:
        raise SegbenchError(
            "report plugins failed to load: " + "; ".join(f"{b.name} ({b.module}: {b.error})" for b in manager.broken)
        )


def report_template_dirs() -> list[Path]:
    """Template directories of every report plugin (``segbench_report_template_dirs``)."""
    manager = report_plugin_manager()
    _report_plugins_loaded(manager)
    found = manager.hook.segbench_report_template_dirs()
    return [Path(directory) for directories in found for directory in directories]


def pages() -> dict[str, Any]:
    """The pages of the site (:class:`segbench.reporting.site_pages.Page`) by name: the built-in ones, then
    those of report plugins (``segbench_register_pages``), in registration order."""
    manager = report_plugin_manager()
    found = collect(PAGES, manager)
    _report_plugins_loaded(manager)
    return found


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """ "unknown adapter 'x'; did you mean 'y'? (known: ...)": the message for a name that is not there."""
    known = sorted(known)
    near = closest(name, known)
    hint = f"; did you mean '{near}'?" if near else ""
    return f"unknown {kind} '{name}'{hint} (known: {', '.join(known) or 'none'})"


def adapter_class(name: str) -> type[Adapter]:
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
