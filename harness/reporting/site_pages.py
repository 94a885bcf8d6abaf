"""The pages of the leaderboard site, as registered parts.

Every page, segbench's own included, is a :class:`Page` registered through the
``segbench_register_pages`` hook: ``segbench report`` renders each registered page's files, and a
report plugin (entry-point group ``segbench.report``) adds a page of its own exactly as this module
adds the built-in ones (with its template in a ``segbench_report_template_dirs`` directory). A page
writes one file (the overview) or one per task or adapter; its files are listed in the site's
``.segbench-site.json`` like every other file of the build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from segbench.hookspecs import hookimpl
from segbench.reporting.cards import LEGEND, ZERO_SHOT_VIEW_RULE
from segbench.reporting.pages import Site

PageFiles = Iterable[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Page:
    """One page of the site.

    ``files(site)`` gives ``(filename, context)`` for every file the page writes, each rendered with
    ``template``; the context joins the one every page gets (``title``, ``site``, ``version``,
    ``base_url``, ``incomplete``, ...) and its ``page`` key (the navigation's current page) defaults to
    the file's name without ``.html``. ``nav`` is the label of a link to the page's first file in every
    page's navigation (None: no link, as for pages reached from others)."""

    name: str
    template: str
    files: Callable[[Site], PageFiles]
    nav: str | None = None


def _index(site: Site) -> PageFiles:
    return [("index.html", {"page": "index", "zero_shot_legend": LEGEND})]


def _zero_shot(site: Site) -> PageFiles:
    return [("zero-shot.html", {"zero_shot_legend": LEGEND, "zero_shot_rule": ZERO_SHOT_VIEW_RULE})]


def _tasks(site: Site) -> PageFiles:
    return [(f"task-{task.slug}.html", {"page": f"task-{task.slug}", "task": task}) for task in site.tasks]


def _cases(site: Site) -> PageFiles:
    return [(f"cases-{task.slug}.html", {"page": f"task-{task.slug}", "task": task}) for task in site.tasks]


def _adapters(site: Site) -> PageFiles:
    return [
        (f"adapter-{adapter.slug}.html", {"page": f"adapter-{adapter.slug}", "adapter": adapter})
        for adapter in site.adapters
    ]


def _runs(site: Site) -> PageFiles:
    return [("runs.html", {"page": "runs"})]


# in the order the site is written; the navigation's built-in links stay in base.html
BUILTIN_PAGES = (
    Page("index", "index.html", _index),
    Page("task", "task.html", _tasks),
    Page("cases", "cases.html", _cases),
    Page("adapter", "adapter.html", _adapters),
    Page("runs", "runs.html", _runs),
    Page("zero-shot", "zero_shot.html", _zero_shot, nav="Zero-shot view"),
)


@hookimpl
def segbench_register_pages(register: Callable[[Page], None]) -> None:
    for page in BUILTIN_PAGES:
        register(page)
