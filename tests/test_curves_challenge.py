"""The interaction-curve numbers against the CVPR 2025 script's own (issue 16 items 3 and 4): DSC AUC over
the click steps with and without a box, the per-case challenge scores, the 90 s per class bound, NoC@85/90
and the interaction cost columns.

The official numbers are those of tests/fixtures/official/cvpr25_iter_eval.json (JunMa11/CVPR-MedSegFMCompetition
@ 748e862d162e3e3ee8197bd4085b19bbbe0bb8a0, CVPR25_iter_eval.py; provenance in tests/test_challenge_protocols.py).
Its script appends a 0 in place of the box step when a case has no box and integrates ``dscs[-5:]``, so the
AUC of the five click steps is the same number with or without the box step before them: both starts are
checked against the fixture's DSC_AUC from the same five click-step values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from segbench.data.case import Case
from segbench.data.suites import Suite
from segbench.data.taskspec import discover_tasks
from segbench.measuring import challenge, cost
from segbench.protocols.base import NOT_TAKEN, Ask, ProtocolInputs
from segbench.protocols.challenge_kinds import CVPR25_SECONDS_PER_CLASS
from segbench.protocols.prompts import parse_protocol
from segbench.reporting.curves import challenge_cases, cost_curves, not_taken, step_curves
from segbench.running.plan import RunOptions, make_plan
from segbench.running.runner import UnitRunner
from segbench.running.store import RunStore

from .test_challenge_scores import load


def rows(adapter: str, case: str, label: str, dices: list[float], **columns: list[Any]) -> list[dict[str, Any]]:
    out = []
    for step, dice in enumerate(dices):
        row = {"adapter": adapter, "case_id": case, "label": label, "step": step, "dice": dice, "status": "ok"}
        row |= {name: values[step] for name, values in columns.items()}
        out.append(row)
    return out


def frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(records, infer_schema_length=None)


@pytest.fixture(scope="module")
def official() -> dict[str, Any]:
    return load("cvpr25_iter_eval.json")["cases"][0]  # the LA case: one class, so a pair is a case


def test_dsc_auc_with_a_box_leaves_the_box_step_out(official: dict[str, Any]) -> None:
    dices = [step["dsc"] for step in official["steps"]]
    clicks = list(range(6))  # step 0: the box alone
    boxes = [1] * 6
    (curve,) = step_curves(frame(rows("m", "c", "a", dices, clicks=clicks, boxes=boxes, prompted_slices=boxes)))
    assert curve.click_steps == (1, 2, 3, 4, 5)
    assert curve.auc is not None and curve.auc.mean == pytest.approx(official["DSC_AUC"], abs=1e-6)


def test_dsc_auc_without_a_box_keeps_the_first_click_step(official: dict[str, Any]) -> None:
    """cvpr25_nobox: step 0 is the first click's prediction; the script's AUC is over it and the next four."""
    dices = [step["dsc"] for step in official["steps"][1:]]
    clicks = [1, 2, 3, 4, 5]
    zeros = [0] * 5
    (curve,) = step_curves(frame(rows("m", "c", "a", dices, clicks=clicks, boxes=zeros, prompted_slices=clicks)))
    assert curve.click_steps == (0, 1, 2, 3, 4)
    assert curve.auc is not None and curve.auc.mean == pytest.approx(official["DSC_AUC"], abs=1e-6)
    assert curve.auc.mean != pytest.approx(float(np.trapezoid(dices[1:])), abs=1e-6)  # dropping step 0 differs


def test_case_scores_equal_the_scripts_csv(official: dict[str, Any]) -> None:
    steps = official["steps"]
    dices, nsds = [s["dsc"] for s in steps], [s["nsd"] for s in steps]
    seconds = [12000.0] * 6
    (case,) = challenge_cases(
        frame(rows("m", "c", "a", dices, nsd=nsds, total_ms=seconds, over_time_limit=[False] * 6))
    )
    assert (case.dsc_auc, case.nsd_auc, case.dsc_final, case.nsd_final) == pytest.approx(
        (official["DSC_AUC"], official["NSD_AUC"], official["DSC_Final"], official["NSD_Final"]), abs=1e-6
    )
    assert case.over_time_limit is False and case.seconds == pytest.approx(12.0)


def test_case_scores_gate_the_nsd_on_the_case_mean_dice() -> None:
    """Two labels: the case NSD is their mean only while their mean Dice exceeds 0.2, computed independently
    with the mask-level scorer on small masks."""
    gt = np.zeros((1, 30, 30), np.uint8)
    gt[0, 2:12, 2:12] = 1
    gt[0, 16:28, 16:28] = 2
    preds = []
    for width in (1, 6, 10):  # a thin sliver, then wider overlaps of label 1; label 2 missed, then found
        pred = np.zeros_like(gt)
        pred[0, 2:12, 2 : 2 + width] = 1
        if width > 1:
            pred[0, 16:28, 16:28] = 2
        preds.append(pred)
    expected = [challenge.multi_class_scores(gt, p, (1.0, 1.0, 1.0), [1, 2]) for p in preds]
    assert expected[0][0] < challenge.NSD_GATE < expected[1][0]  # the case crosses the gate
    from segbench.measuring import metrics

    records = []
    for label in (1, 2):
        scored = [metrics.evaluate(gt == label, p == label, (1.0, 1.0, 1.0), 2.0) for p in preds]
        records += rows("m", "c", str(label), [s.dice for s in scored], nsd=[s.nsd for s in scored], total_ms=[1.0] * 3)
    (case,) = challenge_cases(frame(records))
    assert case.dsc == pytest.approx([d for d, _ in expected], abs=1e-9)
    assert case.nsd == pytest.approx([n for _, n in expected], abs=1e-9)
    assert case.dsc_auc is None  # three steps: not the five click steps of the challenge


def test_a_case_over_the_time_bound_scores_zero(official: dict[str, Any]) -> None:
    steps = official["steps"]
    dices, nsds = [s["dsc"] for s in steps], [s["nsd"] for s in steps]
    (case,) = challenge_cases(
        frame(rows("m", "c", "a", dices, nsd=nsds, total_ms=[95000.0] * 6, over_time_limit=[True] * 6))
    )
    assert (case.dsc_auc, case.nsd_auc, case.dsc_final, case.nsd_final) == (0.0, 0.0, 0.0, 0.0)
    assert case.over_time_limit is True


def test_noc_counts_clicks_to_reach_the_threshold_and_the_pairs_that_never_do() -> None:
    clicks = list(range(6))
    records = (
        rows("m", "c1", "a", [0.5, 0.86, 0.87, 0.91, 0.92, 0.93], clicks=clicks)  # 85 at 1 click, 90 at 3
        + rows("m", "c2", "a", [0.9, 0.9, 0.9, 0.9, 0.9, 0.9], clicks=clicks)  # the box alone: 0 clicks
        + rows("m", "c3", "a", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], clicks=clicks)  # never: the maximum, 5
    )
    (curve,) = step_curves(frame([r | {"boxes": 1, "prompted_slices": 1} for r in records]))
    at85, at90 = curve.noc
    assert (at85.threshold, at85.never, at85.pairs) == (0.85, 1, 3)
    assert at85.mean.mean == pytest.approx((1 + 0 + 5) / 3)
    assert at90.never == 1 and at90.mean.mean == pytest.approx((3 + 0 + 5) / 3)
    assert curve.interactions == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


def test_a_box_only_adapter_takes_the_box_step_and_no_click_step() -> None:
    """cvpr25 and microsam need a box alone for their first step: a box-only adapter is planned, takes that
    step, and its click steps are not taken (rows with status not_taken), never scored as improvements."""
    for value in ({"kind": "cvpr25"}, {"kind": "microsam"}):
        kind = parse_protocol(value).handler
        assert kind.first_requires == frozenset({"box"}) and kind.steps_for(frozenset({"box"})) == 1
        assert kind.steps_for(frozenset({"box", "point"})) == kind.steps
    assert parse_protocol({"kind": "cvpr25", "start": "none"}).handler.first_requires == frozenset({"point"})
    records = rows("boxonly", "c", "a", [0.8], clicks=[0], boxes=[1], prompted_slices=[1])
    records += [
        {"adapter": "boxonly", "case_id": "c", "label": "a", "step": s, "dice": float("nan"), "status": NOT_TAKEN}
        for s in range(1, 6)
    ]
    records += rows("clicker", "c", "a", [0.8, 0.86, 0.9, 0.9, 0.9, 0.9], clicks=list(range(6)), boxes=[1] * 6)
    whole = frame([r | {"task": "t", "prompt": "cvpr25"} for r in records])
    short = not_taken(whole)
    assert short == {("t", "cvpr25"): ["boxonly"]}
    boxonly, clicker = step_curves(whole.filter(pl.col("status") == "ok"), short[("t", "cvpr25")])
    assert boxonly.not_taken and boxonly.steps == (0,) and boxonly.auc is None
    assert [n.never for n in boxonly.noc] == [1, 1] and all(np.isnan(n.mean.mean) for n in boxonly.noc)
    assert not clicker.not_taken and clicker.auc is not None and clicker.noc[0].mean.mean == 1.0


def test_ask_cost_counts_boxes_clicks_and_prompted_slices() -> None:
    truth = np.zeros((6, 20, 20), bool)
    truth[1:5, 4:12, 4:12] = True
    inputs = ProtocolInputs(0, "t", "c", {"a": truth})
    boxes = parse_protocol("slice_boxes").handler.first(inputs)
    none_drawn = {"scribbles": 0, "lassos": 0}
    assert boxes.cost("a") == {"boxes": 4, "clicks": 0, "prompted_slices": 4, **none_drawn}
    kind = parse_protocol({"kind": "cvpr25"}).handler
    ask: Ask = kind.first(inputs)
    assert ask.cost("a") == {"boxes": 1, "clicks": 0, "prompted_slices": 1, **none_drawn}
    wrong = np.zeros_like(truth)
    wrong[1:5, 4:12, 4:8] = True
    ask = kind.refine(ask, wrong[None], [None])
    cost_now = ask.cost("a")
    assert cost_now["boxes"] == 1 and cost_now["clicks"] == 1 and 1 <= cost_now["prompted_slices"] <= 2
    curves = cost_curves(
        frame(
            [
                r | {"prompt": "p", "support_size": None}
                for r in rows("m", "c", "a", [0.5, 0.7], boxes=[1, 1], clicks=[0, 1], prompted_slices=[1, 2])
            ]
        )
    )
    assert [(c.interactions, c.slices) for c in curves] == [((1.0, 2.0), (1.0, 2.0))]


class FrozenClock:
    """``time`` for :func:`segbench.measuring.cost.timed`: it stands still until :meth:`spend` moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)


@pytest.mark.parametrize(
    "seconds, over", [(CVPR25_SECONDS_PER_CLASS + 10, True), (CVPR25_SECONDS_PER_CLASS - 10, False)]
)
def test_the_time_bound_is_flagged_per_row(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seconds: float, over: bool
) -> None:
    """A stand-in slow adapter: the box baseline (box-only: it takes the cvpr25 box step) whose first
    predict of the case takes ``seconds`` on a frozen clock. Over 90 s for its one label, every row of the
    case says so; the case's challenge score is then 0."""
    suite = Suite("t", "", ("box",), ("la-heart",), (parse_protocol({"kind": "cvpr25"}),), 0, 1, Path("t.toml"), 0)
    plan = make_plan(suite, discover_tasks(), RunOptions(device="cpu", data_root=data_root, warmup=False))
    runner = UnitRunner(plan, "box")
    clock = FrozenClock()
    monkeypatch.setattr(cost, "time", clock)
    adapter = runner.adapter
    original = adapter.predict
    calls: list[int] = []

    def slow_predict(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            clock.spend(seconds)
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(adapter, "predict", slow_predict)
    truth = np.zeros((5, 24, 24), bool)  # a small volume in place of the task's case: the task gives its label
    truth[1:4, 6:16, 8:18] = True
    image = np.where(truth, 200, 20).astype(np.uint8)
    result = runner.run(plan.units[0], Case("small", image, {"left_atrium": truth}, (1.0, 1.0, 1.0)))
    taken = [row for row in result.rows if row["status"] == "ok"]
    assert len(taken) == 1 and taken[0]["step"] == 0 and taken[0]["total_ms"] == pytest.approx(1000 * seconds)
    assert taken[0]["over_time_limit"] is over
    assert sorted(row["step"] for row in result.rows if row["status"] == NOT_TAKEN) == [1, 2, 3, 4, 5]
    store = RunStore(tmp_path / "run")
    store.write_unit(plan.units[0].unit_id, result)
    assert store.done_units() == {plan.units[0].unit_id: "ok"}  # a step not taken is no failure: no retry
    (case,) = challenge_cases(
        frame(
            [
                {
                    k: row[k]
                    for k in ("adapter", "case_id", "label", "step", "dice", "nsd", "total_ms", "over_time_limit")
                }
                for row in taken
            ]
        )
    )
    assert case.over_time_limit is over and (case.dsc_final == 0.0) is over
