"""What the leaderboard shows, computed from runs: ranked tables with paired tests (per task, protocol
and label, and the task's headline over its labels, by ``segbench.reporting.aggregate.AGGREGATION_RULE``), the
overview matrix (adapter x task and label, with a mean rank), figures, step and support curves, case
drill-downs per task, and every adapter's results across tasks. Plain data, rendered by the templates
(``segbench.reporting.report``) and written to ``leaderboard.json``.

What a table needs from the run manifests: ``planned`` (the cases each adapter was to run, so a unit
that never ran counts as missing) and each adapter's ``family`` (``baseline``: an unranked reference
row). Runs made before either was recorded read as nothing planned and no baselines.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from segbench.errors import SegbenchError
from segbench.measuring.metric_table import BUILTIN_METRICS, MetricSpec, shown_metrics, summaries_text
from segbench.protocols.base import NOT_TAKEN
from segbench.reporting import figures
from segbench.reporting.aggregate import (
    AGGREGATION_RULE,
    Table,
    TableScores,
    aggregation_rule,
    final_steps,
    tables,
    unit_of,
    with_contract_columns,
)
from segbench.reporting.cards import zero_shot, zero_shot_keep
from segbench.reporting.curves import (
    SUPPORT_COLUMN,
    ChallengeCase,
    CostCurve,
    StepCurve,
    SupportCurve,
    challenge_cases,
    cost_curves,
    is_challenge,
    is_iterative,
    not_taken,
    split_support_sizes,
    step_curves,
    support_curves,
)
from segbench.reporting.figures import Figure, Style
from segbench.reporting.overlays import Drilldown, drilldown
from segbench.reporting.ranking import RankedRow, rank_rows, rank_table
from segbench.running.kept_masks import SavedPrediction, saved_predictions
from segbench.running.manifest import RunManifest, TaskRecord
from segbench.running.store import RunStore

FAMILY_2D = "2D images"
FAMILY_3D = "3D volumes"
FAMILY_IN_CONTEXT = "In-context (support sets)"
FAMILY_ORDER = (FAMILY_2D, FAMILY_3D, FAMILY_IN_CONTEXT)


@dataclass
class LoadedRun:
    store: RunStore
    manifest: RunManifest
    cases: pl.DataFrame

    @property
    def run_id(self) -> str:
        return self.manifest.run_id or self.store.dir.name


def load_runs(run_dirs: list[Path]) -> list[LoadedRun]:
    runs = []
    for run_dir in run_dirs:
        store = RunStore(run_dir)
        runs.append(LoadedRun(store, store.manifest(), store.read_cases()))
    if not runs:
        raise SegbenchError("no run directories given")
    seen: dict[str, Path] = {}
    for run in runs:
        if run.run_id in seen:
            raise SegbenchError(
                f"{seen[run.run_id]} and {run.store.dir} have the same run id '{run.run_id}': "
                "make one of them again with another --run-id"
            )
        seen[run.run_id] = run.store.dir
    return runs


def _identity(run: LoadedRun, adapter: str) -> tuple[Any, ...]:
    """What must be equal for two runs' results of an adapter to be shown as one adapter's."""
    facts = run.manifest.adapter(adapter)
    return (facts.version, facts.weights, facts.checkpoint_sha256, facts.precision, run.manifest.device)


def display_names(runs: list[LoadedRun]) -> dict[tuple[str, str], str]:
    """(run id, adapter) → the adapter's name on the site. Runs of the same adapter (same version,
    weights, checkpoint, precision and device) on different tasks show as one adapter; otherwise
    each run's is ``adapter@run``."""
    owners: dict[str, list[LoadedRun]] = defaultdict(list)
    for run in runs:
        for adapter in run.cases["adapter"].unique().to_list():
            owners[adapter].append(run)
    names = {}
    for adapter, owned in owners.items():
        tasks = [set(run.cases.filter(pl.col("adapter") == adapter)["task"].unique()) for run in owned]
        disjoint = sum(len(t) for t in tasks) == len(set().union(*tasks))
        one = disjoint and len({_identity(run, adapter) for run in owned}) == 1
        for run in owned:
            names[(run.run_id, adapter)] = adapter if one else f"{adapter}@{run.run_id}"
    return names


def combined_cases(runs: list[LoadedRun]) -> pl.DataFrame:
    """All rows under their site names; runs written by other segbench versions may lack columns."""
    names = display_names(runs)
    frames = [
        run.cases.with_columns(
            pl.col("adapter").replace(
                {adapter: names[(run.run_id, adapter)] for adapter in run.cases["adapter"].unique().to_list()}
            )
        )
        for run in runs
    ]
    return pl.concat(frames, how="diagonal_relaxed")


def slug(name: str) -> str:
    """A file-name-safe, unique form of a name."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "x"
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:6]}" if safe != name else safe


@dataclass(frozen=True)
class RankedTable:
    prompt: str
    label: str | None  # None: every label
    rows: list[RankedRow]
    metrics: tuple[MetricSpec, ...] = BUILTIN_METRICS  # the table's metric columns, the headline first
    scores: TableScores | None = None  # the paired scores behind the ranks (to rank a subset again)


@dataclass
class PromptSection:
    prompt: str
    table: RankedTable
    label_tables: list[RankedTable]
    figures: list[Figure]
    overlays: Drilldown  # iterates over the overlay images to write


@dataclass(frozen=True)
class IterativeSection:
    prompt: str
    curves: list[StepCurve]
    figure: Figure
    not_taken: list[str] = field(default_factory=list)  # adapters that took the first step alone
    cases: list[ChallengeCase] = field(default_factory=list)  # the CVPR 2025 case scores (cvpr25 kinds)


@dataclass
class TaskPage:
    name: str
    slug: str
    info: dict[str, Any]
    family: str
    sections: list[PromptSection]
    iterative: list[IterativeSection]
    support: list[SupportCurve]
    support_figure: Figure | None
    unit: str = "mm"  # of HD95 and the NSD tolerance: "px" where the images have no spacing
    metrics: tuple[MetricSpec, ...] = BUILTIN_METRICS  # the metrics its rows carry, the headline first
    cost: list[CostCurve] = field(default_factory=list)  # Dice against interaction cost, every prompt protocol
    cost_figure: Figure | None = None

    @property
    def figures(self) -> list[Figure]:
        found = [f for s in self.sections for f in s.figures] + [s.figure for s in self.iterative]
        found += [self.cost_figure] if self.cost_figure else []
        return found + ([self.support_figure] if self.support_figure else [])

    @property
    def has_drilldown(self) -> bool:
        return any(section.overlays for section in self.sections)


@dataclass(frozen=True)
class AdapterResult:
    task: TaskPage
    prompt: str
    row: RankedRow
    ranked: int  # how many adapters were ranked in that table


@dataclass
class AdapterPage:
    name: str  # as on the site (``adapter@run`` when several runs have it)
    slug: str
    adapter: str  # as in its runs
    runs: list[tuple[int, str]]  # (1-based position on the provenance page, run id) of the runs it comes from
    facts: dict[str, Any]  # the (first) run manifest's record of the adapter
    style: Style
    results: list[AdapterResult] = field(default_factory=list)


@dataclass(frozen=True)
class OverviewColumn:
    """One column of the overview matrix: a task's headline for one protocol, or one of its labels."""

    task: TaskPage
    prompt: str
    label: str | None  # None: the task's headline (macro mean over labels)
    rows: list[RankedRow]
    several_prompts: bool  # the task has more than one protocol, so the header names it
    several_labels: bool  # the task has more than one label: the headline column is their macro mean

    @property
    def title(self) -> str:
        return self.task.name + (f" ({self.prompt})" if self.several_prompts else "")

    def cell(self, adapter: str) -> RankedRow | None:
        return next((r for r in self.rows if r.row.adapter == adapter), None)


@dataclass(frozen=True)
class OverviewRow:
    adapter: str
    baseline: bool
    cells: list[RankedRow | None]  # one per column
    mean_rank: float | None  # over the headline columns in which the adapter is ranked
    ranked_in: list[str]  # those columns' titles


@dataclass(frozen=True)
class Overview:
    columns: list[OverviewColumn]
    rows: list[OverviewRow]

    @property
    def headline_columns(self) -> list[OverviewColumn]:
        return [column for column in self.columns if column.label is None]


def _kept_rows(table: RankedTable, task: str, keep: Callable[[str, str], bool] | None) -> list[RankedRow]:
    """The table's ranked rows, or, with ``keep``, the rows it keeps ranked again among themselves."""
    if keep is None:
        return table.rows
    rows = [r.row for r in table.rows if keep(r.row.adapter, task)]
    if table.scores is None:
        raise SegbenchError(f"task {task}: a table without its scores cannot be ranked again")
    return rank_rows(rows, table.scores)


def overview(tasks: list[TaskPage], keep: Callable[[str, str], bool] | None = None) -> Overview:
    """Adapter x (task, protocol) headline, plus a column per label where a task has several; adapters
    ordered by their mean rank over the headline columns they are ranked in (baselines after them).
    With ``keep(adapter, task)`` (the zero-shot view), only the pairs it keeps, ranked again among themselves."""
    columns = []
    for task in tasks:
        several = len(task.sections) > 1
        for section in task.sections:
            labelled = len(section.label_tables) > 1
            headline = _kept_rows(section.table, task.name, keep)
            columns.append(OverviewColumn(task, section.prompt, None, headline, several, labelled))
            if labelled:
                columns += [
                    OverviewColumn(
                        task, section.prompt, table.label, _kept_rows(table, task.name, keep), several, labelled
                    )
                    for table in section.label_tables
                ]
    adapters = sorted({r.row.adapter for column in columns for r in column.rows})
    rows = []
    for adapter in adapters:
        cells = [column.cell(adapter) for column in columns]
        ranked = [
            (column.title, cell.rank)
            for column, cell in zip(columns, cells, strict=True)
            if column.label is None and cell is not None and cell.rank is not None
        ]
        baseline = any(cell is not None and cell.row.baseline for cell in cells)
        mean_rank = sum(rank for _, rank in ranked) / len(ranked) if ranked else None
        rows.append(OverviewRow(adapter, baseline, cells, mean_rank, [title for title, _ in ranked]))
    rows.sort(key=lambda r: (r.mean_rank is None, r.mean_rank or 0.0, r.adapter))
    return Overview(columns, rows)


@dataclass
class Site:
    runs: list[dict[str, Any]]
    tasks: list[TaskPage]
    adapters: list[AdapterPage]
    families: dict[str, list[TaskPage]]
    palette: dict[str, Style]
    overview: Overview | None = None
    rule: str = AGGREGATION_RULE  # the rule for the site's metric table (``metrics``)
    metrics: tuple[MetricSpec, ...] = BUILTIN_METRICS
    zero_shot_overview: Overview | None = None  # the overview without the pairs known not to be zero-shot

    def zero_shot(self, adapter: str, task: str) -> bool | None:
        """Whether ``task``'s dataset is outside ``adapter``'s training data (reporting/cards.py; None: unknown)."""
        card = next((page.facts.get("card") for page in self.adapters if page.name == adapter), None)
        info = next((page.info for page in self.tasks if page.name == task), {})
        return zero_shot(info.get("origin"), card)

    @property
    def summaries(self) -> str:
        """How each metric is summarised, for the pages' footer: "Dice and NSD: mean, HD95: median"."""
        return summaries_text(self.metrics)


def family(info: TaskRecord, has_support: bool) -> str:
    """A task's family on the overview: its ``family`` when the manifest names one, else by kind."""
    if info.family:
        return info.family
    if has_support:
        return FAMILY_IN_CONTEXT
    return FAMILY_3D if info.dim == 3 else FAMILY_2D


def _saved_by_task(runs: list[LoadedRun]) -> dict[str, dict[tuple[str, str], SavedPrediction]]:
    names = display_names(runs)
    saved: dict[str, dict[tuple[str, str], SavedPrediction]] = defaultdict(dict)
    for run in runs:
        for sample in saved_predictions(run.store.dir):
            name = names.get((run.run_id, sample.meta["adapter"]))
            if name is not None:
                saved[sample.meta["task"]][(name, sample.meta["case_id"])] = sample
    return saved


def planned_cases(runs: list[LoadedRun]) -> dict[tuple[str, str], set[str]]:
    """(site name of the adapter, task) → the case ids the runs' manifests planned for it (``planned``:
    ``{"<adapter>/<task>": [case_id, ...]}``; runs made before it was recorded plan nothing)."""
    names = display_names(runs)
    planned: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run in runs:
        for adapter, task, case in run.manifest.planned_units() or ():
            planned[(names.get((run.run_id, adapter), adapter), task)].add(case)
    return dict(planned)


def baseline_adapters(runs: list[LoadedRun]) -> set[str]:
    """Site names of the adapters whose manifest family is ``baseline``."""
    names = display_names(runs)
    return {
        names.get((run.run_id, adapter), adapter)
        for run in runs
        for adapter, facts in run.manifest.adapters.items()
        if facts.family == "baseline"
    }


def _measured(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows whose accuracy means something (not made with random weights)."""
    return frame.filter(pl.col("weights") != "random")


class SiteBuilder:
    """Computes every page's content: data, and the figures and overlays to draw (not drawn yet)."""

    def __init__(self, runs: list[LoadedRun]):
        self.runs = runs
        frame = combined_cases(runs)
        self.not_taken = not_taken(frame)  # shown beside the curves; otherwise not_taken rows are no rows
        self.frame = frame.filter(pl.col("status") != NOT_TAKEN)
        self.metrics = shown_metrics(self.frame.columns)  # every metric some run's rows carry
        self.tables_frame = split_support_sizes(self.frame)
        self.final = _measured(final_steps(self.tables_frame.filter(pl.col("status") == "ok")))
        self.final_by_task = self.final.partition_by("task", as_dict=True)
        adapters = sorted(self.frame["adapter"].unique().to_list())
        self.palette = figures.styles(adapters)
        self.saved = _saved_by_task(runs)
        self.info: dict[str, TaskRecord] = {}
        for run in runs:
            self.info.update(run.manifest.tasks)

    def _final(self, task: str) -> pl.DataFrame:
        return self.final_by_task.get((task,), self.final.clear())

    def _section(
        self, task: str, task_slug: str, prompt: str, headline: Table, by_label: list[Table], swept: bool
    ) -> PromptSection:
        """One protocol's tables, figures and overlays; a protocol of a support-size sweep (``swept``)
        leaves its figures to the task's support-size curve."""
        final = self._final(task).filter(pl.col("prompt") == prompt)
        rows = headline.rows
        table = RankedTable(prompt, None, rank_table(headline), headline.metrics, headline.scores)
        label_tables = [RankedTable(prompt, t.label, rank_table(t), t.metrics, t.scores) for t in by_label]
        subject = f"task {task}, prompt {prompt}"
        name = f"{task_slug}-{slug(prompt)}"
        # every adapter with a Dice, baselines included, in table order; the penalties are in the values
        order = [r.row.adapter for r in table.rows if r.row.adapter in headline.scores.dice]
        values = {a: headline.scores.pair_dice(a) for a in order}
        shown = (
            [
                figures.dice_distribution(f"{name}-dice", values, self.palette, subject),
                figures.speed_accuracy(f"{name}-speed", rows, self.palette, subject),
            ]
            if values and not swept
            else []
        )
        failed = _measured(
            self.tables_frame.filter(
                (pl.col("task") == task) & (pl.col("status") != "ok") & pl.col("prompt").is_in([prompt, "*"])
            )
        )
        overlays = drilldown(
            final,
            failed,
            self.saved.get(task, {}),
            prompt,
            [r.row.adapter for r in table.rows],
            f"cases/{task_slug}",
            headline.metrics,
        )
        return PromptSection(prompt, table, label_tables, shown, overlays)

    def task_page(self, task: str, task_tables: list[Table]) -> TaskPage:
        task_slug = slug(task)
        task_frame = self.tables_frame.filter(pl.col("task") == task)
        headlines = {t.prompt: t for t in task_tables if t.label is None}
        task_ok = self.frame.filter((pl.col("task") == task) & (pl.col("status") == "ok"))
        support = support_curves(_measured(final_steps(task_ok)))
        swept = (
            set(self._final(task).filter(pl.col(SUPPORT_COLUMN).is_not_null())["prompt"].unique())
            if any(len(curve.sizes) > 1 for curve in support)
            else set()
        )
        sections = [
            self._section(
                task,
                task_slug,
                prompt,
                headline,
                [t for t in task_tables if t.prompt == prompt and t.label is not None],
                prompt in swept,
            )
            for prompt, headline in headlines.items()
        ]
        iterative = []
        measured_ok = _measured(task_frame.filter(pl.col("status") == "ok"))
        for prompt in headlines:
            steps = measured_ok.filter(pl.col("prompt") == prompt)
            short = self.not_taken.get((task, prompt), [])
            if is_iterative(steps) or short:
                curves = step_curves(steps, short)
                figure = figures.step_curves(
                    f"{task_slug}-{slug(prompt)}-steps", curves, self.palette, f"task {task}, prompt {prompt}"
                )
                cases = challenge_cases(steps) if is_challenge(prompt) else []
                iterative.append(IterativeSection(prompt, curves, figure, short, cases))
        cost = cost_curves(measured_ok)
        cost_figure = (
            figures.cost_curves(f"{task_slug}-cost", cost, self.palette, f"task {task}") if iterative and cost else None
        )
        support_figure = (
            figures.support_curves(f"{task_slug}-support", support, self.palette, f"task {task}") if support else None
        )
        info = self.info.get(task) or TaskRecord()
        return TaskPage(
            task,
            task_slug,
            info.to_dict(),
            family(info, bool(support)),
            sections,
            iterative,
            support,
            support_figure,
            unit_of(with_contract_columns(task_frame)),
            next(iter(task_tables)).metrics if task_tables else BUILTIN_METRICS,
            cost if cost_figure else [],
            cost_figure,
        )

    def _inputs(self, adapter: str, owned: list[tuple[int, LoadedRun, str]]) -> list[str]:
        """The inputs its rows record the adapter got ("rgb8", "raw"); none for runs that did not record it."""
        if "input" not in self.frame.columns:
            return []
        runs = [run.run_id for _, run, _ in owned]
        rows = self.frame.filter((pl.col("adapter") == adapter) & pl.col("run_id").is_in(runs))
        return sorted(rows["input"].drop_nulls().unique().to_list())

    def adapter_pages(self, tasks: list[TaskPage]) -> list[AdapterPage]:
        pages = []
        owners: dict[str, list[tuple[int, LoadedRun, str]]] = defaultdict(list)
        for index, run in enumerate(self.runs, start=1):
            for (run_id, adapter), name in display_names(self.runs).items():
                if run_id == run.run_id:
                    owners[name].append((index, run, adapter))
        for name, owned in sorted(owners.items()):
            _, first, adapter = owned[0]
            page = AdapterPage(
                name,
                slug(name),
                adapter,
                [(index, run.run_id) for index, run, _ in owned],
                {**first.manifest.adapter(adapter).to_dict(), "input": self._inputs(adapter, owned)},
                self.palette[name],
            )
            for task in tasks:
                for section in task.sections:
                    ranked = sum(r.rank is not None for r in section.table.rows)
                    page.results += [
                        AdapterResult(task, section.prompt, r, ranked)
                        for r in section.table.rows
                        if r.row.adapter == name
                    ]
            pages.append(page)
        return pages

    def build(self) -> Site:
        by_task: dict[str, list[Table]] = defaultdict(list)
        for table in tables(self.tables_frame, planned_cases(self.runs), baseline_adapters(self.runs), self.metrics):
            by_task[table.task].append(table)
        tasks = [self.task_page(task, task_tables) for task, task_tables in sorted(by_task.items())]
        families: dict[str, list[TaskPage]] = defaultdict(list)
        for task in tasks:
            families[task.family].append(task)
        order = sorted(families, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))
        adapters = self.adapter_pages(tasks)
        keep = zero_shot_keep(
            {a.name: a.facts.get("card") for a in adapters}, {t.name: t.info.get("origin") for t in tasks}
        )
        return Site(
            [run.manifest.to_dict() for run in self.runs],
            tasks,
            adapters,
            {f: families[f] for f in order},
            self.palette,
            overview(tasks),
            aggregation_rule(self.metrics),
            self.metrics,
            overview(tasks, keep),
        )
