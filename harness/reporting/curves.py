"""Dice along an axis of effort: per interaction step of an iterative protocol (with the area under
the curve as the CVPR 2025 interactive challenge computes it) and per support-set size of an
in-context protocol.

DSC AUC, as in ``CVPR25_iter_eval.py`` (``cumulative_trapezoid(dscs[-n_clicks:], np.arange(n_clicks))[-1]``):
per (case, label), the trapezoid integral with unit spacing over the Dice of the click steps only
(steps 1..N; the initial prompt's step 0 is left out because the challenge treats the box as
optional). Its range is 0..N-1; it needs at least two click steps.

Names that carry a number (``support2``, ``support16``, ``iterative_box10``) are ordered by
:func:`natural_key`, so sizes read in numeric order, never 16 before 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from segbench.reporting.aggregate import Estimate, natural_key

SUPPORT_COLUMN = "support_size"  # Int32, null for prompt protocols (in-context protocols fill it)
PAIR_KEY = ["case_id", "label"]


@dataclass(frozen=True)
class StepCurve:
    adapter: str
    steps: tuple[int, ...]
    dice: tuple[Estimate, ...]  # per step, over the (case, label) pairs scored at that step
    auc: Estimate | None  # DSC AUC over pairs scored at every step; None with fewer than two click steps
    pairs: int  # (case, label) pairs scored at every step


@dataclass(frozen=True)
class SupportCurve:
    adapter: str
    protocol: str  # the protocol's name without the support size it may end with
    sizes: tuple[int, ...]
    dice: tuple[Estimate, ...]


def dice_auc(per_step: np.ndarray) -> np.ndarray:
    """DSC AUC of each row of an (items, steps) Dice matrix whose column 0 is the initial prompt."""
    clicks = per_step[:, 1:]
    if clicks.shape[1] < 2:
        return np.full(per_step.shape[0], np.nan)
    return np.trapezoid(clicks, dx=1.0, axis=1)


def is_iterative(rows: pl.DataFrame) -> bool:
    return rows.height > 0 and bool(rows["step"].max() > 0)  # type: ignore[operator]


def step_curves(rows: pl.DataFrame) -> list[StepCurve]:
    """One curve per adapter from the rows (every step, status ok) of one task and protocol."""
    curves = []
    for adapter in sorted(rows["adapter"].unique().to_list()):
        wide = rows.filter(pl.col("adapter") == adapter).pivot(
            on="step", index=PAIR_KEY, values="dice", aggregate_function="first"
        )
        steps = sorted(int(column) for column in wide.columns if column not in PAIR_KEY)
        matrix = wide.select([str(step) for step in steps]).to_numpy().astype(np.float64)
        cases = wide["case_id"].to_numpy()  # the bootstrap resamples cases, all labels of a case together
        whole = np.isfinite(matrix).all(axis=1)
        complete = matrix[whole]
        auc = Estimate.of(dice_auc(complete), cases[whole]) if len(steps) >= 3 and len(complete) else None
        curves.append(
            StepCurve(
                adapter,
                tuple(steps),
                tuple(Estimate.of(matrix[:, k], cases) for k in range(len(steps))),
                auc,
                len(complete),
            )
        )
    return curves


def _swept_support() -> pl.Expr:
    """True on rows of a protocol that has more than one support size in its task."""
    sizes = pl.col(SUPPORT_COLUMN).drop_nulls().n_unique().over("task", "prompt")
    return pl.col(SUPPORT_COLUMN).is_not_null() & (sizes > 1)


def split_support_sizes(frame: pl.DataFrame) -> pl.DataFrame:
    """A protocol swept over support sizes becomes one protocol per size, ``name (k=N)``, so a
    leaderboard table never pools sizes."""
    if SUPPORT_COLUMN not in frame.columns:
        return frame
    return frame.with_columns(
        pl.when(_swept_support())
        .then(pl.format("{} (k={})", pl.col("prompt"), pl.col(SUPPORT_COLUMN)))
        .otherwise(pl.col("prompt"))
        .alias("prompt")
    )


def _series(protocol: str, size: int) -> str:
    """``support8`` with size 8 → ``support``: protocols that differ only by their size form one curve."""
    return re.sub(rf"(?<![0-9]){size}$", "", protocol).rstrip("_-") or protocol


def support_curves(final: pl.DataFrame) -> list[SupportCurve]:
    """Dice per support size, one curve per (adapter, protocol), from final-step ok rows of one task."""
    if SUPPORT_COLUMN not in final.columns:
        return []
    rows = final.filter(pl.col(SUPPORT_COLUMN).is_not_null())
    if rows.height == 0:
        return []
    rows = rows.with_columns(
        pl.struct("prompt", SUPPORT_COLUMN)
        .map_elements(lambda value: _series(value["prompt"], value[SUPPORT_COLUMN]), return_dtype=pl.String)
        .alias("series")
    )
    curves = []
    groups = sorted(
        rows.group_by("adapter", "series"),
        key=lambda item: (natural_key(str(item[0][0])), natural_key(str(item[0][1]))),
    )
    for (adapter, series), group in groups:
        sizes = sorted(int(size) for size in group[SUPPORT_COLUMN].unique())
        at = [group.filter(pl.col(SUPPORT_COLUMN) == size) for size in sizes]
        dice = tuple(Estimate.of(sized["dice"].to_numpy(), sized["case_id"].to_numpy()) for sized in at)
        curves.append(SupportCurve(str(adapter), str(series), tuple(sizes), dice))
    return curves
