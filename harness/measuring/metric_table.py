"""Metrics as a registered table: what each metric is called, its unit, direction, digits, edge cases,
penalty, how a table summarises it, and the function that computes it. Every consumer (rows, schema,
aggregates, pages, JSON, compare) iterates this table instead of naming Dice, NSD and HD95.

The model is lm-eval's ``MetricSpec``: a metric is a record, registered through a hook
(``segbench_register_metrics``), chosen per task (``[evaluation] metrics = [...]``; the default is
:data:`DEFAULT_NAMES`). The built-ins are Dice, NSD and HD95 exactly as
:func:`segbench.measuring.metrics.evaluate` computes them (one surface-distance pass shared by NSD and HD95
through :class:`ScoringInputs`).

**Headline.** The leaderboard ranks by :data:`HEADLINE` (Dice), the first metric of the default table;
every task's metric set must contain it, so every table can be ranked by the same rule.

**Versions and unit ids.** A metric's ``version`` is part of the id of every work unit that computes it
(:func:`unit_key`); the default table adds nothing to the id (its version, ``METRICS_VERSION``, is
already in every adapter fingerprint), so the ids of tasks that do not choose their metrics stay as
they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from segbench import plugins
from segbench.errors import ConfigError
from segbench.hookspecs import hookimpl
from segbench.measuring import metrics
from segbench.strict import closest

HEADLINE = "dice"
DEFAULT_NAMES = ("dice", "nsd", "hd95")
SUMMARIES = ("mean", "median")

_T = TypeVar("_T")

# The edge-case policy's version (docs/metrics.md has the table): bump it with metrics.METRICS_VERSION when
# what an empty ground truth or prediction gives changes, so rows and pages say which policy scored them.
POLICY_VERSION = "2026.1"


@dataclass
class ScoringInputs:
    """One (ground truth, prediction) pair to score; shared work (surface distances) computed once."""

    truth: np.ndarray  # bool
    predicted: np.ndarray  # bool, same shape
    spacing: tuple[float, ...]
    tolerance_mm: float
    _shared: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def distances(self) -> metrics.SurfaceDistances | None:
        """Surfel distances both ways (one computation for NSD, HD95, ASSD, MASD); None if a mask is empty."""
        if not self.truth.any() or not self.predicted.any():
            return None
        return metrics.surface_distances(self.truth, self.predicted, self.spacing)

    @cached_property
    def scores(self) -> metrics.Scores:
        distances = self.distances
        if distances is None:  # the empty-mask policy of metrics.evaluate
            return metrics.evaluate(self.truth, self.predicted, self.spacing, self.tolerance_mm)
        return metrics.Scores(
            metrics.dice(self.truth, self.predicted),
            metrics.surface_dice(distances, self.tolerance_mm),
            metrics.robust_hausdorff(distances),
        )

    def shared(self, key: str, compute: Callable[[ScoringInputs], _T]) -> _T:
        """Work that several metrics of one plugin share (connected components, skeletons), computed
        once per pair; ``key`` names it (prefix it with the plugin's module to avoid clashes)."""
        if key not in self._shared:
            self._shared[key] = compute(self)
        return self._shared[key]


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``unit`` is ``""`` for a ratio, ``"length"`` for a distance (px or mm by the case).

    ``summary`` is how a table summarises the (case, label) pairs: ``"mean"`` (the macro mean over labels,
    with the pooled mean beside the headline) or ``"median"`` (over the pairs); ``digits`` is the precision
    of one case's value, ``summary_digits`` (default: ``digits``) that of the summary."""

    name: str  # the row column
    label: str  # shown on pages
    unit: str
    higher_is_better: bool
    digits: int
    edge_cases: str  # what empty ground truth / empty prediction / both empty give
    compute: Callable[[ScoringInputs], float]
    penalty: float | str  # the value of a failed or missing case: a number, or "diagonal"
    summary: str = "mean"
    summary_digits: int | None = None
    version: str = metrics.METRICS_VERSION  # bump when the definition changes: units computing it run again

    @property
    def shown_digits(self) -> int:
        return self.digits if self.summary_digits is None else self.summary_digits

    def penalty_text(self) -> str:
        """The penalty as the aggregation rule says it: "Dice 0", "HD95 = the case's image diagonal"."""
        if self.penalty == "diagonal":
            return f"{self.label} = the case's image diagonal"
        return f"{self.label} {float(self.penalty):g}"

    def penalty_short(self) -> str:
        """The penalty as a table's tooltip says it: "Dice 0", "HD95 = image diagonal"."""
        return (
            f"{self.label} = image diagonal" if self.penalty == "diagonal" else f"{self.label} {float(self.penalty):g}"
        )

    def penalty_values(self, diagonal: np.ndarray) -> np.ndarray:
        """The penalty for cases whose image diagonals are ``diagonal`` (NaN where a diagonal is unknown)."""
        if self.penalty == "diagonal":
            return np.asarray(diagonal, dtype=np.float64)
        return np.full(np.shape(diagonal), float(self.penalty))


BUILTIN_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dice", "Dice", "", True, 3, "both empty 1; one empty 0", lambda s: s.scores.dice, 0.0),
    MetricSpec("nsd", "NSD", "", True, 3, "both empty 1; one empty 0", lambda s: s.scores.nsd, 0.0),
    MetricSpec(
        "hd95",
        "HD95",
        "length",
        False,
        1,
        "both empty 0; one empty the image diagonal",
        lambda s: s.scores.hd95,
        "diagonal",
        summary="median",
        summary_digits=2,
    ),
)


def score(inputs: ScoringInputs, specs: Sequence[MetricSpec]) -> dict[str, float]:
    """Every metric of ``specs`` on one pair, by name."""
    return {spec.name: float(spec.compute(inputs)) for spec in specs}


def registered() -> dict[str, MetricSpec]:
    """Every registered metric by name (the built-ins and those of plugins)."""
    return plugins.metrics()


def default_metrics(registered: Mapping[str, MetricSpec]) -> tuple[MetricSpec, ...]:
    return tuple(registered[name] for name in DEFAULT_NAMES)


def check_spec(spec: MetricSpec) -> str | None:
    """What is wrong with a registered spec (a plugin's), or None."""
    if spec.summary not in SUMMARIES:
        return f"summary must be one of {SUMMARIES}, got {spec.summary!r}"
    if spec.penalty != "diagonal" and not (
        isinstance(spec.penalty, int | float) and not isinstance(spec.penalty, bool) and math.isfinite(spec.penalty)
    ):
        return f"penalty must be a finite number or 'diagonal', got {spec.penalty!r}"
    if not spec.name.isidentifier():
        return f"name must be an identifier (it is a row column), got {spec.name!r}"
    return None


def task_metrics(names: Sequence[str] | None, where: Path | str = "[evaluation] metrics") -> tuple[MetricSpec, ...]:
    """The specs a task scores: ``names`` (its ``[evaluation] metrics``) or the default table. Unknown
    names, duplicates, a set without the headline or a malformed spec are a ConfigError."""
    known = registered()
    if names is None:
        return default_metrics(known)
    for name in names:
        if name not in known:
            near = closest(name, known)
            hint = f"; did you mean '{near}'?" if near else ""
            raise ConfigError(
                where, f"[evaluation] metrics: unknown metric '{name}'{hint} (known: {', '.join(sorted(known))})"
            )
    if len(set(names)) != len(names):
        raise ConfigError(where, f"[evaluation] metrics names a metric twice: {list(names)}")
    if HEADLINE not in names:
        raise ConfigError(where, f"[evaluation] metrics must include '{HEADLINE}', the metric the leaderboard ranks by")
    for name in names:
        problem = check_spec(known[name])
        if problem:
            raise ConfigError(where, f"metric '{name}': {problem}")
    return tuple(known[name] for name in names)


def unit_key(specs: Sequence[MetricSpec]) -> str:
    """What a unit's id says of the metrics it computes: "" for the default table at its version (module
    docstring), else each metric's name and version."""
    if tuple(s.name for s in specs) == DEFAULT_NAMES and all(s.version == metrics.METRICS_VERSION for s in specs):
        return ""
    return ",".join(f"{s.name}@{s.version}" for s in specs)


def summaries_text(specs: Sequence[MetricSpec]) -> str:
    """How the pages summarise each metric, in a phrase: "Dice and NSD: mean, HD95: median"."""
    parts = []
    for summary in SUMMARIES:
        labels = [spec.label for spec in specs if spec.summary == summary]
        if labels:
            names = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
            parts.append(f"{names}: {summary}")
    return ", ".join(parts)


def shown_metrics(columns: Collection[str]) -> tuple[MetricSpec, ...]:
    """The registered metrics among ``columns`` (of rows to report), in table order: the default table's
    first (the headline leading), then the others by name. A column whose metric is not registered where
    the report is made is not shown."""
    known = registered()
    names = [name for name in DEFAULT_NAMES if name in columns]
    names += sorted(name for name in known if name in columns and name not in DEFAULT_NAMES)
    return tuple(known[name] for name in names if name in known)


@hookimpl
def segbench_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    for spec in BUILTIN_METRICS:
        register(spec)
