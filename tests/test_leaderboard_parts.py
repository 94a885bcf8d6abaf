"""The pieces behind the leaderboard pages: paired ranking, Holm, the Pareto front, step and support
curves, kept masks (selection, 3D slice, round trip) and the overlays drawn from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from segbench.data.case import Case
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks, parse_task
from segbench.errors import ConfigError
from segbench.reporting.aggregate import tables
from segbench.reporting.curves import dice_auc, split_support_sizes, step_curves, support_curves
from segbench.reporting.overlays import crop_box, pick_cases
from segbench.reporting.pages import FAMILY_2D, FAMILY_3D, FAMILY_IN_CONTEXT, family
from segbench.reporting.ranking import RankedRow, holm, pareto_front, rank_table, wilcoxon_p
from segbench.running.execute import execute
from segbench.running.kept_masks import MaskSample, preview, representative_slice, sampled_cases, saved_predictions
from segbench.running.manifest import TaskRecord
from segbench.running.plan import RunOptions, WorkUnit, make_plan
from segbench.running.store import RunStore


def final_rows(dice: dict[str, list[float]], weights: str = "none", prompt: str = "box") -> pl.DataFrame:
    """One task, one protocol, one label: ``dice[adapter][i]`` is case i's Dice."""
    rows = [
        {
            "task": "t",
            "prompt": prompt,
            "adapter": adapter,
            "case_id": f"c{i:02d}",
            "label": "x",
            "step": 0,
            "status": "ok",
            "weights": weights,
            "dice": value,
            "nsd": value,
            "hd95": 1 - value,
            "total_ms": 10.0,
            "peak_mem_mb": 1.0,
        }
        for adapter, values in dice.items()
        for i, value in enumerate(values)
    ]
    return pl.DataFrame(rows)


def ranked_table(frame: pl.DataFrame) -> list[RankedRow]:
    """The ranked headline table of a one-task, one-protocol frame."""
    (table,) = [t for t in tables(frame) if t.label is None]
    return rank_table(table)


def test_adjacent_ranks_are_tested_pairwise_and_holm_adjusted() -> None:
    rng = np.random.default_rng(1)
    strong = rng.uniform(0.85, 0.95, 30)
    frame = final_rows(
        {"strong": list(strong), "weak": list(strong - 0.2), "weak-twin": list(strong - 0.2 + rng.normal(0, 0.01, 30))}
    )
    ranked = ranked_table(frame)
    # issue 13: the twins the test cannot separate share their rank ("2=")
    assert [r.row.adapter for r in ranked][0] == "strong" and [r.rank_text for r in ranked] == ["1", "2=", "2="]
    first, second, last = ranked
    assert first.vs_next.significant and first.vs_next.pairs == 30
    assert not second.vs_next.significant  # the twins differ by noise
    upper, lower = second.row.adapter, last.row.adapter
    differences = frame.filter(pl.col("adapter") == upper)["dice"] - frame.filter(pl.col("adapter") == lower)["dice"]
    raw = stats.wilcoxon(differences.to_numpy()).pvalue
    assert second.vs_next.p_value == pytest.approx(max(raw, first.vs_next.p_value))  # Holm: the larger p times 1
    assert last.vs_next is None


def test_cases_an_adapter_lacks_are_penalised_and_paired() -> None:
    # issue 13 changed this on purpose: b never ran a's 5 extra cases, so they enter b's mean as Dice 0
    frame = final_rows({"a": [0.9] * 10 + [0.1] * 5, "b": [0.8] * 10})
    first, second = ranked_table(frame)
    assert first.row.adapter == "a" and first.vs_next.pairs == 15
    assert second.row.dice.mean == pytest.approx(0.8 * 10 / 15) and (second.row.missing, second.row.failed) == (5, 0)


def test_random_weights_are_never_ranked() -> None:
    frame = pl.concat([final_rows({"real": [0.8, 0.9]}), final_rows({"untrained": [0.99, 0.99]}, weights="random")])
    ranked = ranked_table(frame)
    assert [(r.row.adapter, r.rank) for r in ranked] == [("real", 1), ("untrained", None)]


def test_holm_and_wilcoxon_edge_cases() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []
    assert wilcoxon_p(np.zeros(5)) == 1.0


def test_pareto_front_keeps_the_points_nothing_beats() -> None:
    points = [(10, 0.9), (5, 0.8), (20, 0.85), (1, 0.5), (5, 0.8), (3, float("nan"))]
    assert pareto_front(points) == [3, 1, 4, 0]  # (20, 0.85) is slower and worse than (10, 0.9)


def test_dice_auc_is_the_cvpr25_trapezoid_over_the_click_steps() -> None:
    per_step = np.array([[0.5, 0.6, 0.7, 0.9], [0.2, 0.2, 0.2, 0.2]])
    expected = [np.trapezoid(row[1:]) for row in per_step]
    assert dice_auc(per_step) == pytest.approx(expected) and dice_auc(per_step)[0] == pytest.approx(1.45)
    assert np.isnan(dice_auc(np.array([[0.5, 0.6]]))).all()  # one click: no area


def test_step_curves_count_only_pairs_with_every_step() -> None:
    rows = [
        {"adapter": "a", "case_id": case, "label": "x", "step": step, "dice": 0.5 + 0.1 * step}
        for case in ("c1", "c2")
        for step in range(4)
        if not (case == "c2" and step == 3)
    ]
    (curve,) = step_curves(pl.DataFrame(rows))
    assert curve.steps == (0, 1, 2, 3) and curve.pairs == 1
    assert curve.dice[3].mean == pytest.approx(0.8) and curve.auc.mean == pytest.approx(0.65 + 0.75)


def test_support_sweeps_become_curves_and_separate_table_rows() -> None:
    sizes = [1, 2, 4, 1, 2, 4]
    frame = final_rows({"u": [0.5, 0.6, 0.7, 0.55, 0.65, 0.75]}, prompt="support").with_columns(
        pl.Series("support_size", sizes, dtype=pl.Int32)
    )
    named = final_rows({"u": [0.4, 0.5]}, prompt="").with_columns(
        pl.Series("prompt", ["support_k8", "support_k16"]), pl.Series("support_size", [8, 16], dtype=pl.Int32)
    )
    split = split_support_sizes(pl.concat([frame, named]))
    assert sorted(split["prompt"].unique()) == [
        "support (k=1)",
        "support (k=2)",
        "support (k=4)",
        "support_k16",
        "support_k8",
    ]
    curves = {c.protocol: c for c in support_curves(pl.concat([frame, named]))}
    assert curves["support"].sizes == (1, 2, 4)
    assert [e.mean for e in curves["support"].dice] == pytest.approx([0.525, 0.625, 0.725])
    assert curves["support_k"].sizes == (8, 16)  # protocols named after their size form one curve
    assert support_curves(final_rows({"u": [0.5]})) == []


def test_sampled_cases_are_the_same_for_every_adapter_and_run() -> None:
    units = [WorkUnit(f"{a}{c}", a, task, f"case{c}") for a in ("x", "y") for task in ("t", "u") for c in range(20)]
    chosen = sampled_cases(units, 3, seed=0)
    assert len(chosen) == 6 and {task for task, _ in chosen} == {"t", "u"}
    assert chosen == sampled_cases(list(reversed(units)), 3, seed=0)
    assert chosen != sampled_cases(units, 3, seed=1)
    assert sampled_cases(units, 50, seed=0) == {(u.task, u.case_id) for u in units}


def test_volumes_keep_the_slice_with_the_largest_ground_truth() -> None:
    labels = {"a": np.zeros((5, 8, 8), bool), "b": np.zeros((5, 8, 8), bool)}
    labels["a"][1, :3, :3] = True  # 9 pixels
    labels["b"][3, :2, :2] = True
    labels["b"][1, 5:, 5:] = True  # slice 1 holds 18 pixels over both labels
    assert representative_slice(labels) == 1


def test_a_kept_sample_round_trips_through_the_store(tmp_path) -> None:
    image = np.broadcast_to(np.linspace(0, 255, 300).astype(np.uint8), (7, 600, 300))  # smooth: WebP keeps it
    truth = np.zeros((7, 600, 300), bool)
    truth[4, 100:300, 50:150] = True
    predicted = np.roll(truth, 10, axis=1)
    case = Case("vol-1", image, {"tumour": truth}, (3.0, 1.0, 1.0))
    sample = MaskSample.of(WorkUnit("u1", "model", "t", "vol-1"), case, {"box": {"tumour": predicted}})
    assert sample.slice_index == 4 and sample.image.shape == (512, 256, 3)
    RunStore(tmp_path).write_sample("u1", sample)
    (saved,) = saved_predictions(tmp_path)
    assert saved.meta["adapter"] == "model" and saved.has("box", "tumour") and not saved.has("box", "edema")
    loaded_image, loaded_truth, loaded_prediction = saved.load("box", "tumour")
    assert (loaded_truth == truth[4]).all() and (loaded_prediction == predicted[4]).all()
    expected = preview(image[4])  # kept as lossy WebP, for looking at only
    assert loaded_image.shape == expected.shape and np.abs(loaded_image.astype(int) - expected).mean() < 2


def test_overlay_zoom_window() -> None:  # the colours: tests/test_drilldown.py
    truth = np.zeros((64, 64), bool)
    truth[20:40, 20:40] = True
    prediction = np.zeros((64, 64), bool)
    prediction[25:35, 25:35] = True
    assert crop_box([truth, prediction], (64, 64)) == (0, 0, 64, 64)  # small image: the window is all of it
    big = np.zeros((512, 512), bool)
    big[200:220, 300:310] = True
    top, left, bottom, right = crop_box([big], (512, 512))
    assert top <= 200 and bottom >= 220 and left <= 300 and right >= 310 and bottom - top == 96


def test_best_median_and_worst_picks() -> None:
    rows = final_rows({"a": [0.3, 0.9, 0.5, 0.7]})
    picks = {names: (position, row["case_id"]) for names, position, row in pick_cases(rows)}
    assert picks == {("best",): (4, "c01"), ("median",): (2, "c02"), ("worst",): (1, "c00")}
    (only,) = pick_cases(final_rows({"a": [0.4]}))
    assert only[:2] == (("best", "median", "worst"), 1)


@pytest.mark.parametrize("count", [0, 2])
def test_a_run_keeps_masks_of_as_many_cases_as_asked(tmp_path, count: int) -> None:
    suite = load_config().suite("quick")
    plan = make_plan(suite, discover_tasks(), RunOptions(adapters=("box",), device="cpu", save_masks=count))
    assert plan.config["save_masks"] == count
    store = execute(plan, tmp_path, progress=False)
    assert len(saved_predictions(store.dir)) == count
    assert len(list(store.samples.glob("case-*.npz"))) == count


def test_save_masks_must_be_a_count(tmp_path) -> None:
    config = tmp_path / "bench.toml"
    config.write_text('[suites.s]\nadapters = ["box"]\ntasks = ["phantom"]\nsave_masks = -1\n')
    with pytest.raises(ConfigError, match="save_masks must be an integer >= 0"):
        load_config(config)


def test_task_families_on_the_overview() -> None:
    assert family(TaskRecord(family="Microscopy", dim=3), has_support=True) == "Microscopy"
    assert family(TaskRecord(dim=3), has_support=False) == FAMILY_3D
    assert family(TaskRecord(dim=2), has_support=True) == FAMILY_IN_CONTEXT
    assert family(TaskRecord(dim=2, family=None), has_support=False) == FAMILY_2D
    assert (
        parse_task(
            {"task": {"name": "t", "family": "Microscopy"}, "data": {"reader": "phantom"}, "labels": {"x": "nonzero"}},
            Path("t.toml"),
        ).family
        == "Microscopy"
    )
