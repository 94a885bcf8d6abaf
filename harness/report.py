"""``segbench report``: one or more runs → a static leaderboard site that works from ``file://`` and
offline (no server, no CDN): ``index.html`` (overview by task family), a page per task, per adapter
and per task's case drill-down, ``runs.html`` (provenance), SVG figures, overlay PNGs, and
``leaderboard.json`` for machines.

Templates are jinja2, autoescaped. A lab brands its pages with its own templates: directories given
with ``--template-dir`` or by plugins (``segbench_report_template_dirs``) come before the built-in
ones (a jinja2 ChoiceLoader, as datasette does), and the built-in ones stay reachable as
``segbench/NAME``.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from segbench import __version__, plugins
from segbench.errors import SegbenchError
from segbench.leaderboard_json import document
from segbench.pages import LoadedRun, SiteBuilder, combined_cases, load_runs, slug
from segbench.ranking import ALPHA

STATIC_FILES = ("style.css", "sort.js")

__all__ = ["LoadedRun", "build_site", "combined_cases", "load_runs", "slug"]


def _number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _p_value(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _environment(template_dirs: Sequence[Path] = ()) -> jinja2.Environment:
    builtin = jinja2.PackageLoader("segbench", "templates")
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader([str(d) for d in template_dirs]),
                                    jinja2.PrefixLoader({"segbench": builtin}), builtin]),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = _number
    environment.filters["p_value"] = _p_value
    environment.globals["slug"] = slug
    environment.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, default=str)
    return environment


def template_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Override directories, highest priority first: ``extra`` (``--template-dir``), then plugins'."""
    found = [Path(d) for d in extra] + plugins.report_template_dirs()
    for directory in found:
        if not directory.is_dir():
            raise SegbenchError(f"template directory {directory} does not exist")
    return found


def _normalised_base_url(base_url: str | None) -> str | None:
    if not base_url:
        return None
    if not base_url.startswith(("http://", "https://")):
        raise SegbenchError(f"--base-url must start with http:// or https://, got '{base_url}'")
    return base_url.rstrip("/")


def _copy_static(environment: jinja2.Environment, overrides: Sequence[Path], out: Path) -> None:
    for name in STATIC_FILES:
        source, _, _ = environment.loader.get_source(environment, name)  # type: ignore[union-attr]
        (out / name).write_text(source, encoding="utf-8")
    for directory in reversed(overrides):  # the highest-priority directory's files are copied last
        if (directory / "static").is_dir():
            shutil.copytree(directory / "static", out / "static", dirs_exist_ok=True)


def build_site(run_dirs: list[Path], out: Path, title: str = "segbench leaderboard", base_url: str | None = None,
               extra_template_dirs: Sequence[Path] = ()) -> Path:
    """Write the site for ``run_dirs`` into ``out`` and return the path of its ``index.html``."""
    base_url = _normalised_base_url(base_url)
    overrides = template_dirs(extra_template_dirs)
    runs = load_runs(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    for generated in ("figures", "cases"):
        shutil.rmtree(out / generated, ignore_errors=True)
    site = SiteBuilder(runs).build()
    environment = _environment(overrides)
    common: dict[str, Any] = {"title": title, "version": __version__, "base_url": base_url, "site": site,
                              "alpha": ALPHA}

    def write(filename: str, template: str, **context: Any) -> None:
        page = environment.get_template(template).render(**common, filename=filename, **context)
        (out / filename).write_text(page, encoding="utf-8")

    (out / "figures").mkdir(exist_ok=True)
    write("index.html", "index.html", page="index")
    for task in site.tasks:
        for figure in task.figures:
            figure.write(out / "figures")
        for section in task.sections:
            for overlay in section.overlays:
                overlay.write(out)
        write(f"task-{task.slug}.html", "task.html", page=f"task-{task.slug}", task=task)
        write(f"cases-{task.slug}.html", "cases.html", page=f"task-{task.slug}", task=task)
    for adapter in site.adapters:
        write(f"adapter-{adapter.slug}.html", "adapter.html", page=f"adapter-{adapter.slug}", adapter=adapter)
    write("runs.html", "runs.html", page="runs")
    _copy_static(environment, overrides, out)
    text = json.dumps(document(site, title, base_url, __version__), indent=1, allow_nan=False, default=str)
    (out / "leaderboard.json").write_text(text, encoding="utf-8")
    return out / "index.html"
