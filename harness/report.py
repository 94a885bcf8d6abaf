"""``segbench report``: one or more runs → a static leaderboard site (jinja2, autoescaped, no server,
no CDN): ``index.html``, one page per task, and the provenance of every run."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from segbench import __version__
from segbench.aggregate import LeaderboardRow, leaderboard
from segbench.errors import SegbenchError
from segbench.store import RunStore

STATIC_FILES = ("style.css", "sort.js")


@dataclass
class LoadedRun:
    store: RunStore
    manifest: dict[str, Any]
    cases: pl.DataFrame


def load_runs(run_dirs: list[Path]) -> list[LoadedRun]:
    runs = []
    for run_dir in run_dirs:
        store = RunStore(run_dir)
        runs.append(LoadedRun(store, store.read_manifest(), store.read_cases()))
    if not runs:
        raise SegbenchError("no run directories given")
    return runs


def combined_cases(runs: list[LoadedRun]) -> pl.DataFrame:
    """All rows; an adapter that appears in several runs is shown as ``adapter@run`` per run."""
    frame = pl.concat([run.cases for run in runs], how="vertical")
    runs_per_adapter = frame.group_by("adapter").agg(pl.col("run_id").n_unique().alias("n"))
    ambiguous = set(runs_per_adapter.filter(pl.col("n") > 1)["adapter"].to_list())
    if ambiguous:
        frame = frame.with_columns(
            pl.when(pl.col("adapter").is_in(list(ambiguous)))
            .then(pl.col("adapter") + "@" + pl.col("run_id")).otherwise(pl.col("adapter")).alias("adapter"))
    return frame


def slug(name: str) -> str:
    """A file-name-safe, unique form of a task name."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "task"
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:6]}" if safe != name else safe


def _number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("segbench", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = _number
    environment.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, default=str)
    return environment


def _task_tables(rows: list[LeaderboardRow]) -> dict[str, list[LeaderboardRow]]:
    tables: dict[str, list[LeaderboardRow]] = {}
    for row in rows:
        tables.setdefault(row.prompt, []).append(row)
    return tables


def build_site(run_dirs: list[Path], out: Path, title: str = "segbench leaderboard") -> Path:
    runs = load_runs(run_dirs)
    frame = combined_cases(runs)
    rows = leaderboard(frame)
    tasks = sorted({row.task for row in rows})
    out.mkdir(parents=True, exist_ok=True)
    environment = _environment()
    common = {"title": title, "version": __version__, "tasks": [(t, slug(t)) for t in tasks]}
    task_info = {}
    for run in runs:
        task_info.update(run.manifest.get("tasks", {}))

    by_task: dict[str, list[LeaderboardRow]] = {t: [r for r in rows if r.task == t] for t in tasks}
    (out / "index.html").write_text(environment.get_template("index.html").render(
        **common, page="index", by_task=by_task, runs=[r.manifest for r in runs], slug=slug))
    for task in tasks:
        labels = sorted(frame.filter((pl.col("task") == task) & (pl.col("label") != "*"))["label"].unique())
        per_label = {label: _task_tables(leaderboard(frame.filter(pl.col("task") == task), label=label))
                     for label in labels}
        (out / f"task-{slug(task)}.html").write_text(environment.get_template("task.html").render(
            **common, page=task, task=task, info=task_info.get(task, {}), tables=_task_tables(by_task[task]),
            per_label=per_label))
    (out / "runs.html").write_text(environment.get_template("runs.html").render(
        **common, page="runs", runs=[r.manifest for r in runs]))
    templates = importlib.resources.files("segbench").joinpath("templates")
    for name in STATIC_FILES:
        with importlib.resources.as_file(templates.joinpath(name)) as source:
            shutil.copyfile(source, out / name)
    return out / "index.html"
