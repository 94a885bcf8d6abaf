"""`segbench compare`: real run pairs; a slower, hungrier or less accurate run fails, the same code passes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from segbench.running.store import sha256_file

from .conftest import run_cli

LITEMEDSAM_ROWS = pl.col("adapter") == "litemedsam"


def write_cases(run: Path, cases: pl.DataFrame) -> None:
    """Replace a run's rows as a run that made them would: ``cases.parquet`` and its sha256 in ``run.json``
    (segbench refuses a cases.parquet that differs from what its run recorded)."""
    cases.write_parquet(run / "cases.parquet")
    manifest = json.loads((run / "run.json").read_text())
    manifest["cases_sha256"] = sha256_file(run / "cases.parquet")
    (run / "run.json").write_text(json.dumps(manifest))


def derived_run(
    source: Path,
    target: Path,
    change: pl.Expr | None = None,
    column: str = "",
    manifest_change: dict | None = None,
    rows: pl.Expr = LITEMEDSAM_ROWS,
) -> Path:
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
        write_cases(target, cases.with_columns(pl.lit(target.name).alias("run_id")))
    return target


def compare(base: Path, new: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli("compare", str(base), str(new), "--html", str(new.parent / f"{new.name}.html"), *extra, check=False)


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


def test_a_few_milliseconds_more_a_case_is_below_the_timing_floor(quick_run: Path, tmp_path: Path) -> None:
    """otsu's cases take milliseconds: x1.5 of that is what a busy neighbour does to the same code, so the
    default floor leaves it alone, and with no floor the same change is a regression (so the floor is what
    excused it)."""
    otsu = pl.col("adapter") == "otsu"
    slower = derived_run(quick_run, tmp_path / "otsu-slower", pl.col("total_ms") * 1.5, "total_ms", rows=otsu)
    cases = pl.read_parquet(quick_run / "cases.parquet").filter(otsu)
    assert cases["total_ms"].median() * 0.5 < 5.0  # type: ignore[operator]  # the change is under the floor
    lines = [line for line in compare(quick_run, slower).stdout.splitlines() if line.startswith("otsu")]
    assert lines and not any("REGRESSION" in line for line in lines)
    strict = compare(quick_run, slower, "--min-delta-ms", "0")
    assert strict.returncode == 1 and "REGRESSION: latency x1.50" in strict.stdout


def machine_and_model_slower(source: Path, target: Path, machine: float, model: float) -> Path:
    """A copy of a run: every case ``model`` times longer, its reference workload ``machine`` times longer."""
    run = derived_run(source, target, pl.col("total_ms") * model, "total_ms", rows=pl.lit(True))
    cases = pl.read_parquet(run / "cases.parquet").with_columns(pl.col("probe_ms") * machine)
    write_cases(run, cases)
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


# Failed and missing cases: a model must not pass the gate by failing, and a vanished group must not pass silently.

OTSU_ROWS = pl.col("adapter") == "otsu"


def rewritten_run(source: Path, target: Path, rewrite) -> Path:  # type: ignore[no-untyped-def]
    """A copy of a real run under another id, its rows replaced by ``rewrite(rows)``."""
    run = derived_run(source, target)
    cases = rewrite(pl.read_parquet(run / "cases.parquet"))
    write_cases(run, cases.with_columns(pl.lit(target.name).alias("run_id")))
    return run


def otsu_cases(run: Path) -> tuple[list[str], list[str]]:
    """Otsu's case ids (sorted) and its prompt protocols in ``run``."""
    otsu = pl.read_parquet(run / "cases.parquet").filter(OTSU_ROWS)
    return sorted(otsu["case_id"].unique()), sorted(otsu["prompt"].unique())


def failing(cases: list[str], unread: bool):  # type: ignore[no-untyped-def]
    """Otsu fails ``cases``: as failed rows with NaN scores (the model raised), or, ``unread``, as the one
    ``*`` row the runner writes for a case it could not read (which stands for every prompt)."""
    hit = OTSU_ROWS & pl.col("case_id").is_in(cases)
    failed = {
        "status": pl.lit("failed"),
        "error": pl.lit("RuntimeError: boom"),
        **{name: pl.lit(float("nan")) for name in ("dice", "nsd", "hd95")},
    }

    def rewrite(rows: pl.DataFrame) -> pl.DataFrame:
        if not unread:
            return rows.with_columns(
                pl.when(hit).then(value).otherwise(pl.col(name)).alias(name) for name, value in failed.items()
            )
        star = (
            rows.filter(hit)
            .unique(["adapter", "task", "case_id"])
            .with_columns(label=pl.lit("*"), prompt=pl.lit("*"), step=pl.lit(0, pl.Int32), **failed)
        )
        return pl.concat([rows.filter(~hit), star])

    return rewrite


def table_lines(stdout: str, adapter: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(adapter + " ")]


@pytest.mark.parametrize("unread", [False, True], ids=["failed-rows", "unread-cases"])
def test_a_run_where_otsu_fails_half_its_cases_fails_the_gate(quick_run: Path, tmp_path: Path, unread: bool) -> None:
    cases, prompts = otsu_cases(quick_run)
    half = cases[: len(cases) // 2]
    new = rewritten_run(quick_run, tmp_path / "half", failing(half, unread))
    result = compare(quick_run, new)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = table_lines(result.stdout, "otsu")
    assert len(lines) == len(prompts)  # every prompt of otsu, also when the failure is a "*" row
    assert all(f"0→{len(half)} " in line for line in lines)  # failed base→new
    assert all(f"REGRESSION: {len(half)} of {len(cases)} cases failed (ok in base)" in line for line in lines)
    assert not any("REGRESSION" in line for name in ("box", "litemedsam") for line in table_lines(result.stdout, name))
    assert f"{len(half) * len(prompts)} in new" in result.stderr
    assert f"lost (ok in base, failed or missing in new): {len(half) * len(prompts)}" in result.stderr
    html = (tmp_path / "half.html").read_text()
    assert f"<td>0 → {len(half)}</td>" in html and f"{len(half)} of {len(cases)} cases failed" in html


def test_a_group_missing_from_the_new_run_loses_all_its_cases(quick_run: Path, tmp_path: Path) -> None:
    cases, prompts = otsu_cases(quick_run)
    without = rewritten_run(quick_run, tmp_path / "without", lambda rows: rows.filter(~OTSU_ROWS))
    result = compare(quick_run, without)
    assert result.returncode == 1
    lines = table_lines(result.stdout, "otsu")
    assert len(lines) == len(prompts)
    assert all(f" {len(cases)}/0 " in line for line in lines)  # unmatched base/new
    assert all(f"{len(cases)} of {len(cases)} cases missing from new (the group is gone)" in line for line in lines)
    # the reverse: cases only the new run has are reported, and lose nothing
    result = compare(without, quick_run)
    assert result.returncode == 0, result.stdout
    assert all(
        f" 0/{len(cases)} " in line and "nothing to compare" in line for line in table_lines(result.stdout, "otsu")
    )


def test_cases_failing_in_both_runs_are_reported_not_a_regression(quick_run: Path, tmp_path: Path) -> None:
    assert compare(quick_run, quick_run).returncode == 0  # a run against itself
    cases, prompts = otsu_cases(quick_run)
    broken = rewritten_run(quick_run, tmp_path / "broken", failing(cases[:1], unread=False))
    again = rewritten_run(quick_run, tmp_path / "again", failing(cases[:1], unread=True))
    result = compare(broken, again)
    assert result.returncode == 0, result.stdout
    assert all(" 1→1 " in line for line in table_lines(result.stdout, "otsu"))
    assert f"({len(prompts)} in both)" in result.stderr


def test_zero_or_missing_memory_and_latency_are_not_judged(quick_run: Path, tmp_path: Path) -> None:
    """A classical baseline on CUDA allocates nothing there (peak memory 0); rows may lack a value (null).
    In the base run, where a ratio would divide by them."""

    def unmeasured(rows: pl.DataFrame) -> pl.DataFrame:
        box = pl.col("adapter") == "box"
        return rows.with_columns(
            pl.when(OTSU_ROWS).then(0.0).when(box).then(None).otherwise(pl.col("peak_mem_mb")).alias("peak_mem_mb"),
            pl.when(box).then(None).otherwise(pl.col("total_ms")).alias("total_ms"),
        )

    base, html = rewritten_run(quick_run, tmp_path / "unmeasured", unmeasured), tmp_path / "diff.html"
    result = run_cli("compare", str(base), str(quick_run), "--html", str(html), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for adapter in ("otsu", "box"):
        lines = table_lines(result.stdout, adapter)
        assert lines and all("memory not judged" in line for line in lines)
        assert all(("speed not judged: latency 0 or not recorded" in line) == (adapter == "box") for line in lines)
    assert not any("not judged" in line for line in table_lines(result.stdout, "litemedsam"))
    assert "memory not judged" in html.read_text()


def test_case_counts_spread_an_unread_case_over_every_prompt() -> None:
    from segbench.reporting.compare import CaseCounts, case_counts

    def frame(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
        return pl.DataFrame(rows, schema=["adapter", "case_id", "prompt", "status"], orient="row").with_columns(
            task=pl.lit("t")
        )

    base = frame([("a", c, p, "ok") for c in ("c1", "c2") for p in ("p", "q")])
    new = frame(
        [("a", "c1", "p", "ok"), ("a", "c1", "q", "ok"), ("a", "c2", "*", "failed"), ("b", "c1", "*", "failed")]
    )
    counts = case_counts(base, new)
    lost = CaseCounts(base=2, new=2, failed_new=1, lost_failed=1)
    assert counts == {
        ("a", "t", "p"): lost,
        ("a", "t", "q"): lost,
        ("b", "t", "*"): CaseCounts(new=1, failed_new=1, missing_base=1),
    }
    assert counts[("b", "t", "*")].regressions() == [] and lost.regressions() == ["1 of 2 cases failed (ok in base)"]


def test_steps_an_adapter_could_not_take_are_no_failures(quick_run: Path, tmp_path: Path) -> None:
    """A box-only model on a click protocol records its click steps as ``not_taken``: the gate neither
    counts them as failed cases nor compares their (absent) scores."""

    def with_untaken_steps(rows: pl.DataFrame) -> pl.DataFrame:
        later = rows.filter(OTSU_ROWS).with_columns(
            step=pl.col("step") + 1,
            status=pl.lit("not_taken"),
            **{name: pl.lit(float("nan")) for name in ("dice", "nsd", "hd95")},
        )
        return pl.concat([rows, later])

    base = rewritten_run(quick_run, tmp_path / "base", with_untaken_steps)
    new = rewritten_run(quick_run, tmp_path / "new", with_untaken_steps)
    result = compare(base, new)
    assert result.returncode == 0, result.stdout
    assert all(" 0→0 " in line for line in table_lines(result.stdout, "otsu")), result.stdout
