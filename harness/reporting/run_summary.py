"""The quick look ``segbench run`` ends with: per (adapter, task) cases, mean Dice and NSD, failures.

Not the leaderboard's rule (that is :data:`segbench.reporting.aggregate.AGGREGATION_RULE`): a first glance
at what the run produced, with the rule it follows printed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

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
    dice: float  # NaN when no row is ok
    nsd: float
    failed: int  # cases with a failed row


@dataclass
class RunSummary:
    """The quick look ``segbench run`` ends with, computed from the rows."""

    pairs: list[PairSummary]
    first_errors: dict[str, str]  # adapter -> the first error of its failed rows (in row order)
    all_failed: list[str]  # adapters every one of whose cases failed


def summarize(frame: pl.DataFrame) -> RunSummary:
    """Per (adapter, task): cases, mean Dice and NSD at each protocol's final step, failed cases; each
    failing adapter's first error; the adapters that failed every case."""
    if frame.is_empty():
        return RunSummary([], {}, [])
    ok = final_steps(frame).filter(pl.col("status") == "ok")
    means = {
        (a, t): (d, n)
        for a, t, d, n in ok.group_by("adapter", "task").agg(pl.col("dice").mean(), pl.col("nsd").mean()).iter_rows()
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
        PairSummary(a, t, cases, *means.get((a, t), (nan, nan)), failed) for a, t, cases, failed in counts.iter_rows()
    ]
    failed_rows = frame.filter(pl.col("status") != "ok")
    first_errors = {
        a: e or "(no error text)"
        for a, e in failed_rows.group_by("adapter", maintain_order=True).agg(pl.col("error").first()).iter_rows()
    }
    per_unit = frame.group_by("adapter", "unit_id").agg((pl.col("status") != "ok").any().alias("failed"))
    all_failed = sorted(a for a, every in per_unit.group_by("adapter").agg(pl.col("failed").all()).iter_rows() if every)
    return RunSummary(pairs, first_errors, all_failed)
