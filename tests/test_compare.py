"""`segbench compare`: real run pairs; a slower, hungrier or less accurate run fails, the same code passes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from .conftest import run_cli

LITEMEDSAM_ROWS = pl.col("adapter") == "litemedsam"


def derived_run(source: Path, target: Path, change: pl.Expr | None = None, column: str = "",
                manifest_change: dict | None = None, rows: pl.Expr = LITEMEDSAM_ROWS) -> Path:
    """A copy of a real run under another id, with one column changed in some rows (LiteMedSAM's)."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "run.json").read_text())
    manifest["run_id"] = target.name
    manifest.update(manifest_change or {})
    (target / "run.json").write_text(json.dumps(manifest))
    shutil.rmtree(target / "parts")
    if change is not None:
        cases = pl.read_parquet(target / "cases.parquet")
        cases = cases.with_columns(pl.when(rows).then(change).otherwise(pl.col(column)).alias(column))
        cases.with_columns(pl.lit(target.name).alias("run_id")).write_parquet(target / "cases.parquet")
    return target


def compare(base: Path, new: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli("compare", str(base), str(new), "--html", str(new.parent / f"{new.name}.html"), *extra,
                   check=False)


@pytest.fixture(scope="module")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another run of the same code (the same suite, so the same adapters in the same process order)."""
    out = tmp_path_factory.mktemp("again")
    result = run_cli("run", "--out", str(out), "--run-id", "again", "--no-progress")
    return Path(result.stdout.strip().splitlines()[-1])


def test_two_runs_of_the_same_code_pass(quick_run: Path, second_run: Path) -> None:
    result = compare(quick_run, second_run)
    assert result.returncode == 0, result.stdout + result.stderr  # the table says what regressed
    rows = [line for line in result.stdout.splitlines()[1:] if line.strip()]
    assert {line.split()[0] for line in rows} == {"box", "litemedsam", "otsu"}
    no_change = re.compile(r"[+-]0\.000 \[[+-]0\.000, [+-]0\.000\]")  # ΔDice [95% CI], to 3 decimals
    assert all(no_change.search(line) for line in rows)
    html = (second_run.parent / "again.html").read_text()
    assert "no regression" in html


def machine_and_model_slower(source: Path, target: Path, machine: float, model: float) -> Path:
    """A copy of a run: every case ``model`` times longer, its reference workload ``machine`` times longer."""
    run = derived_run(source, target, pl.col("total_ms") * model, "total_ms", rows=pl.lit(True))
    cases = pl.read_parquet(run / "cases.parquet").with_columns(pl.col("probe_ms") * machine)
    cases.write_parquet(run / "cases.parquet")
    return run


def test_a_machine_slower_than_the_tolerance_leaves_speed_unjudged(quick_run: Path, tmp_path: Path) -> None:
    """Every case 1.5x slower and so was the reference workload before it: the machine, not the code."""
    result = compare(quick_run, machine_and_model_slower(quick_run, tmp_path / "busy", 1.5, 1.5))
    assert result.returncode == 0, result.stdout
    rows = result.stdout.splitlines()[1:]
    unjudged = "speed not judged: the machine's speed moved x1.50"
    assert rows and all(" x1.50 " in line and unjudged in line for line in rows)
    assert "their speed is reported, not judged" in result.stderr
    assert "The machine was not steady" in (tmp_path / "busy.html").read_text()


def test_a_small_machine_drift_is_divided_out_and_a_regression_still_fails(quick_run: Path, tmp_path: Path) -> None:
    result = compare(quick_run, machine_and_model_slower(quick_run, tmp_path / "drift", 1.05, 1.5))
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("litemedsam")]
    assert lines and all("REGRESSION: latency x1.43" in line for line in lines)  # 1.5 / 1.05


@pytest.mark.parametrize("machine", [0.95, 0.5])
def test_a_faster_machine_never_makes_a_regression(quick_run: Path, tmp_path: Path, machine: float) -> None:
    """The probe may excuse a slowdown, never make one: a quicker reference workload is not divided out,
    and one quicker than the tolerance (which could hide a slowdown) leaves speed unjudged."""
    quicker = derived_run(quick_run, tmp_path / "quicker", pl.col("probe_ms") * machine, "probe_ms", rows=pl.lit(True))
    result = compare(quick_run, quicker)
    assert result.returncode == 0 and "REGRESSION" not in result.stdout
    assert ("speed not judged" in result.stdout) == (machine < 1 / 1.1)


def test_speed_off_reports_a_slowdown_without_failing(quick_run: Path, tmp_path: Path) -> None:
    slower = derived_run(quick_run, tmp_path / "slower", pl.col("total_ms") * 1.5, "total_ms")
    result = compare(quick_run, slower, "--fail-speed", "off")
    assert result.returncode == 0 and "REGRESSION" not in result.stdout
    assert any(line.startswith("litemedsam") and "x1.50" in line for line in result.stdout.splitlines())
    assert "speed is reported, not gated" in result.stderr


def test_one_and_a_half_times_slower_fails(quick_run: Path, tmp_path: Path) -> None:
    slower = derived_run(quick_run, tmp_path / "slower", pl.col("total_ms") * 1.5, "total_ms")
    result = compare(quick_run, slower)
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("litemedsam")]
    assert lines and all("REGRESSION: latency x1.50" in line for line in lines)
    assert not any("REGRESSION" in line for line in result.stdout.splitlines() if line.startswith("otsu"))


def test_a_dice_drop_of_five_points_fails(quick_run: Path, tmp_path: Path) -> None:
    worse = derived_run(quick_run, tmp_path / "worse", (pl.col("dice") - 0.05).clip(0, 1), "dice")
    result = compare(quick_run, worse, "--fail-dice", "0.01")
    assert result.returncode == 1 and "REGRESSION: Dice -0.05" in result.stdout


def test_more_memory_fails(quick_run: Path, tmp_path: Path) -> None:
    hungrier = derived_run(quick_run, tmp_path / "hungrier", pl.col("peak_mem_mb") * 1.25, "peak_mem_mb")
    result = compare(quick_run, hungrier, "--fail-memory", "10%", "--min-delta-mb", "64")  # the floor: next test
    assert result.returncode == 1 and "peak memory x1.25" in result.stdout


def test_host_rss_drift_of_a_process_is_not_a_regression(quick_run: Path, tmp_path: Path) -> None:
    """+120 MB on every row: what two runs of the same code on a CPU showed for the baselines (x1.13 of
    their ~1 GB process RSS); a regression only when asked to count changes that small."""
    drift = derived_run(quick_run, tmp_path / "drift", pl.col("peak_mem_mb") + 120, "peak_mem_mb", rows=pl.lit(True))
    assert compare(quick_run, drift).returncode == 0
    result = compare(quick_run, drift, "--min-delta-mb", "0")
    assert result.returncode == 1 and "REGRESSION: peak memory" in result.stdout


def test_other_machine_is_warned_about(quick_run: Path, tmp_path: Path) -> None:
    manifest = json.loads((quick_run / "run.json").read_text())
    machine = {**manifest["machine"], "cpu": "Some Other CPU"}
    elsewhere = derived_run(quick_run, tmp_path / "elsewhere", manifest_change={"machine": machine})
    result = compare(quick_run, elsewhere)
    assert result.returncode == 0 and "warning: the runs differ in cpu" in result.stderr
    assert "different machines" in (tmp_path / "elsewhere.html").read_text()


def test_runs_with_nothing_in_common_are_an_error(quick_run: Path, tmp_path: Path) -> None:
    other = derived_run(quick_run, tmp_path / "other", pl.lit("elsewhere"), "task", rows=pl.lit(True))
    result = compare(quick_run, other)
    assert result.returncode == 2 and "share no" in result.stderr
