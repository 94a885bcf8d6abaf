"""Dice along an axis of effort: per interaction step of an iterative protocol (with the area under
the curve as the CVPR 2025 interactive challenge computes it, the clicks to reach a Dice, and the
interaction cost of each step) and per support-set size of an in-context protocol.

DSC AUC, as in ``CVPR25_iter_eval.py`` (JunMa11/CVPR-MedSegFMCompetition, commit 748e862,
``cumulative_trapezoid(dscs[-n_clicks:], np.arange(n_clicks))[-1]``): per (case, label), the trapezoid
integral with unit spacing over the Dice of the click steps only. The script's ``dscs`` always holds six
values, the box step's first (a 0 in its place when a case has no box), so the AUC is over the five
predictions made with clicks in both cases: ``cvpr25`` leaves its step 0 (the box) out, ``cvpr25_nobox``,
whose step 0 is already its first click, keeps every step. segbench reads which from the rows: step 0
is a click step when its prompts hold a click (the ``clicks`` cost column; rows of runs before that
column: step 0 is taken to be a box). The range is 0 .. click steps - 1; it needs two click steps.

NoC@85 and NoC@90 (the interactive-segmentation literature's number of clicks): per (case, label), the
clicks given (``clicks``) at the first step whose Dice reaches 0.85 (0.90); a pair that never reaches it
counts as the most clicks the protocol gives any pair on the task, and the pairs that never do are
counted beside the mean. A step a box-only adapter could not take (``status`` ``not_taken``:
:attr:`segbench.protocols.base.ProtocolKind.first_requires`) is no step of its curve: its curve is its
box step alone, it has no AUC, and a pair its box leaves under the threshold never reaches it (its
NoC has no mean then: the clicks it would have needed are unknown).

Interaction cost: per step, the mean over pairs of the boxes and clicks the protocol gave (cumulative,
what the adapter held at that step) and of the slices carrying them (``prompted_slices``), so a
slice-by-slice 2D protocol (a box on every slice) and a 3D one (a box and clicks) stand on one axis.

Names that carry a number (``support2``, ``support16``, ``iterative_box10``) are ordered by
:func:`natural_key`, so sizes read in numeric order, never 16 before 2.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import polars as pl

from segbench.measuring import challenge
from segbench.protocols.base import NOT_TAKEN
from segbench.protocols.challenge_kinds import CVPR25_NAMES
from segbench.reporting.aggregate import Estimate, natural_key

SUPPORT_COLUMN = "support_size"  # Int32, null for prompt protocols (in-context protocols fill it)
PAIR_KEY = ["case_id", "label"]
NOC_THRESHOLDS = (0.85, 0.90)
COST_COLUMNS = ("boxes", "clicks", "prompted_slices")


@dataclass(frozen=True)
class NoC:
    threshold: float
    mean: Estimate  # clicks to reach the threshold, the protocol's maximum where never reached
    never: int  # pairs that never reach it
    pairs: int


@dataclass(frozen=True)
class StepCurve:
    adapter: str
    steps: tuple[int, ...]
    dice: tuple[Estimate, ...]  # per step, over the (case, label) pairs scored at that step
    auc: Estimate | None  # DSC AUC over pairs scored at every step; None with fewer than two click steps
    pairs: int  # (case, label) pairs scored at every step
    click_steps: tuple[int, ...] = ()  # the steps the AUC integrates
    noc: tuple[NoC, ...] = ()  # at NOC_THRESHOLDS
    interactions: tuple[float, ...] = ()  # per step: mean boxes + clicks per pair (NaN: not recorded)
    slices: tuple[float, ...] = ()  # per step: mean prompted slices per pair
    not_taken: bool = False  # the adapter took the first step only (it cannot take the later prompts)


def dice_auc(per_step: np.ndarray, first_click: int = 1) -> np.ndarray:
    """DSC AUC of each row of an (items, steps) Dice matrix over its click steps, columns
    ``first_click`` on (1: column 0 is a box; 0: every step is a click step)."""
    clicks = per_step[:, first_click:]
    if clicks.shape[1] < 2:
        return np.full(per_step.shape[0], np.nan)
    return np.trapezoid(clicks, dx=1.0, axis=1)


def is_iterative(rows: pl.DataFrame) -> bool:
    return rows.height > 0 and bool(rows["step"].max() > 0)  # type: ignore[operator]


def not_taken(frame: pl.DataFrame) -> dict[tuple[str, str], list[str]]:
    """(task, prompt) -> the adapters with steps they could not take (``not_taken`` rows)."""
    rows = frame.filter(pl.col("status") == NOT_TAKEN)
    out: dict[tuple[str, str], list[str]] = {}
    for (task, prompt), group in rows.group_by("task", "prompt"):
        out[(str(task), str(prompt))] = sorted(group["adapter"].unique().to_list())
    return out


def _first_click(rows: pl.DataFrame) -> int:
    """0 when step 0's prompts hold a click (the protocol starts from clicks), else 1 (a box first)."""
    if "clicks" not in rows.columns:
        return 1
    start = rows.filter(pl.col("step") == 0)["clicks"].drop_nulls()
    return 0 if len(start) and int(start.max()) > 0 else 1  # type: ignore[arg-type]


def _wide(rows: pl.DataFrame, values: str, steps: list[int]) -> np.ndarray:
    wide = rows.pivot(on="step", index=PAIR_KEY, values=values, aggregate_function="first").sort(PAIR_KEY)
    for step in steps:
        if str(step) not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(str(step)))
    return wide.select([str(step) for step in steps]).to_numpy().astype(np.float64)


def noc(dice: np.ndarray, clicks: np.ndarray, cases: np.ndarray, threshold: float, most: float) -> NoC:
    """Clicks to reach ``threshold`` per pair (rows of the (pairs, steps) matrices), ``most`` where never;
    no mean (NaN) where ``most`` is NaN and a pair never reaches it (or a pair's click count is unknown)."""
    reached = np.nan_to_num(dice, nan=-1.0) >= threshold
    first = np.argmax(reached, axis=1)
    ever = reached.any(axis=1)
    needed = np.where(ever, clicks[np.arange(len(clicks)), first], most).astype(np.float64)
    nan = float("nan")
    mean = Estimate(nan, nan, nan) if np.isnan(needed).any() else Estimate.of(needed, cases)
    return NoC(threshold, mean, int((~ever).sum()), len(needed))


def step_curves(rows: pl.DataFrame, short: Collection[str] = ()) -> list[StepCurve]:
    """One curve per adapter from the rows (every step, status ok) of one task and protocol; ``short``:
    the adapters that could not take its later steps (:func:`not_taken`)."""
    first_click = _first_click(rows)
    has_cost = all(column in rows.columns for column in COST_COLUMNS)
    if has_cost:
        rows = rows.with_columns((pl.col("boxes") + pl.col("clicks")).alias("interactions"))
    clicks_of = pl.col("clicks") if has_cost else pl.col("step") + (1 - first_click)
    rows = rows.with_columns(clicks_of.cast(pl.Float64).alias("given_clicks"))
    most = float(rows["given_clicks"].max() or 0.0)  # type: ignore[arg-type]
    curves = []
    for adapter in sorted(rows["adapter"].unique().to_list()):
        own = rows.filter(pl.col("adapter") == adapter)
        keys = own.select(PAIR_KEY).unique().sort(PAIR_KEY)
        steps = sorted(int(step) for step in own["step"].unique())
        matrix = _wide(own, "dice", steps)
        cases = keys["case_id"].to_numpy()  # the bootstrap resamples cases, all labels of a case together
        whole = np.isfinite(matrix).all(axis=1)
        complete = matrix[whole]
        click_steps = tuple(step for step in steps if step >= first_click)
        auc = (
            Estimate.of(dice_auc(complete, first_click), cases[whole])
            if len(click_steps) >= 2 and len(complete)
            else None
        )
        clicks = _wide(own, "given_clicks", steps)
        # an adapter that could not take the clicks has no click count for a pair its first step leaves short
        nocs = tuple(
            noc(matrix, clicks, cases, threshold, float("nan") if adapter in short else most)
            for threshold in NOC_THRESHOLDS
        )
        interactions = _mean_columns(own, "interactions", steps) if has_cost else ()
        slices = _mean_columns(own, "prompted_slices", steps) if has_cost else ()
        curves.append(
            StepCurve(
                adapter,
                tuple(steps),
                tuple(Estimate.of(matrix[:, k], cases) for k in range(len(steps))),
                auc,
                len(complete),
                click_steps,
                nocs,
                interactions,
                slices,
                not_taken=adapter in short,
            )
        )
    return curves


def _mean_columns(rows: pl.DataFrame, column: str, steps: list[int]) -> tuple[float, ...]:
    values = _wide(rows, column, steps)
    with np.errstate(invalid="ignore"):
        return tuple(
            float(np.nanmean(values[:, k])) if np.isfinite(values[:, k]).any() else float("nan")
            for k in range(len(steps))
        )


@dataclass(frozen=True)
class ChallengeCase:
    """One case's CVPR 2025 score as ``CVPR25_iter_eval.py`` writes it to its CSV (module docstring of
    :mod:`segbench.measuring.challenge`): ``None`` where the adapter did not take the click steps."""

    adapter: str
    case_id: str
    classes: int
    dsc: tuple[float, ...]  # the case DSC per step (mean over labels)
    nsd: tuple[float, ...]  # the case NSD per step (0 unless the DSC exceeds 0.2)
    dsc_auc: float | None
    nsd_auc: float | None
    dsc_final: float
    nsd_final: float
    seconds: float  # the case's model time over all steps (total_ms)
    over_time_limit: bool | None  # over the 90 s per class: the four scores are 0 (README rule)


def challenge_cases(rows: pl.DataFrame) -> list[ChallengeCase]:
    """The per-case CVPR 2025 scores of the ok rows of one task and ``cvpr25``/``cvpr25_nobox`` protocol,
    one per (adapter, case) whose every label was scored at every step it took."""
    out = []
    for (adapter, case_id), group in sorted(
        rows.group_by("adapter", "case_id"), key=lambda g: (str(g[0][0]), str(g[0][1]))
    ):
        steps = sorted(int(s) for s in group["step"].unique())
        labels = group["label"].n_unique()
        per_step = [group.filter(pl.col("step") == step) for step in steps]
        if any(at.height != labels or at["dice"].is_nan().any() for at in per_step):
            continue
        scores = [challenge.case_step_score(at["dice"].to_numpy(), at["nsd"].to_numpy()) for at in per_step]
        over = (
            group["over_time_limit"].drop_nulls()
            if "over_time_limit" in group.columns
            else pl.Series([], dtype=pl.Boolean)
        )
        score = challenge.cvpr25_case_score(
            [d for d, _ in scores], [n for _, n in scores], bool(over.any()) if len(over) else False
        )
        out.append(
            ChallengeCase(
                str(adapter),
                str(case_id),
                labels,
                tuple(d for d, _ in scores),
                tuple(n for _, n in scores),
                score.dsc_auc,
                score.nsd_auc,
                score.dsc_final,
                score.nsd_final,
                float(group["total_ms"].max()) / 1000,  # type: ignore[arg-type]
                bool(over.any()) if len(over) else None,
            )
        )
    return out


@dataclass(frozen=True)
class CostCurve:
    """Dice against interaction cost for one (adapter, protocol): a point per step."""

    adapter: str
    prompt: str
    steps: tuple[int, ...]
    interactions: tuple[float, ...]  # mean boxes + clicks per (case, label) pair at the step
    slices: tuple[float, ...]  # mean prompted slices per pair
    dice: tuple[Estimate, ...]


def cost_curves(rows: pl.DataFrame) -> list[CostCurve]:
    """One curve per (adapter, prompt protocol) from the ok rows of one task that record their cost
    (support-set protocols give no prompt and are left out)."""
    if not all(column in rows.columns for column in COST_COLUMNS):
        return []
    rows = rows.filter(pl.col("boxes").is_not_null())
    if SUPPORT_COLUMN in rows.columns:
        rows = rows.filter(pl.col(SUPPORT_COLUMN).is_null())
    curves = []
    groups = sorted(
        rows.group_by("adapter", "prompt"), key=lambda g: (natural_key(str(g[0][0])), natural_key(str(g[0][1])))
    )
    for (adapter, prompt), group in groups:
        at = [(int(step), part) for (step,), part in sorted(group.group_by("step"), key=lambda g: int(g[0][0]))]
        curves.append(
            CostCurve(
                str(adapter),
                str(prompt),
                tuple(step for step, _ in at),
                tuple(float((part["boxes"] + part["clicks"]).mean()) for _, part in at),  # type: ignore[arg-type]
                tuple(float(part["prompted_slices"].mean()) for _, part in at),  # type: ignore[arg-type]
                tuple(Estimate.of(part["dice"].to_numpy(), part["case_id"].to_numpy()) for _, part in at),
            )
        )
    return curves


def is_challenge(prompt: str) -> bool:
    return prompt in CVPR25_NAMES


@dataclass(frozen=True)
class SupportCurve:
    adapter: str
    protocol: str  # the protocol's name without the support size it may end with
    sizes: tuple[int, ...]
    dice: tuple[Estimate, ...]


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
