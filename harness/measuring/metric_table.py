"""Metrics as a registered table: what each metric is called, its unit, direction, digits, edge cases
and the function that computes it. Every consumer (rows, schema, aggregates, pages, JSON, compare)
iterates this table instead of naming Dice, NSD and HD95.

(Issue 15 item 3: the table's first form, Dice/NSD/HD95 exactly as :func:`segbench.measuring.metrics.evaluate`.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.measuring import metrics

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
    """One metric. ``unit`` is ``""`` for a ratio, ``"length"`` for a distance (px or mm by the case)."""

    name: str  # the row column
    label: str  # shown on pages
    unit: str
    higher_is_better: bool
    digits: int
    edge_cases: str  # what empty ground truth / empty prediction / both empty give
    compute: Callable[[ScoringInputs], float]
    penalty: float | str  # the value of a failed or missing case: a number, or "diagonal"


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
    ),
)


def score(inputs: ScoringInputs, specs: Sequence[MetricSpec]) -> dict[str, float]:
    """Every metric of ``specs`` on one pair, by name."""
    return {spec.name: float(spec.compute(inputs)) for spec in specs}


def default_metrics(registered: Mapping[str, MetricSpec]) -> tuple[MetricSpec, ...]:
    return tuple(registered[name] for name in ("dice", "nsd", "hd95"))


@hookimpl
def segbench_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    for spec in BUILTIN_METRICS:
        register(spec)
