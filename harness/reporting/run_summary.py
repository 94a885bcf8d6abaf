"""The quick look ``segbench run`` ends with: per (adapter, task) cases, the mean of each metric the
tables summarise by a mean (Dice and NSD by default; ``segbench.measuring.metric_table``), failures.

Not the leaderboard's rule (that is :data:`segbench.reporting.aggregate.AGGREGATION_RULE`): a first glance
at what the run produced, with the rule it follows printed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from segbench.measuring.metric_table import shown_metrics
from segbench.protocols.base import NOT_TAKEN
from segbench.reporting.aggregate import final_steps

SUMMARY_RULE = (
    "dice, nsd: means pooled over the ok (case, label, protocol) rows at each protocol's final step, "
    "failed cases left out: a quick summary, not the report's ranking"
)


@dataclass
class PairSummary:
    adapter: str
    task: str
    cases: int
    failed: int  # cases with a failed row
    means: dict[str, float] = field(default_factory=dict)  # by metric; NaN when no row is ok (or has the metric)

    @property
    def dice(self) -> float:
        return self.means.get("dice", float("nan"))

    @property
    def nsd(self) -> float:
        return self.means.get("nsd", float("nan"))


@dataclass
class RunSummary:
    """The quick look ``segbench run`` ends with, computed from the rows."""

    pairs: list[PairSummary]
    first_errors: dict[str, str]  # adapter -> the first error of its failed rows (in row order)
    all_failed: list[str]  # adapters every one of whose cases failed


def summarize(frame: pl.DataFrame) -> RunSummary:
    """Per (adapter, task): cases, each mean-summarised metric's mean at each protocol's final step, failed
    cases; each failing adapter's first error; the adapters that failed every case."""
    frame = frame.filter(pl.col("status") != NOT_TAKEN)  # steps an adapter could not take: no rows here
    if frame.is_empty():
        return RunSummary([], {}, [])
    ok = final_steps(frame).filter(pl.col("status") == "ok")
    names = [spec.name for spec in shown_metrics(frame.columns) if spec.summary == "mean"]
    means = {
        (row.pop("adapter"), row.pop("task")): row
        for row in ok.group_by("adapter", "task").agg(pl.col(name).mean() for name in names).iter_rows(named=True)
    }
    counts = (
        frame.group_by("adapter", "task")
        .agg(
            pl.col("case_id").n_unique().alias("cases"),
            pl.col("case_id").filter(pl.col("status") != "ok").n_unique().alias("failed"),
        )
        .sort("adapter", "task")
    )
    nan = float("nan")
    pairs = [
        PairSummary(a, t, cases, failed, {name: nan if v is None else v for name, v in means.get((a, t), {}).items()})
        for a, t, cases, failed in counts.iter_rows()
    ]
    failed_rows = frame.filter(pl.col("status") != "ok")
    first_errors = {
        a: e or "(no error text)"
        for a, e in failed_rows.group_by("adapter", maintain_order=True).agg(pl.col("error").first()).iter_rows()
    }
    per_unit = frame.group_by("adapter", "unit_id").agg((pl.col("status") != "ok").any().alias("failed"))
    all_failed = sorted(a for a, every in per_unit.group_by("adapter").agg(pl.col("failed").all()).iter_rows() if every)
    return RunSummary(pairs, first_errors, all_failed)
