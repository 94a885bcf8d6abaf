"""A metric added by a third-party plugin package (tests/plugins/segbench_metric_example: volume similarity,
through the ``segbench.plugins`` entry point; no segbench file names it), chosen by a task with
``[evaluation] metrics``, run beside a task with the default table, and shown on the leaderboard."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import polars as pl
import pytest

from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.errors import ConfigError
from segbench.measuring.metric_table import DEFAULT_NAMES, task_metrics, unit_key
from segbench.reporting.leaderboard_json import schema
from segbench.running.plan import RunOptions, make_plan

from .conftest import run_cli

PLUGIN = Path(__file__).parent / "plugins" / "segbench_metric_example"
METRIC = "volume_similarity"


@pytest.fixture(scope="module")
def metric_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(run dir, site dir, environment): the plugin pip-installed into a folder on PYTHONPATH; box and otsu
    on ``phantom-vs`` (Dice and volume similarity) and ``phantom`` (the default table), then ``segbench report``."""
    folder = tmp_path_factory.mktemp("metric-plugin")
    target = folder / "site-packages"
    source = shutil.copytree(PLUGIN, folder / "source")  # the build writes beside the sources: not in the repo
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(source)],
        check=True,
        cwd=folder,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}
    (folder / "tasks").mkdir()
    (folder / "tasks" / "phantom-vs.toml").write_text(
        '[task]\nname = "phantom-vs"\n[data]\nreader = "phantom"\ncases = 3\nseed = 1\n'
        '[labels]\norgan = "nonzero"\nlesion = "nonzero"\n[prompts]\nprotocols = ["box"]\n'
        f'[evaluation]\nmetrics = ["dice", "{METRIC}"]\n'
    )
    (folder / "bench.toml").write_text(
        'task_dirs = ["tasks"]\n[suites.vs]\nadapters = ["box", "otsu"]\ntasks = ["phantom-vs", "phantom"]\n'
        'protocols = ["box"]\nlimit = 3\n'
    )
    result = run_cli(
        "run", "--config", str(folder / "bench.toml"), "--suite", "vs", "--out", str(folder / "out"), "--no-progress",
        env=env,
    )  # fmt: skip
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    run_cli("report", str(run_dir), "--out", str(folder / "site"), env=env)
    return run_dir, folder / "site", env


def _rows(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "cases.parquet").filter(pl.col("status") == "ok")


def test_the_plugin_metric_is_a_column_computed_by_its_definition(metric_site: tuple[Path, Path, dict]) -> None:
    rows = _rows(metric_site[0])
    assert rows.schema[METRIC] == pl.Float64
    chosen, default = rows.filter(pl.col("task") == "phantom-vs"), rows.filter(pl.col("task") == "phantom")
    assert chosen.height and default.height
    # VS from the rows' own areas, independently of the plugin's code
    truth, predicted = chosen["truth_area"].to_numpy(), chosen["pred_area"].to_numpy()
    expected = 1 - abs(predicted - truth) / (predicted + truth)
    assert chosen[METRIC].to_numpy() == pytest.approx(expected, abs=1e-12)
    assert chosen["dice"].is_finite().all() and chosen["nsd"].is_nan().all()  # not chosen: not computed
    assert default[METRIC].is_null().all()  # a task that did not choose it has no value, not 0
    assert default["nsd"].is_finite().all() and default["hd95"].is_finite().all()


def _macro_mean(rows: pl.DataFrame, adapter: str, column: str) -> float:
    per_label = rows.filter(pl.col("adapter") == adapter).group_by("label").agg(pl.col(column).mean())
    return float(per_label[column].mean())  # type: ignore[arg-type]


def test_the_leaderboard_shows_the_plugin_metric(metric_site: tuple[Path, Path, dict]) -> None:
    run_dir, site, _ = metric_site
    rows = _rows(run_dir)
    document = json.loads((site / "leaderboard.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(document)
    described = {m["name"]: m for m in document["metrics"]}
    assert described[METRIC]["label"] == "Volume similarity" and described[METRIC]["higher_is_better"]
    assert [m["name"] for m in document["metrics"] if m["headline"]] == ["dice"]
    tasks = {task["name"]: task for task in document["tasks"]}
    assert tasks["phantom-vs"]["metrics"] == ["dice", METRIC]
    assert tasks["phantom"]["metrics"] == list(DEFAULT_NAMES)
    chosen = rows.filter(pl.col("task") == "phantom-vs")
    for row in tasks["phantom-vs"]["protocols"][0]["rows"]:
        # no case failed, so the headline is the macro mean over labels of the rows' values
        assert row[METRIC]["mean"] == pytest.approx(_macro_mean(chosen, row["adapter"], METRIC), abs=1e-12)
        assert row["dice"]["mean"] == pytest.approx(_macro_mean(chosen, row["adapter"], "dice"), abs=1e-12)
        assert row[METRIC]["low"] <= row[METRIC]["mean"] <= row[METRIC]["high"]
        assert row["nsd"] is None and row["hd95"] is None  # the task did not choose them: null, never 0
    for row in tasks["phantom"]["protocols"][0]["rows"]:
        assert row[METRIC] is None and row["nsd"] is not None
    box = next(r for r in tasks["phantom-vs"]["protocols"][0]["rows"] if r["adapter"] == "box")
    page = (site / "task-phantom-vs.html").read_text()
    assert '<th scope="col" data-type="number">Volume similarity</th>' in page
    assert f"{box[METRIC]['mean']:.3f}" in page
    assert ">NSD</th>" not in page and "HD95 median" not in page
    assert "penalty Dice 0, NSD 0, HD95 = the case&#39;s image diagonal, Volume similarity 0" in page
    other = (site / "task-phantom.html").read_text()
    assert ">Volume similarity</th>" not in other and ">NSD</th>" in other
    cases = (site / "cases-phantom-vs.html").read_text()
    assert "Volume similarity " in cases and "HD95" not in cases.split("<footer>")[0]


def test_metric_names_are_checked_when_a_run_is_planned() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'dcie'; did you mean 'dice'"):
        task_metrics(["dcie", "nsd"])
    with pytest.raises(ConfigError, match="must include 'dice'"):
        task_metrics(["nsd"])
    with pytest.raises(ConfigError, match="twice"):
        task_metrics(["dice", "dice"])


def test_unit_ids_change_with_the_metrics_but_not_for_the_default_table() -> None:
    default = task_metrics(None)
    assert unit_key(default) == "" and unit_key(task_metrics(list(DEFAULT_NAMES))) == ""
    assert unit_key(task_metrics(["dice"])) == "dice@1"
    bumped = (dataclasses.replace(default[0], version="2"), *default[1:])
    assert unit_key(bumped) not in ("", unit_key(default))


def test_a_plan_checks_the_names_and_keys_units_by_the_metrics() -> None:
    """The default table, named or not, leaves the unit ids as they were; another choice changes them."""
    tasks = discover_tasks()
    suite = load_config().suite("quick")

    def ids(metrics: tuple[str, ...] | None) -> list[str]:
        chosen = {**tasks, "phantom": dataclasses.replace(tasks["phantom"], metrics=metrics)}
        plan = make_plan(suite, chosen, RunOptions(adapters=("box",), device="cpu", limit=2, warmup=False))
        return [unit.unit_id for unit in plan.units]

    default = ids(None)
    assert ids(DEFAULT_NAMES) == default
    assert set(ids(("dice",))).isdisjoint(default)
    with pytest.raises(ConfigError, match="unknown metric 'hd59'; did you mean 'hd95'"):
        ids(("dice", "hd59"))
