"""``segbench report``: one or more runs → a static leaderboard site that works from ``file://`` and
offline (no server, no CDN): ``index.html`` (overview by task family), a page per task, per adapter
and per task's case drill-down, ``runs.html`` (provenance), SVG figures, overlay images, and
``leaderboard.json`` for machines.

Publishing is safe and reproducible: pages see each run's manifest only in its publishable form
(:func:`segbench.reporting.publishing.publishable`: no host names, no machine paths); an incomplete run puts a
banner on every page; the same runs give the same bytes (no build time anywhere, sorted JSON keys,
seeded SVG ids). The site is built in a staging folder inside ``--out`` and moved into place, and
``.segbench-site.json`` lists every file it wrote: the next build replaces those and deletes the ones
it no longer writes (no stale pages), and never touches a file it did not write. A non-empty folder
without that list is refused, so a report cannot litter (or later clean) a folder that is not a site.

Templates are jinja2, autoescaped. A lab brands its pages with its own templates: directories given
with ``--template-dir`` or by plugins (``segbench_report_template_dirs``) come before the built-in
ones (a jinja2 ChoiceLoader, as datasette does), and the built-in ones stay reachable as
``segbench/NAME``.

Pages are registered parts (:mod:`segbench.reporting.site_pages`): the build renders every page
registered through ``segbench_register_pages``, the built-in ones and any a report plugin adds; two
pages that would write the same file stop the build, naming both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from segbench import __version__, plugins
from segbench.errors import SegbenchError
from segbench.reporting.figures import Writing, start_writing
from segbench.reporting.leaderboard_json import document
from segbench.reporting.pages import LoadedRun, SiteBuilder, combined_cases, load_runs, slug
from segbench.reporting.publishing import (
    Completeness,
    completeness,
    publishable_cases,
    publishable_manifest,
    scrub_text,
)
from segbench.reporting.ranking import ALPHA

STATIC_FILES = ("style.css", "sort.js")
RESERVED_FILES = (*STATIC_FILES, "leaderboard.json")  # written by the build, never by a page
SITE_MANIFEST = ".segbench-site.json"  # the files the last build wrote, relative to the site folder
STAGE_PREFIX = ".segbench-build-"  # a build's staging folder inside the site folder

__all__ = ["LoadedRun", "build_site", "combined_cases", "load_runs", "slug"]


def _number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _significant(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures, in plain notation: 12345.6 -> "12300", 9.996 -> "10.0"."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def _duration(milliseconds: float | None) -> str:
    """A time given in ms, as s from 1 s up and as ms below, to three significant figures:
    1530.2 -> "1.53 s", 168.4 -> "168 ms", 999.7 -> "1.00 s"."""
    if milliseconds is None or not math.isfinite(milliseconds):
        return "n/a"
    if abs(float(f"{milliseconds:.3g}")) >= 1000:
        return f"{_significant(milliseconds / 1000)} s"
    return f"{_significant(milliseconds)} ms"


def _p_value(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _environment(template_dirs: Sequence[Path] = ()) -> jinja2.Environment:
    builtin = jinja2.PackageLoader("segbench.reporting", "templates")
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader([str(d) for d in template_dirs]),
                jinja2.PrefixLoader({"segbench": builtin}),
                builtin,
            ]
        ),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = _number
    environment.filters["p_value"] = _p_value
    environment.filters["sig"] = _significant
    environment.filters["duration"] = _duration
    environment.filters["scrub"] = scrub_text  # any free text a page shows that may hold a machine path
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


def _written_before(out: Path) -> list[str]:
    """The files the previous build wrote into ``out``; refuses a non-empty folder that is not a site."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise SegbenchError(f"--out {out} is a file, not a folder")
    for leftover in out.glob(f"{STAGE_PREFIX}*"):  # the staging folder of a build that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    listing = out / SITE_MANIFEST
    if not listing.is_file():
        if any(out.iterdir()):
            raise SegbenchError(
                f"--out {out} is not empty and is not a segbench site (it has no {SITE_MANIFEST}): "
                "segbench report writes into an empty folder or one it wrote before, where it "
                "replaces exactly the files it wrote; choose another folder or empty this one"
            )
        return []
    try:
        files = json.loads(listing.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SegbenchError(
            f"{listing} is not a segbench site listing ({error}); delete it to rebuild the site into {out}"
        ) from error
    safe = []
    for name in files:
        relative = Path(str(name))
        if relative.is_absolute() or ".." in relative.parts or str(name) == SITE_MANIFEST:
            raise SegbenchError(f"{listing} names '{name}', which is not a file inside the site")
        safe.append(relative.as_posix())
    return safe


def _move_into_place(stage: Path, out: Path, before: list[str]) -> None:
    """Move every file of ``stage`` into ``out``, delete what ``before`` lists and this build did not
    write, and record the new list. A file the builds did not write is never deleted."""
    written = sorted(path.relative_to(stage).as_posix() for path in stage.rglob("*") if path.is_file())
    for name in written:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / name, out / name)
    for name in sorted(set(before) - set(written)):
        stale = out / name
        stale.unlink(missing_ok=True)
        for folder in stale.parents:  # folders the stale file leaves empty go too
            if folder == out or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
    listing = {"generator": "segbench report", "files": written}
    (out / SITE_MANIFEST).write_text(json.dumps(listing, indent=1) + "\n", encoding="utf-8")


def publishable_runs(runs: list[LoadedRun]) -> tuple[list[LoadedRun], list[Completeness]]:
    """The runs with their manifests and rows in publishable form, and how complete each run is."""
    states = [completeness(run.run_id, index, run.manifest, run.cases) for index, run in enumerate(runs, start=1)]
    return [
        dataclasses.replace(run, manifest=publishable_manifest(run.manifest), cases=publishable_cases(run.cases))
        for run in runs
    ], states


def build_site(
    run_dirs: list[Path],
    out: Path,
    title: str = "segbench leaderboard",
    base_url: str | None = None,
    extra_template_dirs: Sequence[Path] = (),
) -> Path:
    """Write the site for ``run_dirs`` into ``out`` and return the path of its ``index.html``."""
    base_url = _normalised_base_url(base_url)
    overrides = template_dirs(extra_template_dirs)
    before = _written_before(out)
    runs, states = publishable_runs(load_runs(run_dirs))
    site = SiteBuilder(runs).build()
    environment = _environment(overrides)
    incomplete = [state for state in states if not state.complete]
    planned = [(page, list(page.files(site))) for page in plugins.pages().values()]
    nav = [{"href": files[0][0], "label": page.nav} for page, files in planned if page.nav and files]
    common: dict[str, Any] = {
        "nav": nav,  # links to the pages that ask for one (plugins'), after the built-in links
        "title": title,
        "version": __version__,
        "base_url": base_url,
        "site": site,
        "alpha": ALPHA,
        "incomplete": incomplete,
        "completeness": states,
    }
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    drawing = Writing()
    try:

        def write(filename: str, template: str, **context: Any) -> None:
            page = environment.get_template(template).render(**common, filename=filename, **context)
            (stage / filename).write_text(page, encoding="utf-8")

        (stage / "figures").mkdir()
        drawing = start_writing([f for task in site.tasks for f in task.figures], stage / "figures")
        for task in site.tasks:
            for section in task.sections:
                for overlay in section.overlays:
                    overlay.write(stage)
        writer: dict[str, str] = {}  # filename -> the page that wrote it
        for page, files in planned:
            for filename, context in files:
                if filename in writer or filename in RESERVED_FILES:
                    by = f"the page '{writer[filename]}'" if filename in writer else "segbench report itself"
                    raise SegbenchError(f"page '{page.name}' writes {filename}, which {by} writes")
                writer[filename] = page.name
                write(filename, page.template, **{"page": Path(filename).stem, **context})
        _copy_static(environment, overrides, stage)
        text = json.dumps(
            document(site, title, base_url, __version__, states), indent=1, allow_nan=False, default=str, sort_keys=True
        )
        (stage / "leaderboard.json").write_text(text + "\n", encoding="utf-8")
        drawing.wait()
        _move_into_place(stage, out, before)
    finally:
        drawing.cancel()  # a failed build stops its figure workers before the stage goes
        shutil.rmtree(stage, ignore_errors=True)
    return out / "index.html"
