"""Ranking adapters within one leaderboard table, and saying where a rank is not earned.

Adapters are ranked by the table's headline (mean Dice by the rule in ``segbench.reporting.aggregate``: the
macro mean over labels, penalties included). Each ranked adapter is compared with the next one down by
a paired Wilcoxon signed-rank test on every (case, label) pair of the table's case set (an adapter
without a scored row for a pair carries its penalty there, so failing cannot buy a weaker comparison);
the p-values of a table's adjacent comparisons are Holm-adjusted, and a difference counts at ALPHA =
0.05. Pairs with equal Dice carry no information and are dropped (Wilcoxon's original treatment of
zeros); a comparison without any unequal pair has p = 1.

Shared ranks: an adapter the test cannot separate from the one above it shares that adapter's rank
(competition ranking over tie groups: 1=, 1=, 3), so a chain of inseparable neighbours forms one group.
Rank intervals: the 2.5-97.5% range of each adapter's rank over the table's bootstrap resamples of
cases (every adapter on the same resamples, so the ranks are joint). Baselines (family ``baseline``)
are reference rows: placed by their score, without a rank, and not part of the tests; rows without a
Dice (random weights) get no rank either.

The speed-accuracy Pareto front is here too: the adapters no other adapter beats on both latency and
Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from segbench.reporting.aggregate import ALPHA, LeaderboardRow, Table, TableScores

__all__ = ["ALPHA", "Comparison", "RankedRow", "holm", "pareto_front", "rank_rows", "rank_table", "wilcoxon_p"]
RANK_INTERVAL = (0.025, 0.975)


@dataclass(frozen=True)
class Comparison:
    """A paired test of one adapter against the next one down the table."""

    pairs: int  # (case, label) pairs of the case set (penalised pairs included)
    p_value: float  # Holm-adjusted over the table's adjacent comparisons

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


@dataclass(frozen=True)
class RankedRow:
    row: LeaderboardRow
    rank: int | None  # None: a baseline, or no Dice to rank by
    vs_next: Comparison | None  # None for the last ranked row and unranked rows
    rank_low: int | None = None  # the rank interval over the bootstrap resamples of cases
    rank_high: int | None = None
    shared: bool = False  # the rank is shared with a neighbour the paired test cannot separate

    @property
    def rank_text(self) -> str:
        if self.rank is None:
            return "ref" if self.row.baseline else "—"
        return f"{self.rank}=" if self.shared else str(self.rank)

    @property
    def rank_interval(self) -> str:
        if self.rank_low is None:
            return ""
        return str(self.rank_low) if self.rank_low == self.rank_high else f"{self.rank_low}–{self.rank_high}"


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


def _rank_intervals(scores: TableScores, adapters: list[str]) -> list[tuple[int, int]]:
    """Each adapter's 2.5-97.5% rank range over the shared bootstrap resamples (rank 1 + the number of
    adapters with a strictly higher resampled mean)."""
    if not adapters:
        return []
    means = np.stack([scores.resampled_dice(adapter) for adapter in adapters])  # (adapters, resamples)
    ranks = 1 + (means[None, :, :] > means[:, None, :]).sum(axis=1)
    low, high = np.quantile(ranks, RANK_INTERVAL, axis=1, method="inverted_cdf")
    return [(int(a), int(b)) for a, b in zip(low, high, strict=True)]


def rank_rows(rows: Sequence[LeaderboardRow], scores: TableScores) -> list[RankedRow]:
    """``rows`` of one table with ranks, rank intervals and adjacent paired tests, in the table's order
    (by score, baselines and rows without a Dice placed among them without a rank)."""
    ranked = [
        row
        for row in rows
        if row.accuracy_known and math.isfinite(row.dice.mean) and not row.baseline and row.adapter in scores.dice
    ]
    ranked.sort(key=lambda row: (-row.dice.mean, row.adapter))
    tests: list[tuple[int, float]] = []
    for upper, lower in zip(ranked, ranked[1:], strict=False):
        differences = scores.pair_dice(upper.adapter) - scores.pair_dice(lower.adapter)
        tests.append((int(np.isfinite(differences).sum()), wilcoxon_p(differences)))
    adjusted = holm([p for _, p in tests])
    ranks: list[int] = []
    for position in range(len(ranked)):
        tied = position > 0 and adjusted[position - 1] >= ALPHA
        ranks.append(ranks[-1] if tied else position + 1)
    intervals = _rank_intervals(scores, [row.adapter for row in ranked])
    by_adapter = {}
    for position, row in enumerate(ranked):
        comparison = Comparison(tests[position][0], adjusted[position]) if position < len(tests) else None
        low, high = intervals[position]
        by_adapter[row.adapter] = RankedRow(
            row, ranks[position], comparison, low, high, shared=ranks.count(ranks[position]) > 1
        )
    order = sorted(
        rows,
        key=lambda r: (
            not (r.accuracy_known and math.isfinite(r.dice.mean)),
            -np.nan_to_num(r.dice.mean, nan=-1.0),
            r.adapter,
        ),
    )
    return [by_adapter.get(row.adapter, RankedRow(row, None, None)) for row in order]


def rank_table(table: Table) -> list[RankedRow]:
    return rank_rows(table.rows, table.scores)


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
