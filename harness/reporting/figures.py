"""The leaderboard's figures, drawn with matplotlib and written as SVG files.

Each adapter keeps one colour (Okabe–Ito, safe for the common colour-vision deficiencies) and one
marker on every page, so a figure reads without colour too. Every figure comes with alt text that
states what it shows in numbers, for readers who cannot see it. Text stays text in the SVG (no
mathtext: a ``$`` in a name is printed as is) and the output is deterministic (no date, fixed ids).

Figures are drawn :data:`WIDTH_IN` (5 in, 480 CSS px) wide with no text under :data:`MIN_FONT_PT`:
the pages scale an SVG to the width it has, so on a 390 px phone (366 px of content) the smallest
text stays at 10 px, and on a desktop the figure is shown at its natural size. Long axis labels
break onto a second line rather than run off the figure.

A :class:`Figure` knows its name, alt text and caption at once; it is drawn (the expensive part) when
written.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure as MplFigure

from segbench.errors import SegbenchError
from segbench.reporting.aggregate import Estimate, LeaderboardRow
from segbench.reporting.curves import CostCurve, StepCurve, SupportCurve
from segbench.reporting.ranking import pareto_front

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
POINTS_SHOWN = 60  # per adapter: above this many cases a box plot shows the distribution alone
PARALLEL_FROM = 24  # figures: from this many on, a report draws them in worker processes (start_writing)
STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "segbench",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
}
WIDTH_IN = 5.0
MIN_FONT_PT = 10  # the smallest text of any figure, in points of the figure's 72 pt/in


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str


@dataclass(frozen=True)
class Figure:
    name: str  # file stem under figures/
    alt: str
    caption: str
    draw: Callable[[], MplFigure]

    def svg(self) -> str:
        with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]  # stubs: keys are a Literal of every rcParam
            return _svg(self.draw())

    def write(self, folder: Path) -> None:
        (folder / f"{self.name}.svg").write_text(self.svg(), encoding="utf-8")


def write_pickled(stream: BinaryIO) -> None:
    """A worker's whole job: unpickle (figures, folder) from ``stream`` and write each figure there."""
    figures, folder = pickle.load(stream)
    for figure in figures:
        figure.write(Path(folder))


# a worker: a fresh interpreter that imports this module and nothing of the process that started it
_WORKER = "import sys; from segbench.reporting.figures import write_pickled; write_pickled(sys.stdin.buffer)"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Writing:
    """Figures being written; :meth:`wait` returns once every one is on disk (raising a worker's error)."""

    def __init__(self, workers: Sequence[subprocess.Popen[bytes]] = ()):
        self._workers = list(workers)

    def wait(self) -> None:
        failed = []
        for worker in self._workers:
            _, stderr = worker.communicate()
            if worker.returncode != 0:
                lines = stderr.decode(errors="replace").strip().splitlines()
                failed.append(lines[-1] if lines else f"a worker exited with {worker.returncode}")
        self._workers = []
        if failed:
            raise SegbenchError(f"drawing the figures failed: {failed[0]}")

    def cancel(self) -> None:
        """Stop the workers; the build failed (after :meth:`wait` there are none left)."""
        for worker in self._workers:
            worker.kill()
            worker.communicate()
        self._workers = []


def start_writing(figures: Sequence[Figure], folder: Path, least: int = PARALLEL_FROM) -> Writing:
    """Start writing ``figures`` into ``folder``; :meth:`Writing.wait` waits until every one is written.

    Drawing is most of a figure's cost and needs nothing of the build but the figure, so from ``least``
    figures on they are drawn in worker processes (one per core, each a fresh interpreter on this one's
    ``sys.path`` that is sent its share of the figures pickled: no ``multiprocessing``, so a caller's
    script is never imported again) while the build renders its pages; the bytes are the same
    (matplotlib's SVG ids are hashes of the content under the fixed ``svg.hashsalt``). A figure that
    cannot be pickled (a plugin's closure) is drawn here."""
    sendable = []
    for figure in figures:
        try:
            pickle.dumps(figure)
        except (pickle.PicklingError, AttributeError, TypeError):
            figure.write(folder)
        else:
            sendable.append(figure)
    workers = min(_cores(), len(sendable))
    if len(sendable) < max(least, 1) or workers < 2:
        for figure in sendable:
            figure.write(folder)
        return Writing()
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    started = []
    for share in range(workers):
        with tempfile.TemporaryFile() as job:  # a file, not a pipe: nothing waits on the worker reading it
            pickle.dump((sendable[share::workers], str(folder)), job)
            job.seek(0)
            started.append(
                subprocess.Popen(
                    [sys.executable, "-c", _WORKER],
                    stdin=job,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=environment,
                )
            )
    return Writing(started)


def styles(adapters: Sequence[str]) -> dict[str, Style]:
    """A fixed (colour, marker) per adapter; past eight adapters the markers keep them apart."""
    return {
        name: Style(OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i + i // len(OKABE_ITO)) % len(MARKERS)])
        for i, name in enumerate(adapters)
    }


def _svg(figure: MplFigure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _margins(
    figure: MplFigure, left_in: float, bottom_in: float = 0.5, right_in: float = 0.2, top_in: float = 0.15
) -> None:
    """Fixed margins in inches: a tight bounding box would cost a second draw of every figure."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=left_in / width, right=1 - right_in / width, bottom=bottom_in / height, top=1 - top_in / height
    )


def _text_width_in(text: str) -> float:
    """Rough width of ``text`` at the figures' 10 pt sans-serif (enough to size a margin)."""
    return 0.085 * len(text)


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def dice_distribution(
    name: str, values: Mapping[str, np.ndarray], palette: Mapping[str, Style], subject: str
) -> Figure:
    """Box plots of per-(case, label) Dice, one per adapter in the given order (best first, on top)."""
    data = {a: v[np.isfinite(v)] for a, v in values.items() if np.isfinite(v).any()}
    summary = "; ".join(
        f"{a}: median {_fmt(float(np.median(d)))}, mean {_fmt(float(d.mean()))}, n = {len(d)}" for a, d in data.items()
    )
    return Figure(
        name,
        f"Box plots of the Dice of every case and label for {subject}. {summary}.",
        f"Dice distribution, {subject}",
        partial(_draw_distribution, data, {a: palette[a] for a in data}),
    )


def _draw_distribution(data: Mapping[str, np.ndarray], palette: Mapping[str, Style]) -> MplFigure:
    adapters = list(data)
    figure = MplFigure(figsize=(WIDTH_IN, 1.1 + 0.45 * max(len(adapters), 1)))
    _margins(figure, 0.2 + min(max((_text_width_in(a) for a in adapters), default=0.5), WIDTH_IN / 2), bottom_in=0.75)
    axes = figure.add_subplot()
    positions = np.arange(len(adapters))[::-1]
    if adapters:
        boxes = axes.boxplot(
            list(data.values()),
            positions=positions,
            orientation="horizontal",
            widths=0.55,
            patch_artist=True,
            showmeans=True,
            flierprops={"markersize": 3},
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 4},
            medianprops={"color": "black"},
        )
        rng = np.random.default_rng(0)
        for box, fliers, adapter, y in zip(boxes["boxes"], boxes["fliers"], adapters, positions, strict=True):
            style, points = palette[adapter], data[adapter]
            box.set(facecolor=style.colour, alpha=0.35, edgecolor=style.colour)
            if len(points) <= POINTS_SHOWN:  # every point is drawn, outliers included
                fliers.set_visible(False)
                axes.scatter(
                    points,
                    y + rng.uniform(-0.18, 0.18, len(points)),
                    s=9,
                    color=style.colour,
                    marker=style.marker,
                    edgecolors="none",
                    alpha=0.8,
                    zorder=3,
                )
    axes.set_yticks(positions, adapters)
    axes.set_xlim(-0.02, 1.02)
    axes.set_xlabel("Dice per case and label\n(box: quartiles; diamond: mean)")
    return figure


def speed_accuracy(name: str, rows: Sequence[LeaderboardRow], palette: Mapping[str, Style], subject: str) -> Figure:
    """Mean Dice (95% CI) against median latency per case, with the Pareto front."""
    shown = [r for r in rows if r.accuracy_known and math.isfinite(r.dice.mean) and r.latency_ms > 0]
    front = [shown[i] for i in pareto_front([(r.latency_ms, r.dice.mean) for r in shown])]
    points = "; ".join(f"{r.adapter}: Dice {_fmt(r.dice.mean)} at {_fmt(r.latency_ms, 1)} ms" for r in shown)
    on_front = ", ".join(r.adapter for r in front) or "none"
    return Figure(
        name,
        f"Scatter plot of mean Dice against median latency per case for {subject}. {points}. "
        f"On the Pareto front (no adapter both faster and more accurate): {on_front}.",
        f"Speed and accuracy, {subject}; Pareto front: {on_front}",
        partial(_draw_speed_accuracy, shown, front, {r.adapter: palette[r.adapter] for r in shown}),
    )


def _draw_speed_accuracy(
    shown: Sequence[LeaderboardRow], front: Sequence[LeaderboardRow], palette: Mapping[str, Style]
) -> MplFigure:
    figure = MplFigure(figsize=(WIDTH_IN, 3.8))
    _margins(figure, 0.85, bottom_in=0.75)
    axes = figure.add_subplot()
    if front:
        axes.step(
            [r.latency_ms for r in front],
            [r.dice.mean for r in front],
            where="post",
            color="#5f6368",
            linestyle="--",
            linewidth=1,
            label="Pareto front",
            zorder=1,
        )
    middle = math.sqrt(min(r.latency_ms for r in shown) * max(r.latency_ms for r in shown)) if shown else 0
    for row in shown:
        style = palette[row.adapter]
        error = [[row.dice.mean - row.dice.low], [row.dice.high - row.dice.mean]]
        axes.errorbar(
            [row.latency_ms],
            [row.dice.mean],
            yerr=error,
            color=style.colour,
            marker=style.marker,
            markersize=7,
            capsize=3,
            linestyle="none",
            label=row.adapter,
            zorder=3,
        )
        right = row.latency_ms > middle  # names of the slower half go to the left of their point
        axes.annotate(
            row.adapter,
            (row.latency_ms, row.dice.mean),
            textcoords="offset points",
            xytext=(-6 if right else 6, 4),
            ha="right" if right else "left",
            fontsize=MIN_FONT_PT,
        )
    if shown:
        axes.set_xscale("log")
        axes.margins(x=0.08)
        decades = math.log10(max(r.latency_ms for r in shown) / min(r.latency_ms for r in shown))
        axes.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_locator(ticker.NullLocator())
        axes.legend(loc="lower right", frameon=False)
    axes.set_xlabel("median latency per case\n(ms, log scale; lower is faster)")
    axes.set_ylabel("mean Dice (95% CI)")
    return figure


def step_curves(name: str, curves: Sequence[StepCurve], palette: Mapping[str, Style], subject: str) -> Figure:
    """Mean Dice (95% CI band) per interaction step, one line per adapter."""
    summary = "; ".join(
        f"{c.adapter}: {' → '.join(_fmt(e.mean) for e in c.dice)}" + (f", DSC AUC {_fmt(c.auc.mean)}" if c.auc else "")
        for c in curves
    )
    lines = [(c.adapter, c.steps, c.dice) for c in curves]
    return Figure(
        name,
        f"Line chart of mean Dice per interaction step for {subject}. {summary}.",
        f"Dice per interaction step, {subject}",
        partial(
            _draw_curves,
            lines,
            {c.adapter: palette[c.adapter] for c in curves},
            log2=False,
            xlabel="interaction step\n(0: initial prompt; then 1 click per step)",
        ),
    )


def cost_curves(name: str, curves: Sequence[CostCurve], palette: Mapping[str, Style], subject: str) -> Figure:
    """Mean Dice against mean interactions (boxes + clicks per label, log axis), a line per (adapter,
    protocol) through its steps."""
    summary = "; ".join(
        f"{c.adapter} ({c.prompt}): "
        + ", ".join(f"{_fmt(x, 1)} → {_fmt(e.mean)}" for x, e in zip(c.interactions, c.dice, strict=True))
        for c in curves
    )
    return Figure(
        name,
        f"Line chart of mean Dice against interactions given (boxes and clicks per label) for {subject}. {summary}.",
        f"Dice against interaction cost, {subject}",
        partial(_draw_cost, curves, palette),
    )


def _draw_cost(curves: Sequence[CostCurve], palette: Mapping[str, Style]) -> MplFigure:
    figure = MplFigure(figsize=(WIDTH_IN, 3.6))
    _margins(figure, 0.85, bottom_in=0.75)
    axes = figure.add_subplot()
    markers = "osD^v<>ph*"
    prompts = sorted({c.prompt for c in curves})
    for curve in curves:
        style = palette[curve.adapter]
        marker = markers[prompts.index(curve.prompt) % len(markers)]
        xs = [max(x, 0.5) for x in curve.interactions]  # a support-free 0 would fall off the log axis
        axes.plot(
            xs,
            [e.mean for e in curve.dice],
            color=style.colour,
            marker=marker,
            label=f"{curve.adapter} ({curve.prompt})",
        )
    axes.set_xscale("log")
    if curves:
        axes.legend(loc="lower right", frameon=False, fontsize="small")
    axes.set_xlabel("interactions given per label\n(boxes + clicks, log scale)")
    axes.set_ylabel("mean Dice")
    return figure


def support_curves(name: str, curves: Sequence[SupportCurve], palette: Mapping[str, Style], subject: str) -> Figure:
    """Mean Dice (95% CI band) per support-set size (log 2 axis), one line per adapter and protocol."""
    several = len({c.protocol for c in curves}) > 1
    summary = "; ".join(
        f"{c.adapter} ({c.protocol}): "
        + ", ".join(f"k={k} {_fmt(e.mean)}" for k, e in zip(c.sizes, c.dice, strict=True))
        for c in curves
    )
    lines = [(f"{c.adapter} ({c.protocol})" if several else c.adapter, c.sizes, c.dice) for c in curves]
    styles_by_line = {line[0]: palette[c.adapter] for line, c in zip(lines, curves, strict=True)}
    return Figure(
        name,
        f"Line chart of mean Dice per support set size for {subject}. {summary}.",
        f"Dice per support set size, {subject}",
        partial(_draw_curves, lines, styles_by_line, log2=True, xlabel="support set size (labelled examples)"),
    )


def _draw_curves(
    lines: Sequence[tuple[str, Sequence[int], Sequence[Estimate]]],
    palette: Mapping[str, Style],
    log2: bool,
    xlabel: str,
) -> MplFigure:
    """Mean (95% CI band) against an integer axis, one line per (label, xs, estimates)."""
    figure = MplFigure(figsize=(WIDTH_IN, 3.6))
    _margins(figure, 0.85, bottom_in=0.75)
    axes = figure.add_subplot()
    for label, xs, estimates in lines:
        style = palette[label]
        axes.plot(xs, [e.mean for e in estimates], color=style.colour, marker=style.marker, label=label)
        axes.fill_between(
            xs, [e.low for e in estimates], [e.high for e in estimates], color=style.colour, alpha=0.15, linewidth=0
        )
    ticks = sorted({x for _, xs, _ in lines for x in xs})
    if log2 and ticks:
        axes.set_xscale("log", base=2)
        axes.minorticks_off()
    axes.set_xticks(ticks, [str(t) for t in ticks])
    if lines:
        axes.legend(loc="lower right", frameon=False)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("mean Dice (95% CI)")
    return figure
