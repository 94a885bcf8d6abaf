"""From case rows to leaderboard tables (polars, numpy): the aggregation rule, penalties for what failed
or never ran, bootstrap CIs over cases, speed and memory.

The rule (``AGGREGATION_RULE`` is the same text, shown on the pages):

- Each (task, prompt protocol, label) is its own table; accuracy is taken at the last step of each
  protocol (the final answer of an iterative protocol).
- A table's case set is every (case, label) pair any adapter of the table scored (status ok), plus the
  cases the runs planned for its adapters (manifest ``planned``; a planned case nobody scored brings
  the labels the task was scored on elsewhere). An adapter without an ok row for a pair of the set
  (failed, timed out, never ran) scores each metric's penalty (``MetricSpec.penalty`` of
  ``segbench.measuring.metric_table``: Dice 0, NSD 0, HD95 = the case's image diagonal, ``diagonal``,
  from any row of the case; NaN in runs that did not record it, which then leave the HD95 penalty out).
  A pair is scored where the headline (Dice) is. The metrics are those of the table that the task's rows
  carry; a metric an adapter's rows never carried (another run chose other metrics) is NaN, not 0. A
  failed row with label ``*`` (the case could not be read) fails every label of the case, and one with
  prompt ``*`` every protocol. The penalised pairs are counted beside the
  mean, failed and missing apart. So failing can never raise a mean: a failed pair scores the worst
  value there is.
- A task's headline (per protocol) is the macro mean over its labels, the mean of the per-label
  means, so a label with more cases does not outweigh the others; the pooled mean over the (case,
  label) pairs is a secondary figure; every metric summarised by a ``mean`` is a macro mean likewise.
  HD95 (a ``median`` metric) is the median over the pairs (penalties included), with the number of
  empty predictions (``pred_area == 0``) beside it, in the rows' ``unit`` (px where the
  images had no spacing, mm otherwise; runs that did not record a unit read as mm).
- Confidence intervals: percentile bootstrap over CASES, seeded: a resample draws case ids, and all
  labels (and instances) of a drawn case come with it. Every adapter of a table is evaluated on the
  same resamples, so the ranking can read rank intervals off them (``segbench.reporting.ranking``).
- Rows made with random weights carry no accuracy (n/a) and are never penalised into a number; their
  speed and memory still count. Adapters whose family is ``baseline`` are reference rows: scored by
  the same rule, never ranked (``segbench.reporting.ranking``).

Speed is per case and protocol over the ok rows: ``total_ms`` is one encoder pass plus every decode of
the protocol, so throughput = cases / total seconds and latency is its median. A case counts as run on a
slowed machine when the run's machine probe (``probe_ms``, a fixed matrix product timed every few seconds)
read more than ``SLOW_MACHINE`` times its median over the run and device; such cases are counted beside
the latency, so a figure measured on a busy machine says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any, TypeVar, cast

import numpy as np
import polars as pl
import threadpoolctl

from segbench.measuring.metric_table import BUILTIN_METRICS, HEADLINE, MetricSpec, shown_metrics

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05  # the paired tests' significance level (segbench.reporting.ranking)
SLOW_MACHINE = 1.5  # a probe this many times slower than the run's median flags the case
DEFAULT_UNIT = "mm"  # what rows without a ``unit`` (older runs) are read as
PAIR_KEY = ["case_id", "label"]
# Columns of the row contract that older runs lack; read as nulls.
CONTRACT_COLUMNS: dict[str, pl.DataType] = {
    "unit": pl.String(),
    "diagonal": pl.Float64(),
    "truth_area": pl.Int64(),
    "pred_area": pl.Int64(),
}


def aggregation_rule(specs: Sequence[MetricSpec] = BUILTIN_METRICS) -> str:
    """The rule in words for the metric table ``specs`` (the headline first), shown on the pages."""
    headline = specs[0]
    medians = [spec.label for spec in specs if spec.summary == "median"]
    if medians:
        medians_text = (
            f"{' and '.join(medians)} {'is' if len(medians) == 1 else 'are'} the median over the pairs, penalties "
            "included, with the number of empty predictions beside it"
        )
    else:
        medians_text = "The number of empty predictions stands beside each row"
    distances = (
        "; distances are in px where the images have no spacing, in mm where they have"
        if any(spec.unit == "length" for spec in specs)
        else ""
    )
    return (
        "Each (task, prompt protocol, label) is its own ranked table, scored at the protocol's final step. "
        "A table's case set is every (case, label) pair any of its adapters scored, plus the cases the run planned "
        "for them. An adapter without a scored row for a pair of the set (failed, timed out or never ran) gets the "
        f"penalty {', '.join(spec.penalty_text() for spec in specs)}, and the number of such "
        "pairs stands beside its mean (failed / missing). A task's headline is the macro mean over its labels (the "
        "mean of the per-label means); the pooled mean over all (case, label) pairs is a secondary column. "
        f"{medians_text}{distances}. 95% confidence intervals come from "
        f"{BOOTSTRAP_RESAMPLES} seeded bootstrap resamples of cases (all labels of a case resampled together); the "
        "rank interval is the 2.5-97.5% range of an adapter's rank over the same resamples. Adapters are ranked by "
        f"mean {headline.label}; one that a paired Wilcoxon signed-rank test (over the table's (case, label) pairs, "
        f"penalties included, Holm-adjusted, α = {ALPHA:g}) cannot separate from the adapter above shares its rank "
        '("1="). '
        "Baselines are unranked reference rows placed by their score; rows made with random weights carry no accuracy."
    )


AGGREGATION_RULE = aggregation_rule()  # the rule of the default metric table (Dice, NSD, HD95)


def natural_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key for names with numbers in them: ``support`` < ``support2`` < ``support16`` < ``supportx``;
    digit runs compare as numbers, the rest case-insensitively (then exactly, so the order is total)."""
    pieces = [piece for piece in re.split(r"(\d+)", name) if piece]
    parts = tuple((0, int(piece)) if piece.isdigit() else (1, piece.casefold()) for piece in pieces)
    return parts, name


@lru_cache(maxsize=16)
def _resample_indices(size: int, seed: int, resamples: int) -> np.ndarray:
    """The bootstrap's resampling indices: they depend on the sample size alone, so the many estimates
    of a leaderboard with equal case counts share them (read-only)."""
    indices = np.random.default_rng(seed).integers(0, size, size=(resamples, size))
    indices.flags.writeable = False
    return indices


@lru_cache(maxsize=16)
def _resample_counts(size: int, seed: int, resamples: int) -> np.ndarray:
    """How often each case is drawn in each resample (resamples, cases): the same resamples as
    ``_resample_indices``, as weights, so a resampled mean is one matrix product (read-only)."""
    offsets = _resample_indices(size, seed, resamples) + np.arange(resamples)[:, None] * size
    counts = np.bincount(offsets.ravel(), minlength=resamples * size).reshape(resamples, size).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _percentiles(statistics: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    finite = statistics[np.isfinite(statistics)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of independent values (seeded, so a report is reproducible)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), float(values[0])
    return _percentiles(values[_resample_indices(values.size, seed, resamples)].mean(axis=1))


def _group_matrix(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(groups, members) matrix of ``values``, NaN-padded: one row per distinct group."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    matrix = np.full((counts.size, int(counts.max())), np.nan)
    order = np.argsort(inverse, kind="stable")
    position = np.arange(values.size) - np.repeat(np.cumsum(counts) - counts, counts)
    matrix[inverse[order], position] = values[order]
    return matrix


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray, groups: np.ndarray | None = None) -> Estimate:
        """Mean with its bootstrap CI; with ``groups`` (a case id per value) the bootstrap resamples
        groups, so values of one case stay together."""
        keep = np.isfinite(values)
        finite = values[keep]
        mean = float(finite.mean()) if finite.size else float("nan")
        if groups is None or finite.size == 0:
            return cls(mean, *bootstrap_ci(finite))
        _, pooled = _means(_group_matrix(finite, np.asarray(groups)[keep]))
        return cls(mean, pooled.low, pooled.high)


def _mean_over(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the finite values along ``axis`` (NaN where none)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _weighted_sums(matrix: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-label sums and counts of the finite values of a (cases, labels) matrix, each case weighted
    by ``weights`` (resamples, cases): (resamples, labels) each. The counts are sums of whole numbers, exact
    in any order, so a label with every case finite takes its count from the weights' row sums (one pass
    instead of a second product)."""
    finite = np.isfinite(matrix)
    sums = weights @ np.where(finite, matrix, 0.0)
    if finite.all():
        return sums, np.repeat(weights.sum(axis=1, keepdims=True), matrix.shape[1], axis=1)
    return sums, weights @ finite.astype(np.float64)


def _macro_from(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return _mean_over(np.where(counts > 0, sums / np.maximum(counts, 1e-300), np.nan), axis=-1)


def _pooled_from(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sums.sum(axis=-1) / np.maximum(total, 1e-300), np.nan)


def _case_weights(cases: int, seed: int = 0) -> np.ndarray:
    """The bootstrap's case weights of a table with ``cases`` cases; one unit weight row for a single case
    (its CI is the point)."""
    if cases < 2:
        return np.ones((1, cases))
    return _resample_counts(cases, seed, BOOTSTRAP_RESAMPLES)


class _Memo:
    """Bootstrap results by the content of their (cases, labels) matrix and seed: the headline table of a
    one-label task and its label table score the same matrices, and the ranking reads the headline's
    resampled means again, so each is computed once (the same function of the same bytes: the same values)."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, int, tuple[int, ...], bytes], Any] = {}

    def get(self, kind: str, matrix: np.ndarray, seed: int, compute: Callable[[], Any]) -> Any:
        key = (kind, seed, matrix.shape, np.ascontiguousarray(matrix).tobytes())
        if key not in self._found:
            self._found[key] = compute()
        return self._found[key]


def _resampled_means(matrix: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(macro, pooled) mean of a (cases, labels) matrix in each bootstrap resample of cases."""
    resampled = _weighted_sums(matrix, _case_weights(matrix.shape[0], seed))
    return _macro_from(*resampled), _pooled_from(*resampled)


def _means(matrix: np.ndarray, seed: int = 0, memo: _Memo | None = None) -> tuple[Estimate, Estimate]:
    """(macro mean over labels, pooled mean over pairs) of a (cases, labels) matrix, each with its
    bootstrap CI over cases."""
    point = _weighted_sums(matrix, np.ones((1, matrix.shape[0])))
    resampled = (memo or _Memo()).get("means", matrix, seed, lambda: _resampled_means(matrix, seed))
    macro, pooled = (
        Estimate(float(statistic(*point)[0]), *_percentiles(statistics))
        for statistic, statistics in zip((_macro_from, _pooled_from), resampled, strict=True)
    )
    return macro, pooled


def _pooled_median(sample: np.ndarray) -> np.ndarray:
    """Median of the finite values over every (case, label) pair (NaN where none); a sort puts NaN last,
    which is much faster than ``np.nanmedian`` over the bootstrap's thousands of resamples."""
    flat = np.sort(sample.reshape(*sample.shape[:-2], -1), axis=-1)
    count = np.isfinite(flat).sum(axis=-1)
    lower = np.take_along_axis(flat, np.maximum((count - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    upper = np.take_along_axis(flat, np.maximum(count // 2, 0)[..., None], axis=-1)[..., 0]
    return np.where(count > 0, (lower + upper) / 2, np.nan)


@lru_cache(maxsize=16)
def _small_counts(size: int, seed: int, resamples: int) -> np.ndarray:
    """``_resample_counts`` as the narrowest integer type that holds them (read-only): a quarter of the
    memory traffic for the medians' running sums."""
    counts = _resample_counts(size, seed, resamples)
    small = counts.astype(np.uint8 if counts.max() < 256 else np.int32)
    small.flags.writeable = False
    return small


def _resampled_medians(matrix: np.ndarray, seed: int = 0, half_window: int | None = None) -> np.ndarray:
    """``_pooled_median`` of each bootstrap resample of a (cases, labels) matrix's cases, without building and
    sorting the resamples: the pairs are sorted once (NaN last), each resample weighs pair ``j`` by how often it
    drew ``j``'s case, and its ``k``-th smallest value is the first sorted pair whose running weight exceeds
    ``k``. The order statistics are the same values a sort of the resample gives, so the medians are equal.

    A resample's median lies a few standard errors (~sqrt(pairs)/2 places) from the sample's, so the running
    weights are summed only over a window of ``half_window`` places each side of the middle (by default
    6 sqrt(pairs), at least 32), starting from the weight before it (one product of whole numbers: exact);
    a resample whose median falls outside the window is counted over all pairs."""
    cases, labels = matrix.shape
    flat = matrix.reshape(-1)
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    finite = int(np.isfinite(ordered).sum())
    if finite == 0:
        return np.full(BOOTSTRAP_RESAMPLES, np.nan)
    counts = _small_counts(cases, seed, BOOTSTRAP_RESAMPLES)
    case_of = order // labels  # the case of each sorted pair
    weights = _resample_counts(cases, seed, BOOTSTRAP_RESAMPLES)
    if finite == flat.size:  # every resample draws ``cases`` cases of ``labels`` finite pairs each
        count = np.full(BOOTSTRAP_RESAMPLES, float(flat.size))
    else:  # the finite pairs each resample drew
        count = weights @ np.bincount(case_of[:finite], minlength=cases).astype(np.float64)
    ranks = (np.maximum((count - 1) // 2, 0), count // 2)  # of the lower and upper middle value
    half = half_window if half_window is not None else max(32, int(6 * np.sqrt(finite)))
    start, stop = max(0, finite // 2 - half), min(finite, finite // 2 + half + 1)
    before = weights @ np.bincount(case_of[:start], minlength=cases).astype(np.float64)
    running = before[:, None] + np.cumsum(counts[:, case_of[start:stop]], axis=1, dtype=np.int64)
    middle = []
    for rank in ranks:
        place = start + (running <= rank[:, None]).sum(axis=1)
        outside = np.flatnonzero((before > rank) | (running[:, -1] <= rank))
        if outside.size:  # rare: that resample's middle lies beyond the window
            full = np.cumsum(counts[outside][:, case_of[:finite]], axis=1, dtype=np.int64)
            place[outside] = (full <= rank[outside, None]).sum(axis=1)
        middle.append(ordered[place])
    return np.where(count > 0, (middle[0] + middle[1]) / 2, np.nan)


def _median(matrix: np.ndarray, seed: int = 0, memo: _Memo | None = None) -> Estimate:
    """Median over the (case, label) pairs of a (cases, labels) matrix, with its bootstrap CI over cases."""
    point = float(_pooled_median(matrix))
    if matrix.shape[0] < 2:
        return Estimate(point, point, point)
    return Estimate(
        point, *_percentiles((memo or _Memo()).get("median", matrix, seed, lambda: _resampled_medians(matrix, seed)))
    )


NAN_ESTIMATE = Estimate(float("nan"), float("nan"), float("nan"))


@dataclass(frozen=True)
class TableScores:
    """The penalised scores of one table: per adapter a (cases, labels) matrix per metric, NaN outside the
    table's case set; every measured adapter has a value at every pair of the set (its own, or the penalty)."""

    cases: tuple[str, ...]
    labels: tuple[str, ...]
    in_set: np.ndarray  # (cases, labels) bool
    values: Mapping[str, Mapping[str, np.ndarray]]  # metric name -> adapter -> matrix (the table's metrics)
    seed: int = 0
    memo: _Memo = field(default_factory=lambda: _Memo(), repr=False, compare=False)  # shared by a task's tables

    @property
    def dice(self) -> Mapping[str, np.ndarray]:
        """The headline's matrices (Dice: ``HEADLINE``), by adapter."""
        return self.values[HEADLINE]

    @property
    def nsd(self) -> Mapping[str, np.ndarray]:
        return self.values.get("nsd", {})

    @property
    def hd95(self) -> Mapping[str, np.ndarray]:
        return self.values.get("hd95", {})

    def resampled_dice(self, adapter: str) -> np.ndarray:
        """The headline (macro mean Dice) of ``adapter`` in each bootstrap resample of cases."""
        matrix = self.dice[adapter]
        resampled, _ = self.memo.get("means", matrix, self.seed, lambda: _resampled_means(matrix, self.seed))
        return np.resize(resampled, BOOTSTRAP_RESAMPLES)  # a single case: its one value, repeated

    def pair_dice(self, adapter: str) -> np.ndarray:
        """``adapter``'s Dice at every (case, label) pair of the set, in one fixed order (for paired tests)."""
        return self.dice[adapter][self.in_set]


@dataclass(frozen=True)
class LeaderboardRow:
    task: str
    prompt: str
    adapter: str
    weights: str
    # per metric of the table, by name: a "mean" metric's macro mean over labels (the label's mean in a
    # per-label table), a "median" one's MEDIAN over the pairs (``mean`` holds the median), with bootstrap CIs;
    # a metric the table has but the adapter's rows never carried: NaN (null in the JSON, never 0)
    metrics: Mapping[str, Estimate]
    throughput: float  # cases per second
    latency_ms: float  # median per case
    peak_mem_mb: float
    cases: int  # cases scored (status ok)
    failed: int = 0  # pairs of the case set penalised because they failed (or timed out)
    missing: int = 0  # pairs of the case set penalised because they never ran
    label: str | None = None  # None: the task's headline over every label
    pooled: Estimate | None = None  # mean Dice over every (case, label) pair (the headline's secondary column)
    hd95_empty: int | None = None  # empty predictions (pred_area == 0) among the scored pairs; None: not recorded
    unit: str = DEFAULT_UNIT  # of HD95 and the NSD tolerance: "px" or "mm"
    pairs: int = 0  # (case, label) pairs in the table's case set
    baseline: bool = False  # a reference row, never ranked
    slow_cases: int = 0  # scored cases run while the machine probe read > SLOW_MACHINE x the run's median

    @property
    def accuracy_known(self) -> bool:
        return self.weights != "random"

    def metric(self, name: str) -> Estimate:
        """The estimate of metric ``name`` (NaN when the table has no such metric)."""
        return self.metrics.get(name, NAN_ESTIMATE)

    @property
    def dice(self) -> Estimate:
        """The headline (Dice, ``HEADLINE``): macro mean over labels."""
        return self.metric(HEADLINE)

    @property
    def nsd(self) -> Estimate:
        return self.metric("nsd")

    @property
    def hd95(self) -> Estimate:
        return self.metric("hd95")

    @property
    def failures(self) -> int:
        """Penalised pairs of the case set, failed or missing."""
        return self.failed + self.missing


@dataclass(frozen=True)
class Table:
    """One (task, prompt, label) table, or the task's headline table over every label (``label`` None)."""

    task: str
    prompt: str
    label: str | None
    rows: list[LeaderboardRow]  # best Dice first; rows without a Dice last
    scores: TableScores
    metrics: tuple[MetricSpec, ...] = field(default=BUILTIN_METRICS)  # the table's metrics, the headline first


def as_float(value: object) -> float:
    """A polars scalar (a mean, median or max of a numeric column) as a float; None is NaN."""
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]


def final_steps(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows at the last step of their protocol."""
    last = frame.group_by("adapter", "task", "prompt").agg(pl.col("step").max().alias("last_step"))
    return frame.join(last, on=["adapter", "task", "prompt"]).filter(pl.col("step") == pl.col("last_step"))


def with_contract_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the row-contract columns older runs lack, as nulls."""
    missing = [
        pl.lit(None, dtype=dtype).alias(name) for name, dtype in CONTRACT_COLUMNS.items() if name not in frame.columns
    ]
    return frame.with_columns(missing) if missing else frame


def with_slow_machine(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with ``slow_machine``: the row's probe read more than ``SLOW_MACHINE`` times the median of
    its run and device's probe readings (False where either is unknown)."""
    if "probe_ms" not in frame.columns:
        return frame.with_columns(pl.lit(False).alias("slow_machine"))
    keys = [key for key in ("run_id", "device") if key in frame.columns]
    finite = frame.filter(pl.col("probe_ms").is_finite())
    # the median over the run's probe readings, each once (many rows share one reading: a short adapter's
    # single probe must not outweigh a long one's hundreds)
    readings = finite.select(*keys, "probe_ms").unique()
    medians = (
        readings.group_by(keys).agg(pl.col("probe_ms").median().alias("_probe_median"))
        if keys
        else readings.select(pl.col("probe_ms").median().alias("_probe_median"))
    )
    joined = frame.join(medians, on=keys, how="left", nulls_equal=True) if keys else frame.join(medians, how="cross")
    slow = pl.col("probe_ms").is_finite() & (pl.col("probe_ms") > SLOW_MACHINE * pl.col("_probe_median"))
    return joined.with_columns(slow.fill_null(False).alias("slow_machine")).drop("_probe_median")


def unit_of(rows: pl.DataFrame) -> str:
    """The distance unit of ``rows``: "px" when every row that records one says px, "mm" when they say mm or
    none records one (older runs), "mm/px" when they are mixed."""
    units = set(rows["unit"].drop_nulls().unique().to_list()) if "unit" in rows.columns else set()
    if not units:
        return DEFAULT_UNIT
    return units.pop() if len(units) == 1 else "/".join(sorted(units))


def _combinations(
    frame: pl.DataFrame, planned: Mapping[tuple[str, str], Collection[str]]
) -> list[tuple[str, str, str]]:
    """Every (task, prompt, adapter) the run ran; an adapter whose every case failed before any protocol
    (prompt ``*``), or that was planned for a task and never ran, is listed under every protocol of the task."""
    ran = frame.filter(pl.col("prompt") != "*").select("task", "prompt", "adapter").unique()
    prompts = ran.select("task", "prompt").unique()
    tried = frame.select("task", "adapter")
    if planned:
        tried = pl.concat(
            [
                tried,
                pl.DataFrame(
                    {"task": [t for _, t in planned], "adapter": [a for a, _ in planned]},
                    schema={"task": pl.String, "adapter": pl.String},
                ),
            ]
        )
    never = tried.unique().join(ran.select("task", "adapter"), on=["task", "adapter"], how="anti")
    return sorted(pl.concat([ran, never.join(prompts, on="task").select("task", "prompt", "adapter")]).iter_rows())


def _matrix(rows: pl.DataFrame, column: str, index: pl.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    matrix = np.full(shape, np.nan)
    placed = rows.join(index, on=PAIR_KEY)
    matrix[placed["ci"].to_numpy(), placed["li"].to_numpy()] = (
        placed[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    )
    return matrix


def _by_adapter(rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """``rows`` split by adapter, each part in the rows' order (one pass instead of a filter per adapter)."""
    return (
        {str(key[0]): part for key, part in rows.partition_by("adapter", as_dict=True).items()} if rows.height else {}
    )


class _TaskPrompt:
    """Everything one (task, prompt) needs: its case set, each adapter's penalised matrices."""

    def __init__(
        self,
        task_frame: pl.DataFrame,
        task: str,
        prompt: str,
        adapters: list[str],
        planned: Mapping[tuple[str, str], Collection[str]],
        task_labels: list[str],
        metrics: Sequence[MetricSpec] = BUILTIN_METRICS,
    ):
        self.task, self.prompt, self.adapters, self.metrics = task, prompt, adapters, tuple(metrics)
        self.unit = unit_of(task_frame)  # one unit for every table of the task
        rows = task_frame.filter(pl.col("prompt").is_in([prompt, "*"]) & pl.col("adapter").is_in(adapters))
        self.ok = final_steps(rows.filter((pl.col("status") == "ok") & (pl.col("prompt") == prompt))).unique(
            ["adapter", *PAIR_KEY], keep="first", maintain_order=True
        )
        self.failed = rows.filter(pl.col("status") != "ok")
        scored = self.ok.select(PAIR_KEY).unique()
        scored_cases = set(scored["case_id"].to_list())
        planned_cases = {case for adapter in adapters for case in planned.get((adapter, task), ())}
        extra = [(case, label) for case in sorted(planned_cases - scored_cases) for label in task_labels]
        pairs = pl.concat(
            [scored, pl.DataFrame(extra, schema={"case_id": pl.String, "label": pl.String}, orient="row")]
        ).unique()
        self.cases = tuple(sorted(pairs["case_id"].unique().to_list()))
        self.labels = tuple(sorted(pairs["label"].unique().to_list()))
        case_index = {case: i for i, case in enumerate(self.cases)}
        label_index = {label: i for i, label in enumerate(self.labels)}
        self.index = pairs.with_columns(
            pl.col("case_id").replace_strict(case_index, return_dtype=pl.Int64).alias("ci"),
            pl.col("label").replace_strict(label_index, return_dtype=pl.Int64).alias("li"),
        )
        shape = (len(self.cases), len(self.labels))
        self.in_set = np.zeros(shape, bool)
        self.in_set[self.index["ci"].to_numpy(), self.index["li"].to_numpy()] = True
        diagonals = (
            task_frame.filter(pl.col("diagonal").is_not_null() & pl.col("diagonal").is_finite())
            .group_by("case_id")
            .agg(pl.col("diagonal").max())
        )
        known = dict(diagonals.iter_rows())
        self.diagonal = np.array([known.get(case, np.nan) for case in self.cases], dtype=np.float64)
        self.memo = _Memo()  # the bootstrap's results, shared by the task-prompt's tables
        self.values: dict[str, dict[str, np.ndarray]] = {}
        self.penalties: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # adapter -> (failed, missing) masks
        diagonals_by_pair = np.broadcast_to(self.diagonal[:, None], shape)
        own_rows = _by_adapter(self.ok)
        for adapter in adapters:
            own = own_rows.get(adapter, self.ok.clear())
            matrices = {spec.name: _matrix(own, spec.name, self.index, shape) for spec in self.metrics}
            # a pair is scored where the headline is; every other pair of the set is penalised
            penalised = self.in_set & ~np.isfinite(matrices[HEADLINE])
            failed_mask = self._failed_mask(adapter, case_index, label_index, shape) & penalised
            self.penalties[adapter] = (failed_mask, penalised & ~failed_mask)
            for spec in self.metrics:
                matrix = matrices[spec.name]
                if spec.name != HEADLINE and own.height and not np.isfinite(matrix).any():
                    continue  # the adapter's rows never carried this metric (another run's choice): NaN, not 0
                matrix[penalised] = spec.penalty_values(diagonals_by_pair)[penalised]
            self.values[adapter] = matrices

    def _failed_mask(
        self, adapter: str, case_index: Mapping[str, int], label_index: Mapping[str, int], shape: tuple[int, int]
    ) -> np.ndarray:
        mask = np.zeros(shape, bool)
        for case, label in self.failed.filter(pl.col("adapter") == adapter).select(PAIR_KEY).iter_rows():
            if case not in case_index:
                continue
            if label == "*":
                mask[case_index[case], :] = True
            elif label in label_index:
                mask[case_index[case], label_index[label]] = True
        return mask

    def table(self, label: str | None, weights: Mapping[str, str], baselines: Collection[str]) -> Table:
        columns = list(range(len(self.labels))) if label is None else [self.labels.index(label)]
        keep: np.ndarray = np.asarray(self.in_set[:, columns].any(axis=1))
        cases = tuple(case for case, kept in zip(self.cases, keep, strict=True) if kept)

        def cut(matrix: np.ndarray) -> np.ndarray:
            return matrix[keep][:, columns]

        measured = [a for a in self.adapters if weights[a] != "random"]
        scores = TableScores(
            cases,
            tuple(self.labels[c] for c in columns),
            cut(self.in_set),
            {spec.name: {a: cut(self.values[a][spec.name]) for a in measured} for spec in self.metrics},
            memo=self.memo,
        )
        table_ok = _by_adapter(self.ok if label is None else self.ok.filter(pl.col("label") == label))
        rows = [
            self._row(
                adapter,
                label,
                weights[adapter],
                adapter in baselines,
                scores,
                table_ok.get(adapter, self.ok.clear()),
                keep,
                columns,
            )
            for adapter in self.adapters
        ]
        rows.sort(key=lambda r: (not np.isfinite(r.dice.mean), -np.nan_to_num(r.dice.mean, nan=-1.0), r.adapter))
        return Table(self.task, self.prompt, label, rows, scores, self.metrics)

    def _row(
        self,
        adapter: str,
        label: str | None,
        weights: str,
        baseline: bool,
        scores: TableScores,
        own: pl.DataFrame,
        keep: np.ndarray,
        columns: list[int],
    ) -> LeaderboardRow:
        per_case = own.unique(["case_id"], keep="first", maintain_order=True).sort("case_id")  # sums in a fixed order
        total_s = float(per_case["total_ms"].sum()) / 1000
        failed, missing = (int(mask[keep][:, columns].sum()) for mask in self.penalties[adapter])
        estimates = dict.fromkeys((spec.name for spec in self.metrics), NAN_ESTIMATE)
        pooled: Estimate | None = NAN_ESTIMATE
        empty: int | None = None
        if weights != "random" and scores.cases:
            for spec in self.metrics:
                matrix = scores.values[spec.name][adapter]
                if spec.summary == "median":
                    estimates[spec.name] = _median(matrix, memo=scores.memo)
                else:
                    estimates[spec.name], spec_pooled = _means(matrix, memo=scores.memo)
                    pooled = spec_pooled if spec.name == HEADLINE else pooled
            areas = own["pred_area"].drop_nulls()
            empty = int((areas == 0).sum()) if areas.len() else None
        return LeaderboardRow(
            task=self.task,
            prompt=self.prompt,
            adapter=adapter,
            weights=weights,
            metrics=estimates,
            throughput=per_case.height / total_s if total_s > 0 else float("nan"),
            latency_ms=as_float(per_case["total_ms"].median()) if per_case.height else float("nan"),
            peak_mem_mb=as_float(own["peak_mem_mb"].max()) if own.height else float("nan"),
            cases=per_case.height,
            failed=failed,
            missing=missing,
            label=label,
            pooled=pooled,
            hd95_empty=empty,
            unit=self.unit,
            pairs=int(scores.in_set.sum()),
            baseline=baseline,
            slow_cases=int(per_case["slow_machine"].sum()) if per_case.height else 0,
        )


def task_metrics_of(task_frame: pl.DataFrame, specs: Sequence[MetricSpec]) -> tuple[MetricSpec, ...]:
    """The metrics of ``specs`` a task's rows carry (a value in some ok row), the headline always."""
    ok = task_frame.filter(pl.col("status") == "ok")
    return tuple(
        spec
        for spec in specs
        if spec.name == HEADLINE or (spec.name in ok.columns and ok[spec.name].cast(pl.Float64).is_finite().any())
    )


def with_metric_columns(frame: pl.DataFrame, specs: Sequence[MetricSpec]) -> pl.DataFrame:
    """``frame`` with a (null) column for each metric of ``specs`` it lacks."""
    missing = [pl.lit(None, dtype=pl.Float64).alias(spec.name) for spec in specs if spec.name not in frame.columns]
    return frame.with_columns(missing) if missing else frame


Function = TypeVar("Function", bound=Callable[..., Any])


def _one_blas_thread(function: Function) -> Function:
    """Run ``function`` with BLAS on one thread: the bootstrap's products, (resamples x cases) weights by a
    (cases x labels) matrix, are too small to share, and OpenBLAS's threads made them 12-25x slower (a
    million-row report spent 38% of its time there on a busy 2-core VM). Each output is still one dot
    product in the same order, so the values are the same."""

    @wraps(function)
    def limited(*args: Any, **kwargs: Any) -> Any:
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return cast(Function, limited)


@_one_blas_thread
def tables(
    frame: pl.DataFrame,
    planned: Mapping[tuple[str, str], Collection[str]] | None = None,
    baselines: Collection[str] = (),
    metrics: Sequence[MetricSpec] | None = None,
) -> list[Table]:
    """Every table of ``frame`` by the rule: per (task, prompt), the headline table over every label
    (``label`` None) first, then one table per label.

    ``planned`` maps (adapter, task) to the case ids the runs planned for it (absent in older runs);
    ``baselines`` names the adapters shown as unranked reference rows; ``metrics`` is the metric table
    (default: the registered metrics among the frame's columns); a task's tables show those its rows carry.
    """
    metrics = tuple(metrics) if metrics is not None else shown_metrics(frame.columns)
    frame = with_metric_columns(with_slow_machine(with_contract_columns(frame)), metrics)
    planned = planned or {}
    weights = (
        {adapter: str(group["weights"][0]) for (adapter,), group in frame.group_by("adapter")} if frame.height else {}
    )
    weights.update({adapter: "pretrained" for adapter, _ in planned if adapter not in weights})
    by_prompt: dict[tuple[str, str], list[str]] = {}
    for task, prompt, adapter in _combinations(frame, planned):
        by_prompt.setdefault((task, prompt), []).append(adapter)
    out = []
    task_frames = frame.partition_by("task", as_dict=True) if frame.height else {}
    for (task, prompt), adapters in sorted(by_prompt.items(), key=lambda item: (item[0][0], natural_key(item[0][1]))):
        task_frame = task_frames[(task,)]
        task_labels = sorted(
            task_frame.filter((pl.col("status") == "ok") & (pl.col("label") != "*"))["label"].unique().to_list()
        )
        scored = _TaskPrompt(
            task_frame, task, prompt, adapters, planned, task_labels, task_metrics_of(task_frame, metrics)
        )
        out.append(scored.table(None, weights, baselines))
        out += [scored.table(label, weights, baselines) for label in scored.labels]
    return out


def leaderboard(
    frame: pl.DataFrame,
    label: str | None = None,
    planned: Mapping[tuple[str, str], Collection[str]] | None = None,
    baselines: Iterable[str] = (),
) -> list[LeaderboardRow]:
    """One row per (task, prompt, adapter), best Dice first within each (task, prompt): the headline
    (macro mean over labels), or with ``label`` that label's table."""
    rows = []
    for table in tables(frame, planned, tuple(baselines)):
        if table.label == label:
            rows += table.rows
    return rows
