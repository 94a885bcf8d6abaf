"""The aggregation rule (segbench.reporting.aggregate.AGGREGATION_RULE) and the ranking on top of it: failed and
missing cases enter every mean with the penalty, so failing never gains rank; the bootstrap resamples
cases with all their labels; shared ranks and unranked baselines; px where the images have no
spacing; and, on the real WBC data, per-label tables and the macro-mean headline as the rule says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from markupsafe import escape

from segbench.reporting.aggregate import AGGREGATION_RULE, Estimate, Table, _resampled_medians, final_steps, tables
from segbench.reporting.ranking import rank_table
from segbench.reporting.report import build_site

from .conftest import run_cli
from .synthetic import SyntheticTask, write_run

DIAGONAL = 135.0


def rows(
    dice: dict[str, list[float | None]],
    labels: tuple[str, ...] = ("x",),
    weights: str = "pretrained",
    unit: str | None = "mm",
) -> pl.DataFrame:
    """Final-step rows of task t, protocol box: ``dice[adapter][i]`` is case i's Dice on every label
    (None: the unit failed, one row with label ``*``)."""
    out = []
    for adapter, values in dice.items():
        for i, value in enumerate(values):
            for label in labels if value is not None else ("*",):
                out.append(
                    {
                        "task": "t",
                        "prompt": "box" if value is not None else "*",
                        "adapter": adapter,
                        "case_id": f"c{i:02d}",
                        "label": label,
                        "step": 0,
                        "status": "ok" if value is not None else "failed",
                        "weights": weights,
                        "dice": value if value is not None else float("nan"),
                        "nsd": value if value is not None else float("nan"),
                        "hd95": 10 * (1 - value) if value is not None else float("nan"),
                        "total_ms": 10.0,
                        "peak_mem_mb": 1.0,
                        "unit": unit,
                        "diagonal": DIAGONAL,
                        "pred_area": 100 if value else (0 if value == 0 else None),
                    }
                )
    return pl.DataFrame(out)


def table(frame: pl.DataFrame, label: str | None = None, **options: object) -> Table:
    (found,) = [t for t in tables(frame, **options) if t.label == label]  # type: ignore[arg-type]
    return found


def by_adapter(found: Table) -> dict[str, object]:
    return {r.row.adapter: r for r in rank_table(found)}


# (a) failing on the hardest cases -------------------------------------------------------------------


def test_failing_on_the_hardest_cases_is_penalised_and_never_ranks_higher() -> None:
    rng = np.random.default_rng(3)
    b = rng.uniform(0.3, 0.9, 20)
    hardest = set(np.argsort(b)[:3].tolist())
    a_tried = b + 0.03  # A is a little better on every case, but fails its 3 hardest
    a = [None if i in hardest else float(a_tried[i]) for i in range(20)]
    frame = rows({"a": a, "b": list(b)})
    ok_mean_a = np.mean([v for v in a if v is not None])
    assert ok_mean_a > b.mean()  # leaving the failures out (as before) would put A first
    ranked = by_adapter(table(frame))
    row_a = ranked["a"].row
    assert row_a.dice.mean < ranked["b"].row.dice.mean
    assert row_a.dice.mean == pytest.approx(sum(v for v in a if v is not None) / 20)  # 3 zeros in the mean
    assert (row_a.failed, row_a.missing, row_a.failures, row_a.cases) == (3, 0, 3, 17)
    assert row_a.hd95.mean == pytest.approx(np.median([10 * (1 - v) if v is not None else DIAGONAL for v in a]))
    assert ranked["a"].rank >= ranked["b"].rank


@pytest.mark.parametrize("seed", range(6))
def test_a_model_never_gains_rank_or_mean_by_failing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = {name: list(rng.uniform(0.2, 0.95, 12)) for name in ("p", "q", "r")}
    before = rank_table(table(rows(scores)))
    for victim in scores:
        failing = dict(scores)
        failing[victim] = [None if rng.random() < 0.4 else v for v in scores[victim]]
        after = rank_table(table(rows(failing)))
        old = next(r for r in before if r.row.adapter == victim)
        new = next(r for r in after if r.row.adapter == victim)
        assert new.row.dice.mean <= old.row.dice.mean + 1e-12
        position = [r.row.adapter for r in after].index(victim)
        assert position >= [r.row.adapter for r in before].index(victim)
        assert new.rank >= old.rank


def test_failures_are_shown_beside_the_mean(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"strong": 0.8, "steady": 0.6}, [SyntheticTask("t", 12, labels=("a", "b"))])
    cases = pl.read_parquet(run / "cases.parquet")
    worst = (
        cases.filter(pl.col("adapter") == "strong")
        .group_by("case_id")
        .agg(pl.col("dice").mean())
        .sort("dice")["case_id"][:3]
        .to_list()
    )
    failed = cases.filter((pl.col("adapter") == "strong") & pl.col("case_id").is_in(worst)).unique("case_id")
    failed = failed.with_columns(
        pl.lit("*").alias("label"),
        pl.lit("*").alias("prompt"),
        pl.lit("failed").alias("status"),
        pl.lit(float("nan")).alias("dice"),
        pl.lit("RuntimeError: boom").alias("error"),
    )
    kept = cases.filter(~((pl.col("adapter") == "strong") & pl.col("case_id").is_in(worst)))
    pl.concat([kept, failed]).write_parquet(run / "cases.parquet")
    build_site([run], tmp_path / "site")
    document = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    protocol = document["tasks"][0]["protocols"][0]
    strong = next(r for r in protocol["rows"] if r["adapter"] == "strong")
    assert (strong["failed"], strong["missing"]) == (6, 0)  # 3 cases x 2 labels: label "*" fails both
    for label in ("a", "b"):
        row = next(r for r in protocol["labels"][label] if r["adapter"] == "strong")
        expected = kept.filter((pl.col("adapter") == "strong") & (pl.col("label") == label))["dice"].sum() / 12
        assert row["failed"] == 3 and row["dice"]["mean"] == pytest.approx(expected)
    page = (tmp_path / "site" / "task-t.html").read_text()
    assert "6 failed, 0 missing" in page and "3 failed, 0 missing" in page


# (b) planned but missing ----------------------------------------------------------------------------


def test_a_planned_case_that_never_ran_is_missing_with_the_penalty() -> None:
    frame = rows({"a": [0.8] * 8, "b": [0.6] * 9}, labels=("x", "y"))  # b also scored c08
    planned = {("a", "t"): {f"c{i:02d}" for i in range(10)}, ("b", "t"): {f"c{i:02d}" for i in range(10)}}
    found = table(frame, planned=planned)
    assert found.scores.cases == tuple(f"c{i:02d}" for i in range(10))  # c09: planned, nobody ran it
    ranked = by_adapter(found)
    a, b = ranked["a"].row, ranked["b"].row
    assert (a.missing, a.failed, b.missing) == (4, 0, 2)  # (c08, c09) x 2 labels; b lacks c09 only
    assert a.dice.mean == pytest.approx(0.8 * 8 / 10) and b.dice.mean == pytest.approx(0.6 * 9 / 10)
    hd95 = found.scores.hd95["a"]
    assert hd95[8].tolist() == [DIAGONAL, DIAGONAL]  # c08's diagonal, read from b's rows
    assert np.isnan(hd95[9]).all()  # no row knows c09's extent
    assert table(frame).scores.cases == tuple(f"c{i:02d}" for i in range(9))  # older runs: nothing planned


def test_pages_read_planned_from_the_manifest(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"m": 0.7, "n": 0.5}, [SyntheticTask("t", 6)])
    manifest = json.loads((run / "run.json").read_text())
    manifest["planned"] = {f"{adapter}/t": [f"case-{i:04d}" for i in range(8)] for adapter in ("m", "n")}
    (run / "run.json").write_text(json.dumps(manifest))
    build_site([run], tmp_path / "site")
    rows_ = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["tasks"][0]["protocols"][0]["rows"]
    cases = pl.read_parquet(run / "cases.parquet")
    for row in rows_:
        assert (row["missing"], row["pairs"], row["cases"]) == (2, 8, 6)
        assert row["dice"]["mean"] == pytest.approx(cases.filter(pl.col("adapter") == row["adapter"])["dice"].sum() / 8)


# (c) the bootstrap keeps a case's labels together ---------------------------------------------------


def test_the_bootstrap_resamples_cases_with_all_their_labels() -> None:
    values = np.random.default_rng(0).uniform(0.1, 0.9, 30)
    frame = pl.concat([rows({"m": list(values)}, labels=("x",)), rows({"m": list(1 - values)}, labels=("y",))])
    (row,) = table(frame).rows
    # every case's two labels average to 0.5: any resample of CASES has macro mean 0.5; a resample of
    # (case, label) pairs would not
    assert (row.dice.mean, row.dice.low, row.dice.high) == pytest.approx((0.5, 0.5, 0.5))
    assert (row.pooled.low, row.pooled.high) == pytest.approx((0.5, 0.5))
    assert np.allclose(table(frame).scores.resampled_dice("m"), 0.5)
    (label_row,) = table(frame, "x").rows
    assert label_row.dice.high - label_row.dice.low > 0.1
    cases = np.repeat(np.arange(30), 2)
    grouped = Estimate.of(np.stack([values, 1 - values], axis=1).ravel(), groups=cases)
    assert (grouped.low, grouped.high) == pytest.approx((0.5, 0.5))
    assert grouped == Estimate.of(np.stack([values, 1 - values], axis=1).ravel(), groups=cases)  # seeded


# (d) shared ranks, rank intervals and baselines ----------------------------------------------------


def test_inseparable_adapters_share_a_rank_and_baselines_are_unranked_references() -> None:
    rng = np.random.default_rng(5)
    good = rng.uniform(0.7, 0.9, 25)
    wobble = 0.01 * (-1.0) ** np.arange(25)  # as often up as down: no test can separate the twins
    frame = rows(
        {
            "twin-1": list(good),
            "twin-2": list(good + wobble),
            "weak": list(good - 0.3),
            "reference": list(np.minimum(good + 0.05, 1)),
        }
    )
    ranked = rank_table(table(frame, baselines={"reference"}))
    assert [r.row.adapter for r in ranked][0] == "reference"  # placed by its score ...
    reference = ranked[0]
    assert reference.rank is None and reference.vs_next is None and reference.rank_text == "ref"  # ... unranked
    twins = {r.row.adapter: r for r in ranked if r.row.adapter.startswith("twin")}
    assert {r.rank for r in twins.values()} == {1} and all(r.shared for r in twins.values())
    assert {r.rank_text for r in twins.values()} == {"1="}
    weak = next(r for r in ranked if r.row.adapter == "weak")
    assert weak.rank == 3 and not weak.shared and (weak.rank_low, weak.rank_high) == (3, 3)
    lower_twin = next(
        r for r in ranked if r.row.adapter.startswith("twin") and r.vs_next is not None and r.vs_next.significant
    )
    assert lower_twin.vs_next.pairs == 25  # the second twin against weak, never against the baseline
    for twin in twins.values():
        assert (twin.rank_low, twin.rank_high) == (1, 2)


# (e) units ----------------------------------------------------------------------------------------


def _with_units(run: Path, unit: str | None, empty_cases: int = 0) -> None:
    cases = pl.read_parquet(run / "cases.parquet")
    empty = pl.col("case_id").is_in([f"case-{i:04d}" for i in range(empty_cases)]) & (pl.col("adapter") == "m")
    cases = cases.with_columns(
        pl.lit(unit, dtype=pl.String).alias("unit"),
        pl.lit(DIAGONAL).alias("diagonal"),
        pl.lit(400, dtype=pl.Int64).alias("truth_area"),
        pl.when(empty).then(0).otherwise(300).cast(pl.Int64).alias("pred_area"),
    )
    cases.write_parquet(run / "cases.parquet")


def test_distances_are_in_px_without_spacing_and_empty_predictions_are_counted(tmp_path: Path) -> None:
    for unit in ("px", "mm", None):
        run = write_run(tmp_path / f"run-{unit}", {"m": 0.7, "box": 0.5}, [SyntheticTask("t", 6)])
        manifest = json.loads((run / "run.json").read_text())
        manifest["adapters"]["box"]["family"] = "baseline"
        (run / "run.json").write_text(json.dumps(manifest))
        _with_units(run, unit, empty_cases=2)
        site = tmp_path / f"site-{unit}"
        build_site([run], site)
        shown = unit or "mm"  # runs before the unit column: mm, as they always said
        page = (site / "task-t.html").read_text()
        assert f"HD95 median ({shown})" in page and f"2.0 {shown}" in page
        assert f"HD95 median ({'mm' if shown == 'px' else 'px'})" not in page
        document = json.loads((site / "leaderboard.json").read_text())
        protocol_rows = {r["adapter"]: r for r in document["tasks"][0]["protocols"][0]["rows"]}
        assert protocol_rows["m"]["unit"] == shown and protocol_rows["m"]["hd95_empty_predictions"] == 2
        assert protocol_rows["box"]["hd95_empty_predictions"] == 0
        assert protocol_rows["box"]["rank"] is None and protocol_rows["box"]["baseline"] is True
        assert protocol_rows["m"]["rank"] == 1
        cases = pl.read_parquet(run / "cases.parquet").filter(pl.col("adapter") == "m")
        assert protocol_rows["m"]["hd95"]["median"] == pytest.approx(cases["hd95"].median())


# (f) the real WBC run: per-label tables and the macro mean, by the rule on the page -----------------


def _rule_means(cases: pl.DataFrame) -> dict[str, dict[str, float]]:
    """label -> adapter -> mean Dice by the written rule, recomputed here from the rows alone."""
    final = final_steps(cases.filter((pl.col("status") == "ok") & (pl.col("prompt") == "box")))
    means: dict[str, dict[str, float]] = {}
    adapters = sorted(cases["adapter"].unique().to_list())
    for label in sorted(final["label"].unique().to_list()):
        pairs = set(final.filter(pl.col("label") == label)["case_id"].to_list())
        means[label] = {}
        for adapter in adapters:
            own = dict(
                final.filter((pl.col("label") == label) & (pl.col("adapter") == adapter))
                .select("case_id", "dice")
                .iter_rows()
            )
            means[label][adapter] = sum(own.get(case, 0.0) for case in pairs) / len(pairs)  # penalty: Dice 0
    return means


@pytest.mark.data
@pytest.mark.slow
def test_wbc_is_ranked_per_label_and_by_the_macro_mean(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--suite",
        "smoke",
        "--tasks",
        "wbc",
        "--limit",
        "12",
        "--data-root",
        str(data_root),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    )
    run = Path(result.stdout.strip().splitlines()[-1])
    build_site([run], tmp_path / "site")
    cases = pl.read_parquet(run / "cases.parquet")
    manifest = json.loads((run / "run.json").read_text())
    baselines = {name for name, facts in manifest["adapters"].items() if facts.get("family") == "baseline"}
    means = _rule_means(cases)
    assert set(means) == {"whole_cell", "nucleus"}
    document = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    (wbc,) = document["tasks"]
    (protocol,) = wbc["protocols"]
    page = (tmp_path / "site" / "task-wbc.html").read_text()
    for label, expected in means.items():
        shown = protocol["labels"][label]
        assert f"wbc — prompt: box — label: {label}" in page  # the table is on the page, not folded away
        assert "<details>" not in page.split(f"label: {label}")[0].rsplit("Per label", 1)[-1]
        for row in shown:
            assert row["dice"]["mean"] == pytest.approx(expected[row["adapter"]])
        order = sorted(expected, key=lambda adapter: -expected[adapter])
        assert [row["adapter"] for row in shown] == order  # placed by the score, baselines included
        ranked = [a for a in order if a not in baselines]
        first = next(row for row in shown if row["rank"] == 1)
        assert first["adapter"] == ranked[0]
        assert all(row["rank"] is None for row in shown if row["adapter"] in baselines)
    for row in protocol["rows"]:
        per_label = [means[label][row["adapter"]] for label in means]
        assert row["dice"]["mean"] == pytest.approx(sum(per_label) / len(per_label))  # the macro mean
        final = final_steps(cases.filter((pl.col("status") == "ok") & (pl.col("adapter") == row["adapter"])))
        if final.height == 2 * 12:  # every pair scored: the pooled mean is the plain mean of the rows
            assert row["pooled_dice"]["mean"] == pytest.approx(final["dice"].mean())
        assert row["unit"] in ("px", "mm") and math.isfinite(row["hd95"]["median"])
    index = (tmp_path / "site" / "index.html").read_text()
    assert str(escape(AGGREGATION_RULE)) in index and str(escape(AGGREGATION_RULE)) in page
    assert "macro mean over its labels" in AGGREGATION_RULE
    assert document["overview"]["aggregation_rule"] == AGGREGATION_RULE
    columns = [(c["task"], c["label"]) for c in document["overview"]["columns"]]
    assert columns == [("wbc", None), ("wbc", "nucleus"), ("wbc", "whole_cell")]


# speed you can read ------------------------------------------------------------------------------------


def test_cases_run_on_a_slowed_machine_are_counted_beside_the_latency() -> None:
    frame = rows({"a": [0.8] * 10, "b": [0.7] * 10}).with_columns(run_id=pl.lit("r"), device=pl.lit("cpu"))
    case = frame["case_id"].str.slice(1).cast(pl.Int64).to_numpy()
    is_a = (frame["adapter"] == "a").to_numpy()
    probe = np.where(is_a, 14.0 + 0.01 * case, 0.0)  # one reading per case of a, shared by its rows
    slowed = is_a & np.isin(case, [1, 5, 7])
    probe[slowed] *= 1.6  # above 1.5x the median reading
    probe[~is_a] = 14.0 * 1.4  # b: one reading for all its rows, within 1.5x
    found = {row.adapter: row for row in table(frame.with_columns(probe_ms=pl.Series(probe))).rows}
    assert (found["a"].slow_cases, found["b"].slow_cases) == (3, 0)
    # a run without a probe (older runs) flags nothing
    assert all(row.slow_cases == 0 for row in table(frame).rows)


def test_the_slow_machine_median_counts_each_probe_reading_once() -> None:
    """A short adapter's single reading, repeated on its many rows, must not become the run's median: here
    b ran on a quiet machine (one reading) and a under a load that never changed (ten similar readings)."""
    frame = rows({"a": [0.8] * 10, "b": [0.7] * 10}, labels=tuple("xyzw")).with_columns(
        run_id=pl.lit("r"), device=pl.lit("cpu")
    )
    case = frame["case_id"].str.slice(1).cast(pl.Int64).to_numpy()
    is_a = (frame["adapter"] == "a").to_numpy()
    probe = np.where(is_a, 40.0 + 0.1 * case, 14.0)
    found = {row.adapter: row for row in table(frame.with_columns(probe_ms=pl.Series(probe))).rows}
    assert (found["a"].slow_cases, found["b"].slow_cases) == (0, 0)


@pytest.mark.parametrize(
    ("milliseconds", "shown"),
    [
        (0.5123, "0.512 ms"),
        (168.4, "168 ms"),
        (999.7, "1.00 s"),
        (1530.2, "1.53 s"),
        (12345.6, "12.3 s"),
        (float("nan"), "n/a"),
    ],
)
def test_times_are_shown_in_s_or_ms_to_three_significant_figures(milliseconds: float, shown: str) -> None:
    from segbench.reporting.report import _duration

    assert _duration(milliseconds) == shown


# (g) the bootstrap's fast paths give the values of the plain loop over resamples --------------------


def _loop_bootstrap(dice: np.ndarray, hd95: np.ndarray) -> dict[str, list[float]]:
    """The rule's bootstrap written out plainly: 2000 resamples of the cases, drawn by
    ``default_rng(0).integers`` (the seeded scheme), each scored by its own loop over labels and pairs:
    the macro and pooled mean Dice and the median HD95 of every resample."""
    cases, labels = dice.shape
    out: dict[str, list[float]] = {"macro": [], "pooled": [], "median": []}
    for drawn in np.random.default_rng(0).integers(0, cases, size=(2000, cases)):
        sample, distances = dice[drawn], hd95[drawn]
        per_label = [sample[:, j][np.isfinite(sample[:, j])] for j in range(labels)]
        out["macro"].append(float(np.mean([values.mean() for values in per_label if values.size])))
        out["pooled"].append(float(np.concatenate(per_label).mean()))
        out["median"].append(float(np.median(distances[np.isfinite(distances)])))
    return out


def _interval(statistics: list[float]) -> tuple[float, float]:
    low, high = np.percentile(statistics, [2.5, 97.5])
    return float(low), float(high)


def test_the_bootstraps_fast_paths_equal_the_plain_loop() -> None:
    """Two labels, 40 cases, two adapters with failures (penalised pairs), missing labels and HD95 ties: every
    CI of every table and the resampled headline the rank intervals read equal the plain loop's to 1e-12."""
    rng = np.random.default_rng(7)
    frames = []
    for adapter, skill in (("a", 0.8), ("b", 0.6)):
        dice: list[float | None] = list(np.round(rng.beta(10 * skill, 10 * (1 - skill), 40), 2))
        for failed in rng.choice(40, 4, replace=False):
            dice[int(failed)] = None
        frames.append(rows({adapter: dice}, labels=("x", "y")))
    frame = pl.concat(frames).filter(~((pl.col("label") == "y") & pl.col("case_id").is_in(["c03", "c11"])))
    found = tables(frame)
    assert [t.label for t in found] == [None, "x", "y"]
    for table_ in found:
        for row in table_.rows:
            dice_matrix = np.asarray(table_.scores.dice[row.adapter])
            loop = _loop_bootstrap(dice_matrix, np.asarray(table_.scores.hd95[row.adapter]))
            assert (row.dice.low, row.dice.high) == pytest.approx(_interval(loop["macro"]), abs=1e-12, rel=0)
            assert (row.pooled.low, row.pooled.high) == pytest.approx(_interval(loop["pooled"]), abs=1e-12, rel=0)
            assert (row.hd95.low, row.hd95.high) == pytest.approx(_interval(loop["median"]), abs=1e-12, rel=0)
            assert row.hd95.high > row.hd95.low  # a real interval, not a degenerate one
            assert np.allclose(table_.scores.resampled_dice(row.adapter), loop["macro"], rtol=0, atol=1e-12)
            for half_window in (0, 3):  # resamples whose middle lies beyond a narrow window: counted in full
                narrow = _resampled_medians(np.asarray(table_.scores.hd95[row.adapter]), half_window=half_window)
                assert np.allclose(narrow, loop["median"], rtol=0, atol=1e-12)
