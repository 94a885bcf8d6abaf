"""How a run says it went: masks that are not bool fail their case naming what came back, the run ends
with a table and each failing adapter's first error, and the exit status tells an adapter that failed
every case (or, with --fail-on-error, any failure) from a clean run."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segbench.data.readers.phantom import phantom
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.interface import MaskError, check_masks
from segbench.running import executors
from segbench.running.execute import execute
from segbench.running.plan import RunOptions, RunPlan, WorkUnit, make_plan
from segbench.running.runner import UnitRunner
from segbench.running.store import RunStore

from .conftest import run_cli
from .plugin_site import install_plugin

PLUGIN = """
import numpy as np

from segbench import hookimpl
from segbench.adapters.baselines import BoxBaseline
from segbench.interface import AdapterMeta, Prediction
from segbench.data.readers.phantom import phantom

POISON = phantom(0, 1)[0]


class FloatBox(BoxBaseline):
    meta = AdapterMeta(name="float-box", family="test", description="box as float32 probabilities",
                       capabilities=BoxBaseline.meta.capabilities)

    def predict(self, state, prompts=None, support=None):
        prediction = super().predict(state, prompts, support)
        return Prediction(prediction.masks.astype(np.float32), None, prediction.feedback)


class FlakyBox(BoxBaseline):
    meta = AdapterMeta(name="flaky-box", family="test", description="box; raises on phantom-001",
                       capabilities=BoxBaseline.meta.capabilities)

    def encode(self, image):
        if np.array_equal(image, POISON):
            raise RuntimeError("flaky-box cannot read this scan")
        return super().encode(image)


@hookimpl
def segbench_register_adapters(register):
    register(FloatBox)
    register(FlakyBox)
"""
CASES = 4  # the quick suite's phantom task


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return install_plugin(tmp_path_factory.mktemp("site"), "segbench_summary_test", PLUGIN, "segbench-summary-test")


def test_masks_must_be_numpy_bool_of_the_expected_shape() -> None:
    good = np.zeros((2, 3, 4), bool)
    assert check_masks(good, (2, 3, 4)) is good
    for wrong, says in [
        (good.astype(np.uint8), "dtype uint8 and shape (2, 3, 4)"),
        (good.astype(np.float32), "dtype float32"),
        (good[:1], "shape (1, 3, 4)"),
        (good.tolist(), "builtins.list"),
    ]:
        with pytest.raises(MaskError, match=r"expected .*bool.* of shape \(2, 3, 4\)") as raised:
            check_masks(wrong, (2, 3, 4))
        assert says in str(raised.value)


def test_float_masks_fail_their_cases_and_an_adapter_failing_every_case_fails_the_run(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    result = run_cli(
        "run", "--adapters", "box,float-box", "--out", str(tmp_path), "--no-progress", env=plugin_env, check=False
    )
    assert result.returncode == 3, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    cases = RunStore(run_dir).read_cases()
    floats = cases.filter(pl.col("adapter") == "float-box")
    assert floats.height == CASES * 2 * 2 and (floats["status"] == "failed").all()  # 2 labels x 2 box protocols
    assert all(error.startswith("adapter returned masks of dtype float32") for error in floats["error"])
    assert "first error of float-box: adapter returned masks of dtype float32" in result.stderr
    assert "float-box failed every one of its cases" in result.stderr
    # a failed row still says the case's unit and diagonal (the penalty), computed here from the phantom
    for case_id, diagonal in floats.select("case_id", "diagonal").unique().iter_rows():
        height, width = phantom(0, int(case_id.rsplit("-", 1)[1]))[0].shape[:2]
        assert diagonal == pytest.approx(math.hypot(height, width))
    assert set(floats["unit"]) == {"px"} and floats["pred_area"].is_null().all()
    box = cases.filter(pl.col("adapter") == "box")
    assert (box["status"] == "ok").all() and (box["truth_area"] > 0).all() and (box["pred_area"] > 0).all()
    # the summary table: every pair with its cases and failures, box's Dice as the rows give it
    table = {
        line.split()[0]: line.split()
        for line in result.stderr.splitlines()
        if line.split()[:2] in (["box", "phantom"], ["float-box", "phantom"])
    }
    assert table["float-box"][2:] == [str(CASES), "-", "-", str(CASES)]
    assert table["box"][2:4] == [str(CASES), f"{box['dice'].mean():.3f}"] and table["box"][5] == "0"


def test_one_failed_case_exits_zero_unless_fail_on_error(plugin_env: dict[str, str], tmp_path: Path) -> None:
    args = ["run", "--adapters", "box,flaky-box", "--out", str(tmp_path), "--no-progress"]
    first = run_cli(*args, env=plugin_env, check=False)
    assert first.returncode == 0, first.stderr
    assert "first error of flaky-box: RuntimeError: flaky-box cannot read this scan" in first.stderr
    cases = RunStore(Path(first.stdout.strip().splitlines()[-1])).read_cases()
    failed = cases.filter(pl.col("status") == "failed")
    assert set(failed["case_id"]) == {"phantom-001"} and set(failed["adapter"]) == {"flaky-box"}
    # CPU memory is the model's: below the process's RSS, which keeps its own column
    scored = cases.filter(pl.col("status") == "ok")
    assert (scored["peak_mem_mb"] >= 0).all() and (scored["peak_mem_mb"] < scored["peak_rss_mb"]).all()
    strict = run_cli(*args, "--fail-on-error", env=plugin_env, check=False)
    assert strict.returncode == 3 and "resumed: 8 units reused, 0 to run" in strict.stderr
    assert strict.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]


def test_a_run_whose_executor_left_units_unwritten_is_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(None)
    plan = make_plan(
        config.suite("quick"), discover_tasks(config.task_dirs), RunOptions(adapters=("box",), device="cpu")
    )

    class FirstUnitOnly:
        def run(self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]) -> None:
            store.write_unit(units[0].unit_id, UnitRunner(plan, "box").run(units[0]))
            done(units[0])

    monkeypatch.setattr(executors, "create", lambda name, options=None: FirstUnitOnly())
    manifest = execute(plan, tmp_path, progress=False, command=["segbench", "run"]).read_manifest()
    assert manifest["status"] == "incomplete" and manifest["missing_units"] == CASES - 1
    assert manifest["planned"] == {"box/phantom": [unit.case_id for unit in plan.units]}
    assert manifest["command"] == ["segbench", "run"] and "ended" in manifest["sessions"][-1]
