"""The plugin hooks of segbench (pluggy). Built-in adapters, readers, executors, protocol kinds, metrics
and pages use them exactly as third-party packages do; the built-ins are the modules listed in
``segbench.plugins.DEFAULT_PLUGINS`` (registered at start-up, no install metadata needed), third-party
plugins are found through the entry-point groups ``segbench.adapters`` and ``segbench.plugins`` (report
plugins: ``segbench.report``). A function named like a hook but without ``@hookimpl`` is never called
(``segbench adapters`` warns about it). What each ``register`` takes is checked when it is called
(``segbench.plugins.Registry``): a plugin that registers something else is listed as broken, naming it.
Every hook is documented in docs/plugins.md (tests/test_plugins.py checks it).

A plugin module looks like::

    from segbench import hookimpl

    @hookimpl
    def segbench_register_adapters(register):
        register(MyAdapter)   # a subclass of segbench.interface.Adapter
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("segbench")
hookimpl = pluggy.HookimplMarker("segbench")


@hookspec
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    """Call ``register(AdapterClass)`` for every adapter class this plugin provides."""


@hookspec
def segbench_register_readers(register: Callable[[str, type], None]) -> None:
    """Call ``register(name, ReaderClass)`` for every task reader this plugin provides; a task file
    selects it with ``[data] reader = "name"``."""


@hookspec
def segbench_register_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Call ``register(name, factory)`` for every executor; ``segbench run --executor name`` selects it."""


@hookspec
def segbench_register_pages(register: Callable[[Any], None]) -> None:
    """Call ``register(Page(...))`` (:class:`segbench.reporting.site_pages.Page`) for every page this plugin
    adds to the leaderboard site: its name, its template (from a ``segbench_report_template_dirs``
    directory) and the files it writes for a site. Like the template hook it is asked only by
    ``segbench report`` and found through the ``segbench.report`` entry-point group."""


@hookspec
def segbench_report_template_dirs() -> list[str]:
    """Return directories of jinja2 templates that override segbench's own leaderboard templates
    (a lab's branding). A template found there replaces the built-in one of the same name; the
    built-in ones stay reachable as ``segbench/NAME`` (e.g. ``{% extends "segbench/base.html" %}``).
    ``style.css`` and ``sort.js`` can be overridden the same way, and the files of a ``static/``
    folder in such a directory are copied to the site's ``static/`` folder (logos, fonts).

    Report plugins are found through their own entry-point group, ``segbench.report``, so that
    publishing a leaderboard never imports model code."""
    raise NotImplementedError  # a specification: pluggy calls the plugins' implementations, never this


@hookspec
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    """Call ``register(ProtocolKindClass)`` for every prompt protocol kind this plugin provides; task and
    suite files name it by the class's ``kind`` (``protocols = [{kind = "my_kind", ...}]``)."""


@hookspec
def segbench_register_metrics(register: Callable[[Any], None]) -> None:
    """Call ``register(MetricSpec(...))`` (:class:`segbench.measuring.metric_table.MetricSpec`) for every
    metric this plugin provides; a task selects metrics with ``[evaluation] metrics = [...]``."""
