"""The leaderboard's figures, drawn with matplotlib and written as SVG files.

Each adapter keeps one colour (Okabe–Ito, safe for the common colour-vision deficiencies) and one
marker on every page, so a figure reads without colour too. Every figure comes with alt text that
states what it shows in numbers, for readers who cannot see it. Text stays text in the SVG (no
mathtext: a ``$`` in a name is printed as is) and the output is deterministic (no date, fixed ids).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure as MplFigure

from segbench.aggregate import LeaderboardRow
from segbench.curves import StepCurve, SupportCurve
from segbench.ranking import pareto_front

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
POINTS_SHOWN = 150  # per adapter: above this many cases a box plot shows the distribution alone
STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "segbench",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
}
WIDTH_IN = 6.4

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str


@dataclass(frozen=True)
class Figure:
    name: str  # file stem under figures/
    svg: str
    alt: str
    caption: str


def styles(adapters: Sequence[str]) -> dict[str, Style]:
    """A fixed (colour, marker) per adapter; past eight adapters the markers keep them apart."""
    return {name: Style(OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i + i // len(OKABE_ITO)) % len(MARKERS)])
            for i, name in enumerate(adapters)}


def _styled(function: F) -> F:
    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _svg(figure: MplFigure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


@_styled
def dice_distribution(name: str, values: Mapping[str, np.ndarray], palette: Mapping[str, Style],
                      subject: str) -> Figure:
    """Box plots of per-(case, label) Dice, one per adapter in the given order (best first, on top)."""
    adapters = [a for a in values if np.isfinite(values[a]).any()]
    data = [values[a][np.isfinite(values[a])] for a in adapters]
    figure = MplFigure(figsize=(WIDTH_IN, 0.9 + 0.42 * max(len(adapters), 1)))
    axes = figure.add_subplot()
    positions = np.arange(len(adapters))[::-1]
    if adapters:
        boxes = axes.boxplot(data, positions=positions, orientation="horizontal", widths=0.55,
                             patch_artist=True, showmeans=True, flierprops={"markersize": 3},
                             meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                                        "markersize": 4}, medianprops={"color": "black"})
        rng = np.random.default_rng(0)
        for box, adapter, points, y in zip(boxes["boxes"], adapters, data, positions, strict=True):
            style = palette[adapter]
            box.set(facecolor=style.colour, alpha=0.35, edgecolor=style.colour)
            if len(points) <= POINTS_SHOWN:
                axes.scatter(points, y + rng.uniform(-0.18, 0.18, len(points)), s=9, color=style.colour,
                             marker=style.marker, edgecolors="none", alpha=0.8, zorder=3)
    axes.set_yticks(positions, adapters)
    axes.set_xlim(-0.02, 1.02)
    axes.set_xlabel("Dice per case and label (box: quartiles; diamond: mean)")
    summary = "; ".join(f"{a}: median {_fmt(float(np.median(d)))}, mean {_fmt(float(d.mean()))}, n = {len(d)}"
                        for a, d in zip(adapters, data, strict=True))
    return Figure(name, _svg(figure), f"Box plots of the Dice of every case and label for {subject}. {summary}.",
                  f"Dice distribution, {subject}")


@_styled
def speed_accuracy(name: str, rows: Sequence[LeaderboardRow], palette: Mapping[str, Style], subject: str) -> Figure:
    """Mean Dice (95% CI) against median latency per case, with the Pareto front."""
    shown = [r for r in rows if r.accuracy_known and math.isfinite(r.dice.mean) and r.latency_ms > 0]
    front = [shown[i] for i in pareto_front([(r.latency_ms, r.dice.mean) for r in shown])]
    figure = MplFigure(figsize=(WIDTH_IN, 3.6))
    axes = figure.add_subplot()
    if front:
        axes.step([r.latency_ms for r in front], [r.dice.mean for r in front], where="post", color="#5f6368",
                  linestyle="--", linewidth=1, label="Pareto front", zorder=1)
    for row in shown:
        style = palette[row.adapter]
        error = [[row.dice.mean - row.dice.low], [row.dice.high - row.dice.mean]]
        axes.errorbar([row.latency_ms], [row.dice.mean], yerr=error, color=style.colour, marker=style.marker,
                      markersize=7, capsize=3, linestyle="none", label=row.adapter, zorder=3)
        axes.annotate(row.adapter, (row.latency_ms, row.dice.mean), textcoords="offset points", xytext=(6, 4),
                      fontsize=8)
    if shown:
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        axes.legend(loc="lower right", fontsize=8, frameon=False)
    axes.set_xlabel("median latency per case (ms, log scale; lower is faster)")
    axes.set_ylabel("mean Dice (95% CI)")
    points = "; ".join(f"{r.adapter}: Dice {_fmt(r.dice.mean)} at {_fmt(r.latency_ms, 1)} ms" for r in shown)
    on_front = ", ".join(r.adapter for r in front) or "none"
    return Figure(name, _svg(figure),
                  f"Scatter plot of mean Dice against median latency per case for {subject}. {points}. "
                  f"On the Pareto front (no adapter both faster and more accurate): {on_front}.",
                  f"Speed and accuracy, {subject}; Pareto front: {on_front}")


@_styled
def step_curves(name: str, curves: Sequence[StepCurve], palette: Mapping[str, Style], subject: str) -> Figure:
    """Mean Dice (95% CI band) per interaction step, one line per adapter."""
    figure = MplFigure(figsize=(WIDTH_IN, 3.4))
    axes = figure.add_subplot()
    for curve in curves:
        style = palette[curve.adapter]
        means = [e.mean for e in curve.dice]
        axes.plot(curve.steps, means, color=style.colour, marker=style.marker, label=curve.adapter)
        axes.fill_between(curve.steps, [e.low for e in curve.dice], [e.high for e in curve.dice],
                          color=style.colour, alpha=0.15, linewidth=0)
    steps = sorted({s for c in curves for s in c.steps})
    axes.set_xticks(steps)
    axes.set_xlabel("interaction step (0: initial prompt; then one correction click per step)")
    axes.set_ylabel("mean Dice (95% CI)")
    if curves:
        axes.legend(loc="lower right", fontsize=8, frameon=False)
    summary = "; ".join(
        f"{c.adapter}: {' → '.join(_fmt(e.mean) for e in c.dice)}"
        + (f", DSC AUC {_fmt(c.auc.mean)}" if c.auc else "") for c in curves)
    return Figure(name, _svg(figure), f"Line chart of mean Dice per interaction step for {subject}. {summary}.",
                  f"Dice per interaction step, {subject}")


@_styled
def support_curves(name: str, curves: Sequence[SupportCurve], palette: Mapping[str, Style], subject: str) -> Figure:
    """Mean Dice (95% CI band) per support-set size (log 2 axis), one line per adapter and protocol."""
    figure = MplFigure(figsize=(WIDTH_IN, 3.4))
    axes = figure.add_subplot()
    several = len({c.protocol for c in curves}) > 1
    for curve in curves:
        style = palette[curve.adapter]
        label = f"{curve.adapter} ({curve.protocol})" if several else curve.adapter
        axes.plot(curve.sizes, [e.mean for e in curve.dice], color=style.colour, marker=style.marker, label=label)
        axes.fill_between(curve.sizes, [e.low for e in curve.dice], [e.high for e in curve.dice],
                          color=style.colour, alpha=0.15, linewidth=0)
    sizes = sorted({s for c in curves for s in c.sizes})
    if sizes:
        axes.set_xscale("log", base=2)
        axes.set_xticks(sizes, [str(s) for s in sizes])
        axes.minorticks_off()
        axes.legend(loc="lower right", fontsize=8, frameon=False)
    axes.set_xlabel("support set size (labelled examples)")
    axes.set_ylabel("mean Dice (95% CI)")
    summary = "; ".join(f"{c.adapter} ({c.protocol}): " + ", ".join(f"k={k} {_fmt(e.mean)}"
                                                                    for k, e in zip(c.sizes, c.dice, strict=True))
                        for c in curves)
    return Figure(name, _svg(figure), f"Line chart of mean Dice per support set size for {subject}. {summary}.",
                  f"Dice per support set size, {subject}")
