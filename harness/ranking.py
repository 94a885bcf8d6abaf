"""Ranking adapters within one leaderboard table, and saying where a rank is not earned.

Adapters are ranked by mean Dice. Each adapter is compared with the next one down by a paired
Wilcoxon signed-rank test on the (case, label) pairs both scored (final step, status ok); the p-values
of a table's adjacent comparisons are Holm-adjusted, and a difference counts at ALPHA = 0.05. Pairs
with equal Dice carry no information and are dropped (Wilcoxon's original treatment of zeros); a
comparison without any unequal pair has p = 1. Rows without a Dice (random weights) get no rank.

The speed-accuracy Pareto front is here too: the adapters no other adapter beats on both latency and
Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from segbench.aggregate import LeaderboardRow

ALPHA = 0.05
PAIR_KEY = ("case_id", "label")


@dataclass(frozen=True)
class Comparison:
    """A paired test of one adapter against the next one down the table."""

    pairs: int  # (case, label) pairs both adapters scored
    p_value: float  # Holm-adjusted over the table's adjacent comparisons

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


@dataclass(frozen=True)
class RankedRow:
    row: LeaderboardRow
    rank: int | None  # None: no Dice to rank by
    vs_next: Comparison | None  # None for the last ranked row and unranked rows


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test; 1 when every difference is zero."""
    nonzero = differences[np.isfinite(differences) & (differences != 0)]
    if nonzero.size == 0:
        return 1.0
    return float(stats.wilcoxon(nonzero).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate)."""
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(len(p_values))
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _dice_by_pair(final: pl.DataFrame, adapter: str) -> pl.DataFrame:
    return (final.filter((pl.col("adapter") == adapter) & pl.col("dice").is_not_nan())
            .select(*PAIR_KEY, pl.col("dice").alias(adapter)).unique(PAIR_KEY, keep="first"))


def rank_rows(rows: Sequence[LeaderboardRow], final: pl.DataFrame) -> list[RankedRow]:
    """``rows`` of one table (best Dice first) with ranks and adjacent paired tests.

    ``final`` holds the table's final-step rows with status ok (any other task, prompt or label
    must already be filtered out).
    """
    ranked = [row for row in rows if row.accuracy_known and math.isfinite(row.dice.mean)]
    ranked.sort(key=lambda row: -row.dice.mean)
    tests: list[tuple[int, float]] = []
    for upper, lower in zip(ranked, ranked[1:], strict=False):
        paired = _dice_by_pair(final, upper.adapter).join(_dice_by_pair(final, lower.adapter), on=list(PAIR_KEY))
        differences = (paired[upper.adapter] - paired[lower.adapter]).to_numpy()
        tests.append((paired.height, wilcoxon_p(differences)))
    adjusted = holm([p for _, p in tests])
    out = [RankedRow(row, rank, Comparison(tests[rank - 1][0], adjusted[rank - 1]) if rank <= len(tests) else None)
           for rank, row in enumerate(ranked, start=1)]
    ranked_ids = {id(row) for row in ranked}
    return out + [RankedRow(row, None, None) for row in rows if id(row) not in ranked_ids]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, value) points no other point beats: lower or equal cost and higher or
    equal value, one of them strictly. Points with a non-finite coordinate are never on the front."""
    finite = [i for i, (cost, value) in enumerate(points) if math.isfinite(cost) and math.isfinite(value)]
    front = []
    for i in finite:
        cost, value = points[i]
        dominated = any(points[j][0] <= cost and points[j][1] >= value and points[j] != points[i] for j in finite)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
