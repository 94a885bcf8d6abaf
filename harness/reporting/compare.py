"""``segbench compare BASE NEW``: did a change make a model slower, hungrier or less accurate?

Rows of the two runs are matched on (adapter, task, case, label, prompt, step); every comparison is
paired over the matched cases, per (adapter, task, prompt):

* **accuracy**: mean paired difference of every metric the tables summarise by a mean and both runs'
  rows carry (Dice and NSD by default: ``segbench.measuring.metric_table``; new − base, final prompt step)
  with a 95% percentile bootstrap CI (seeded); a regression when the headline's (Dice's) drop exceeds
  ``--fail-dice`` and the CI excludes zero;
* **speed**: geometric mean of the per-case latency ratios (``total_ms`` new / base), divided by the
  machine's slowdown between the runs, with a 95% Student-t CI on the log ratios; a regression when
  the whole CI lies above ``1 + --fail-speed`` and the median per-case difference is at least
  ``--min-delta-ms`` (default 5 ms: a case of a few milliseconds is timed as much as the scheduler's as the
  model's; the otsu baseline's 2.5 ms cases came out x1.53 slower in a rerun of the same code while another
  job ran on the 2-core VM segbench is developed on, 2026-12-02);
* **memory**: ratio of the median per-case peak memory; a regression when it exceeds ``--fail-memory``
  and the medians differ by at least ``--min-delta-mb`` (default: 256 MB for host RSS on a CPU, whose
  baseline of libraries and allocator caches moves by 100-150 MB between runs of the same code:
  +95 MB and +124 MB for the box and otsu baselines in two `quick` runs here; 16 MB for the CUDA
  allocator's exact peak).

Why speed needs more than asv's "above the factor and significant": the timings of one run share
its machine's state, and on a shared or virtual machine (CPU steal, frequency scaling, a busy
neighbour) a whole stretch of a run can come out 10-30% slower, every case together, which a
per-case paired test reads as a significant slowdown. Measured on the 2-core VM segbench is
developed on: two `quick` runs of the same code differed by up to x1.37 in a 4-case group, with 95%
intervals starting at x1.02-x1.08; on the project's CI runner LiteMedSAM came out x1.22
[1.19, 1.25] in a second run of the same code. So the interval must lie wholly above the limit,
and every few seconds of a run the runner times a fixed matrix product on the case's device
(``probe_ms`` on every row, see ``segbench.measuring.cost.MachineProbe``). A group's *machine ratio* is
the ratio of the two runs' median probe times:

* within ``1 ± --fail-speed`` (a steady machine): the latency ratios are divided by it when it is
  above 1 (never multiplied when below: the probe may excuse a slowdown, never make one);
* beyond it, either way: the machine itself moved by more than the tolerance, and how much of that
  a model feels depends on its threads and kernels (a busy neighbour on one of two cores made the
  probe x3.10 slower and LiteMedSAM's cases x2.14, another time x2.81 and x2.64, and left the
  single-threaded otsu baseline as fast as before), so the group's speed is reported and not
  judged, and the command says so: a slower machine would excuse a slowdown, a faster one would
  hide it.

A 1.5x slower model on a steady machine has its whole interval at x1.5. The manifests' machines
are compared too, and a difference is warned about; ``--fail-speed off`` reports speed without
gating it. A group whose latency or peak memory is 0 or missing in either run (a classical baseline
on CUDA allocates nothing there) has that measure reported as not judged: there is no ratio to form.

**Failed and missing cases.** The statistics above pair the cases that are ``ok`` in both runs, so
on their own they cannot see a case that stopped working. Every group of either run is therefore
also counted case by case: a case (adapter, task, prompt, case) is *failed* in a run when any of its
rows is not ``ok`` (a unit whose case could not be read has prompt ``*`` and is failed under every
prompt of its adapter and task), and *unmatched* when only one run has it. A case that is ok in the
base and failed or missing in the new run is *lost*, and any lost case is a regression: a model must
not pass the gate by failing, and a group the new run lacks altogether loses all its cases. A case
failing in both runs, or one only the new run has, is counted and reported, never a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from segbench.measuring.metric_table import HEADLINE, MetricSpec, shown_metrics
from segbench.protocols.base import NOT_TAKEN
from segbench.reporting.aggregate import as_float, bootstrap_ci, final_steps
from segbench.running.manifest import RunManifest
from segbench.running.store import RunStore

ROW_KEY = ["adapter", "task", "case_id", "label", "prompt", "step"]
GROUP_KEY = ["adapter", "task", "prompt"]
MACHINE_FIELDS = ("cpu", "cpu_count", "platform")


MIN_DELTA_MB_HOST = 256.0  # process RSS (CPU runs)
MIN_DELTA_MB_CUDA = 16.0  # CUDA allocator peak


@dataclass(frozen=True)
class Thresholds:
    speed: float = 0.10  # relative slowdown (math.inf: reported, never a regression)
    memory: float = 0.10  # relative growth of peak memory (math.inf: likewise)
    dice: float = 0.01  # absolute drop of mean Dice
    min_delta_ms: float = 5.0  # median per-case latency differences below this are never a regression
    min_delta_mb: float | None = None  # memory differences below this are never one (None: by device)

    def memory_floor_mb(self, device: str) -> float:
        if self.min_delta_mb is not None:
            return self.min_delta_mb
        return MIN_DELTA_MB_CUDA if device.startswith("cuda") else MIN_DELTA_MB_HOST


@dataclass(frozen=True)
class CaseCounts:
    """Cases of one (adapter, task, prompt) by how they went in each run."""

    base: int = 0  # cases the base run has
    new: int = 0  # cases the new run has
    failed_base: int = 0
    failed_new: int = 0
    failed_both: int = 0  # reported, not a regression
    missing_new: int = 0  # in the base, not in the new run
    missing_base: int = 0  # in the new run, not in the base
    lost_failed: int = 0  # ok in the base, failed in the new run
    lost_missing: int = 0  # ok in the base, missing from the new run

    @property
    def lost(self) -> int:
        return self.lost_failed + self.lost_missing

    def regressions(self) -> list[str]:
        out = []
        if self.lost_failed:
            out.append(f"{self.lost_failed} of {self.base} cases failed (ok in base)")
        if self.lost_missing:
            whole = " (the group is gone)" if self.new == 0 else ""
            out.append(f"{self.lost_missing} of {self.base} cases missing from new{whole}")
        return out


@dataclass
class GroupComparison:
    adapter: str
    task: str
    prompt: str
    cases: int
    dice_base: float
    dice_new: float
    diffs: dict[str, tuple[float, float, float]]  # per compared metric: mean, CI low, CI high
    machine_ratio: float  # the machine's slowdown between the runs (median probe_ms new / base)
    latency_ratio: tuple[float, float, float]  # geometric mean over cases, machine-adjusted; CI low, CI high
    latency_delta_ms: float  # median per-case difference
    memory_ratio: float
    regressions: list[str] = field(default_factory=list)
    unjudged: str | None = None  # why speed was not judged (the machine moved by more than the tolerance)
    counts: CaseCounts = field(default_factory=CaseCounts)
    not_judged: list[str] = field(default_factory=list)  # measures with nothing to judge (0 or no values)

    @property
    def dice_diff(self) -> tuple[float, float, float]:
        return self.diffs.get(HEADLINE, (math.nan,) * 3)

    @property
    def nsd_diff(self) -> tuple[float, float, float]:
        return self.diffs.get("nsd", (math.nan,) * 3)

    @property
    def verdict(self) -> str:
        verdict = "REGRESSION: " + "; ".join(self.regressions) if self.regressions else "ok"
        notes = [note for note in (self.unjudged, *self.not_judged) if note]
        return f"{verdict} ({'; '.join(notes)})" if notes else verdict


@dataclass
class Comparison:
    base: RunManifest
    new: RunManifest
    groups: list[GroupComparison]
    machine_differences: dict[str, tuple[Any, Any]]
    unmatched_base: int
    unmatched_new: int
    metrics: tuple[MetricSpec, ...] = ()  # the compared metrics (mean-summarised, in both runs), headline first

    @property
    def regressed(self) -> bool:
        return any(group.regressions for group in self.groups)

    @property
    def shared(self) -> bool:
        """Whether the runs have any case in common (ok or not); without one there is nothing to compare."""
        return any(g.counts.base - g.counts.missing_new for g in self.groups)

    @property
    def totals(self) -> CaseCounts:
        """The case counts of every group added up."""
        names = CaseCounts.__dataclass_fields__
        return CaseCounts(**{name: sum(getattr(g.counts, name) for g in self.groups) for name in names})

    @property
    def unjudged_groups(self) -> int:
        """Groups whose speed was not judged because the machine's speed moved too much."""
        return sum(group.unjudged is not None for group in self.groups)


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval; a single value has no interval (and so is never significant)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size == 1:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half


def _mean_bootstrap(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval; a single value has none (never significant)."""
    values = values[np.isfinite(values)]
    if values.size < 2:
        return (float(values[0]) if values.size else math.nan), -math.inf, math.inf
    return float(values.mean()), *bootstrap_ci(values)


def _machine_ratio(base_probe: np.ndarray, new_probe: np.ndarray) -> float:
    """Median probe time of the new run over the base run's; NaN when either run has no probes."""
    base_probe, new_probe = base_probe[base_probe > 0], new_probe[new_probe > 0]  # NaN compares False
    if base_probe.size == 0 or new_probe.size == 0:
        return math.nan
    return float(np.median(new_probe) / np.median(base_probe))


def machine_differences(base: RunManifest, new: RunManifest) -> dict[str, tuple[Any, Any]]:
    """Fields of the two manifests' machines (and GPUs, torch) that differ."""

    def facts(manifest: RunManifest) -> dict[str, Any]:
        out = {name: getattr(manifest.machine, name) for name in MACHINE_FIELDS}
        out["gpus"] = manifest.machine.gpu_names
        out["torch"] = manifest.packages.get("torch")
        out["device"] = manifest.device
        return out

    a, b = facts(base), facts(new)
    return {key: (a[key], b[key]) for key in a if a[key] != b[key]}


def compared_metrics(base: pl.DataFrame, new: pl.DataFrame) -> tuple[MetricSpec, ...]:
    """The metrics a comparison pairs: those summarised by a mean whose column both runs' rows carry."""
    shared = set(base.columns) & set(new.columns)
    return tuple(spec for spec in shown_metrics(shared) if spec.summary == "mean")


def _paired(base: pl.DataFrame, new: pl.DataFrame, metrics: tuple[MetricSpec, ...]) -> pl.DataFrame:
    keep = [*ROW_KEY, *(spec.name for spec in metrics), "total_ms", "peak_mem_mb", "probe_ms", "weights", "device"]
    ok = [final_steps(frame.filter(pl.col("status") == "ok")).select(keep) for frame in (base, new)]
    return ok[0].join(ok[1], on=ROW_KEY, how="inner", suffix="_new")


def _compare_group(
    key: tuple[str, str, str], rows: pl.DataFrame, thresholds: Thresholds, metrics: tuple[MetricSpec, ...]
) -> GroupComparison:
    accuracy_known = (rows["weights"] != "random").all() and (rows["weights_new"] != "random").all()
    unknown = (math.nan,) * 3
    diffs = {
        spec.name: _mean_bootstrap((rows[f"{spec.name}_new"] - rows[spec.name]).cast(pl.Float64).to_numpy())
        if accuracy_known
        else unknown
        for spec in metrics
    }
    dice_diff = diffs[HEADLINE]
    per_case = rows.unique(["case_id"], keep="first")
    base_ms = per_case["total_ms"].cast(pl.Float64).fill_null(math.nan).to_numpy()
    new_ms = per_case["total_ms_new"].cast(pl.Float64).fill_null(math.nan).to_numpy()
    valid = (base_ms > 0) & (new_ms > 0)  # NaN compares False: 0 or no latency is not judged
    machine = _machine_ratio(per_case["probe_ms"].to_numpy(), per_case["probe_ms_new"].to_numpy())
    excused = math.log(machine) if machine > 1 else 0.0  # NaN > 1 is False: no probes, no excuse
    steady = not abs(math.log(machine)) > math.log1p(thresholds.speed)  # NaN (no probes): steady
    log_ratio = _mean_ci(np.log(new_ms[valid] / base_ms[valid]) - excused)
    latency_ratio = tuple(math.exp(v) for v in log_ratio)
    delta_ms = float(np.median(new_ms[valid] - base_ms[valid])) if valid.any() else math.nan
    base_mb, new_mb = _median_mb(per_case["peak_mem_mb"]), _median_mb(per_case["peak_mem_mb_new"])
    memory_known = base_mb > 0 and new_mb > 0  # NaN (no values) compares False
    memory_ratio = new_mb / base_mb if memory_known else math.nan
    not_judged = []
    if not valid.any():
        not_judged.append("speed not judged: latency 0 or not recorded")
    if not memory_known:
        not_judged.append("memory not judged: peak memory 0 or not recorded")

    regressions = []
    drop, _, high = dice_diff
    if drop < -thresholds.dice and high < 0:
        regressions.append(f"Dice {drop:+.3f} (95% CI up to {high:+.3f}; limit -{thresholds.dice})")
    ratio, low, _ = latency_ratio
    if steady and low > 1 + thresholds.speed and delta_ms >= thresholds.min_delta_ms:
        regressions.append(f"latency x{ratio:.2f} (95% CI from x{low:.2f}; limit x{1 + thresholds.speed:.2f})")
    floor_mb = thresholds.memory_floor_mb(rows["device_new"][0])
    if memory_known and memory_ratio > 1 + thresholds.memory and new_mb - base_mb >= floor_mb:
        regressions.append(f"peak memory x{memory_ratio:.2f} (limit x{1 + thresholds.memory:.2f})")
    return GroupComparison(
        *key,
        cases=per_case.height,
        dice_base=as_float(rows["dice"].mean()),
        dice_new=as_float(rows["dice_new"].mean()),
        diffs=diffs,
        machine_ratio=machine,
        latency_ratio=latency_ratio,  # type: ignore[arg-type]
        latency_delta_ms=delta_ms,
        memory_ratio=memory_ratio,
        regressions=regressions,
        unjudged=None if steady else f"speed not judged: the machine's speed moved x{machine:.2f}",
        not_judged=not_judged,
    )


def _median_mb(values: pl.Series) -> float:
    """The median of the recorded values (null and NaN left out); NaN when there are none."""
    values = values.cast(pl.Float64).drop_nulls().drop_nans()
    return float(values.median()) if values.len() else math.nan  # type: ignore[arg-type]


def _unpaired_group(key: tuple[str, str, str]) -> GroupComparison:
    """A group without a case ok in both runs: only its counts can be reported."""
    unknown = (math.nan,) * 3
    return GroupComparison(
        *key,
        cases=0,
        dice_base=math.nan,
        dice_new=math.nan,
        diffs={},
        machine_ratio=math.nan,
        latency_ratio=unknown,
        latency_delta_ms=math.nan,
        memory_ratio=math.nan,
        not_judged=["nothing to compare: no case is ok in both runs"],
    )


def _case_status(frame: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
    """One row per (adapter, task, prompt, case) the run has, with ``failed``: any of its rows not ok. A
    ``*`` row (the case could not be read, or failed before any protocol) belongs to every prompt of its
    adapter and task in ``prompts``; with none there, it stays under ``*``."""
    rows = frame.select(*GROUP_KEY, "case_id", (pl.col("status") != "ok").alias("failed"))
    star = rows.filter(pl.col("prompt") == "*").drop("prompt")
    spread = star.join(prompts, on=["adapter", "task"], how="left").with_columns(pl.col("prompt").fill_null("*"))
    return (
        pl.concat([rows.filter(pl.col("prompt") != "*"), spread.select(rows.columns)])
        .group_by(*GROUP_KEY, "case_id")
        .agg(pl.col("failed").any())
    )


def case_counts(base: pl.DataFrame, new: pl.DataFrame) -> dict[tuple[str, str, str], CaseCounts]:
    """:class:`CaseCounts` of every (adapter, task, prompt) that either run has."""
    prompts = (
        pl.concat([frame.select(*GROUP_KEY) for frame in (base, new)])
        .filter(pl.col("prompt") != "*")
        .unique()
        .select("adapter", "task", "prompt")
    )
    cases = _case_status(base, prompts).join(
        _case_status(new, prompts), on=[*GROUP_KEY, "case_id"], how="full", coalesce=True, suffix="_new"
    )
    in_base, in_new = pl.col("failed").is_not_null(), pl.col("failed_new").is_not_null()
    ok_base = in_base & ~pl.col("failed")
    summary = cases.group_by(GROUP_KEY).agg(
        in_base.sum().alias("base"),
        in_new.sum().alias("new"),
        pl.col("failed").fill_null(False).sum().alias("failed_base"),
        pl.col("failed_new").fill_null(False).sum().alias("failed_new"),
        (pl.col("failed") & pl.col("failed_new")).fill_null(False).sum().alias("failed_both"),
        (in_base & ~in_new).sum().alias("missing_new"),
        (in_new & ~in_base).sum().alias("missing_base"),
        (ok_base & pl.col("failed_new").fill_null(False)).sum().alias("lost_failed"),
        (ok_base & ~in_new).sum().alias("lost_missing"),
    )
    return {
        (row.pop("adapter"), row.pop("task"), row.pop("prompt")): CaseCounts(**row)
        for row in summary.iter_rows(named=True)
    }


def compare_runs(base_dir: Path, new_dir: Path, thresholds: Thresholds = Thresholds()) -> Comparison:
    base_store, new_store = RunStore(base_dir), RunStore(new_dir)
    base_manifest, new_manifest = base_store.manifest(), new_store.manifest()
    # steps an adapter could not take (a box-only model on a click protocol) are neither scored nor failed
    base, new = (store.read_cases().filter(pl.col("status") != NOT_TAKEN) for store in (base_store, new_store))
    metrics = compared_metrics(base, new)
    paired = _paired(base, new, metrics)
    compared = {key: _compare_group(key, rows, thresholds, metrics) for key, rows in paired.group_by(GROUP_KEY)}
    counts = case_counts(base, new)
    groups = []
    for key in sorted(counts.keys() | compared.keys()):
        group = compared.get(key) or _unpaired_group(key)
        group.counts = counts.get(key, CaseCounts())
        group.regressions = [*group.counts.regressions(), *group.regressions]
        groups.append(group)
    matched = paired.height
    return Comparison(
        base_manifest,
        new_manifest,
        groups,
        machine_differences(base_manifest, new_manifest),
        unmatched_base=final_steps(base.filter(pl.col("status") == "ok")).height - matched,
        unmatched_new=final_steps(new.filter(pl.col("status") == "ok")).height - matched,
        metrics=metrics,
    )


def _fmt(value: float, spec: str) -> str:
    return "n/a" if not math.isfinite(value) else format(value, spec)


def terminal_table(comparison: Comparison) -> str:
    """One line per group: ``cases`` are those ok in both runs (the paired statistics' cases); ``failed``
    counts each run's failed cases, ``unmatched`` the cases only the base / only the new run has."""
    header = [
        "adapter",
        "task",
        "prompt",
        "cases",
        "failed base→new",
        "unmatched base/new",
        "Dice base→new",
        "ΔDice [95% CI]",
        "machine",
        "latency ratio [95% CI]",
        "memory ratio",
        "verdict",
    ]
    lines = []
    for g in comparison.groups:
        mean, low, high = g.dice_diff
        ratio, r_low, r_high = g.latency_ratio
        lines.append(
            [
                g.adapter,
                g.task,
                g.prompt,
                str(g.cases),
                f"{g.counts.failed_base}→{g.counts.failed_new}",
                f"{g.counts.missing_new}/{g.counts.missing_base}",
                f"{_fmt(g.dice_base, '.3f')}→{_fmt(g.dice_new, '.3f')}",
                f"{_fmt(mean, '+.3f')} [{_fmt(low, '+.3f')}, {_fmt(high, '+.3f')}]",
                f"x{_fmt(g.machine_ratio, '.2f')}",
                f"x{_fmt(ratio, '.2f')} [{_fmt(r_low, '.2f')}, {_fmt(r_high, '.2f')}]",
                f"x{_fmt(g.memory_ratio, '.2f')}",
                g.verdict,
            ]
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *lines])


def write_html(comparison: Comparison, path: Path) -> Path:
    """A self-contained HTML diff page (inline style, no external files)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("segbench.reporting", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["fmt"] = _fmt
    html = environment.get_template("compare.html").render(c=comparison, nan=math.nan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    return path
