"""Executors: the quick suite on Ray equals the local run; killed workers lose and duplicate nothing;
submitit's local executor runs shards; a run started by one executor is finished by another; the
multigpu executor's worker processes, GPU pinning and refusal to run without GPUs."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest

from segbench import plugins
from segbench.cli import _executor_options, build_parser
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.errors import SegbenchError
from segbench.running.execute import execute
from segbench.running.executors import create
from segbench.running.executors.multigpu import gpu_ids
from segbench.running.executors.sharding import shard_units
from segbench.running.plan import RunOptions, RunPlan, make_plan
from segbench.running.store import RunStore

KEYS = ["adapter", "case_id", "label", "prompt", "step"]
SCORES = ["unit_id", *KEYS, "dice", "nsd", "hd95", "status"]

# An adapter whose process dies (SIGKILL, as by the OOM killer) whenever it is given the second phantom
# scan; otherwise it is the `box` baseline. Installed as a real plugin distribution on PYTHONPATH.
CRASH_PLUGIN = """
import os
import signal

import numpy as np

from segbench import hookimpl
from segbench.adapters.baselines import BoxBaseline
from segbench.interface import AdapterMeta
from segbench.data.readers.phantom import phantom

POISON = phantom(0, 1)[0]


class CrashOnSecondPhantom(BoxBaseline):
    meta = AdapterMeta(name="crash-box", family="test", description="box; dies on phantom-001",
                       capabilities=BoxBaseline.meta.capabilities)

    def encode(self, image):
        if np.array_equal(image, POISON):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().encode(image)


@hookimpl
def segbench_register_adapters(register):
    register(CrashOnSecondPhantom)
"""


def _clear_plugin_caches() -> None:
    for registry in (plugins.plugin_manager, plugins.adapters, plugins.readers, plugins.executors):
        registry.cache_clear()


@pytest.fixture(scope="module")
def crash_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The crash-box adapter installed for this module: here and in every worker process started meanwhile."""
    site = tmp_path_factory.mktemp("plugin-site")
    (site / "segbench_crash_test.py").write_text(CRASH_PLUGIN)
    info = site / "segbench_crash_test-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segbench-crash-test\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[segbench.adapters]\ncrash = segbench_crash_test\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        patch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        _clear_plugin_caches()
        yield
    _clear_plugin_caches()


@pytest.fixture(scope="module")
def ray_session(crash_plugin: None) -> Iterator[None]:
    """One local Ray instance for the module (its workers inherit PYTHONPATH, so they see crash-box)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def quick_plan(run_id: str, adapters: tuple[str, ...] | None = None, device: str = "auto") -> RunPlan:
    config = load_config(None)
    return make_plan(
        config.suite("quick"),
        discover_tasks(config.task_dirs),
        RunOptions(adapters=adapters, device=device, run_id=run_id),
    )


def workers_for(plan: RunPlan) -> int | None:
    return 2 if plan.device == "cpu" else None  # on a GPU machine: one worker per GPU


def reference(quick_run: Path, adapters: set[str]) -> pl.DataFrame:
    cases = pl.read_parquet(quick_run / "cases.parquet")
    return cases.filter(pl.col("adapter").is_in(adapters)).select(SCORES).sort(KEYS)


def test_submitit_local_executor_runs_shards(quick_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    plan = quick_plan("slurm", adapters=("box", "otsu"), device="cpu")
    store = execute(
        plan,
        tmp_path,
        executor="submitit",
        progress=False,
        executor_options={"cluster": "local", "workers": 2, "poll_s": 0.5},
    )
    assert store.read_cases().select(SCORES).sort(KEYS).equals(reference(quick_run, {"box", "otsu"}))
    settings = store.read_manifest()["sessions"][-1]["executor_settings"]
    assert settings["cluster"] == "local" and settings["arrays"] == 1 and settings["threads"] >= 1
    logs = list((store.dir / "submitit").glob("*/*_result.pkl"))
    assert len(logs) == 2  # one result per shard of the job array


def test_submitit_job_that_dies_loses_only_its_unit_in_flight(crash_plugin: None, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    plan = quick_plan("slurm-crash", adapters=("crash-box",), device="cpu")
    store = execute(
        plan,
        tmp_path,
        executor="submitit",
        progress=False,
        executor_options={"cluster": "local", "workers": 1, "max_retries": 0, "poll_s": 0.5},
    )
    cases = store.read_cases()
    assert sorted(set(cases["unit_id"])) == sorted(u.unit_id for u in plan.units)
    failed = cases.filter(pl.col("status") == "failed")
    assert failed["case_id"].to_list() == ["phantom-001"]
    assert failed["error"][0].startswith("its worker died in 1 attempt(s) at this unit; last: UncompletedJobError")
    assert (cases.filter(pl.col("case_id") != "phantom-001")["status"] == "ok").all()
    # the shard's units after the one in flight ran in a second array
    assert store.read_manifest()["sessions"][-1]["executor_settings"]["arrays"] == 2


def test_multigpu_cpu_workers_only_when_asked(quick_run: Path, tmp_path: Path) -> None:
    plan = quick_plan("processes", adapters=("box", "otsu"), device="cpu")
    with pytest.raises(SegbenchError, match="ask for CPU worker processes explicitly with --workers N"):
        execute(plan, tmp_path, executor="multigpu", progress=False)
    store = execute(plan, tmp_path, executor="multigpu", executor_options={"workers": 2}, progress=False)
    assert store.read_cases().select(SCORES).sort(KEYS).equals(reference(quick_run, {"box", "otsu"}))
    assert store.read_manifest()["sessions"][-1]["executor_settings"]["workers"] == 2


def test_workers_are_pinned_to_the_visible_gpus() -> None:
    assert gpu_ids(None, 2) == ["0", "1"]
    assert gpu_ids("3,5", 2) == ["3", "5"]
    assert gpu_ids("GPU-8f1e, GPU-77aa,", 2) == ["GPU-8f1e", "GPU-77aa"]
    assert gpu_ids("3,5,7", 1) == ["3"]  # torch sees fewer than listed: the rest are unusable


def test_shards_are_deterministic_grouped_by_adapter_and_balanced() -> None:
    plan = quick_plan("shards", device="cpu")
    shards = shard_units(plan, list(reversed(plan.units)), 3)
    assert shards == shard_units(plan, list(reversed(plan.units)), 3)
    assert sorted(u.unit_id for shard in shards for u in shard) == sorted(u.unit_id for u in plan.units)
    for shard in shards:
        adapters = [u.adapter for u in shard]
        assert adapters == sorted(adapters, key=list(plan.adapters).index)  # each adapter loaded once
    for adapter in plan.adapters:
        counts = [sum(u.adapter == adapter for u in shard) for shard in shards]
        assert max(counts) - min(counts) <= 1


def test_executor_options_reach_the_factory_or_are_refused() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--executor",
            "submitit",
            "--workers",
            "4",
            "--slurm-partition",
            "gpu",
            "--executor-option",
            "slurm_account=lab",
            "--executor-option",
            "poll_s=0.5",
        ]
    )
    options = _executor_options(args)
    assert options == {"workers": 4, "slurm_partition": "gpu", "slurm_account": "lab", "poll_s": 0.5}
    executor = create("submitit", options)
    assert executor.parameters["slurm_account"] == "lab" and executor.workers == 4
    with pytest.raises(SegbenchError, match="executor 'local' does not take the option.s. address"):
        create("local", {"address": "auto"})
    with pytest.raises(SegbenchError, match="does not take the option.s. gpus"):
        create("submitit", {"gpus": 2})
    with pytest.raises(SegbenchError, match="unknown executor 'dask'"):
        create("dask")


def test_quick_suite_on_ray_equals_the_local_run(quick_run: Path, ray_session: None, tmp_path: Path) -> None:
    plan = quick_plan("ray")
    store = execute(plan, tmp_path, executor="ray", executor_options={"workers": workers_for(plan)}, progress=False)
    cases = store.read_cases()
    assert cases.select(SCORES).sort(KEYS).equals(reference(quick_run, {"litemedsam", "box", "otsu"}))
    assert cases.select(KEYS).is_unique().all()
    assert set(cases["host"]) == {RunStore(quick_run).read_manifest()["machine"]["host"]}
    assert ((cases["gpu"] == "") == (plan.device == "cpu")).all()  # the GPU's name, "" on a CPU
    session = store.read_manifest()["sessions"][-1]
    assert session["executor"] == "ray" and session["executor_settings"]["workers"] >= 1


def _kill_busy_ray_workers() -> list[int]:
    """SIGKILL the Ray actor processes of this test that are running a unit (or, if none is, all of them)."""
    actors: dict[int, str] = {}
    for process in psutil.Process().children(recursive=True):  # Ray's processes descend from this one
        try:
            title = process.cmdline()[:1]
        except psutil.Error:  # gone meanwhile
            continue
        if title and title[0] in ("ray::Worker", "ray::Worker.run"):
            actors[process.pid] = title[0]
    busy = [pid for pid, title in actors.items() if title == "ray::Worker.run"] or list(actors)
    for pid in busy:
        psutil.Process(pid).kill()
    return busy


def test_killed_ray_worker_loses_and_duplicates_nothing(
    quick_run: Path, ray_session: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = quick_plan("killed", adapters=("litemedsam",))
    store = RunStore(tmp_path / plan.run_id)
    killed: list[int] = []

    def done(unit: object) -> None:
        if not killed:  # after the first finished unit, the other worker is mid-way through its own
            killed.extend(_kill_busy_ray_workers())

    with caplog.at_level(logging.WARNING, logger="segbench.running.executors"):
        create("ray", {"workers": workers_for(plan)}).run(plan, plan.units, store, done)
    assert killed and "worker lost while running litemedsam/phantom/" in caplog.text
    assert all(not psutil.pid_exists(pid) for pid in killed)
    cases = store.consolidate()
    assert sorted(set(cases["unit_id"])) == sorted(u.unit_id for u in plan.units)
    assert cases.select(KEYS).is_unique().all() and (cases["status"] == "ok").all()
    assert cases.select(SCORES).sort(KEYS).equals(reference(quick_run, {"litemedsam"}))


def test_unit_that_kills_its_worker_is_retried_then_recorded_as_failed(ray_session: None, tmp_path: Path) -> None:
    plan = quick_plan("poison", adapters=("crash-box",), device="cpu")
    store = execute(plan, tmp_path, executor="ray", executor_options={"workers": 2, "max_retries": 1}, progress=False)
    cases = store.read_cases()
    assert sorted(set(cases["unit_id"])) == sorted(u.unit_id for u in plan.units)
    failed = cases.filter(pl.col("status") == "failed")
    assert failed["case_id"].to_list() == ["phantom-001"]  # one row for the unit, no scores
    assert failed["error"][0].startswith("its worker died in 2 attempt(s) at this unit; last: Actor")
    ok = cases.filter(pl.col("case_id") != "phantom-001")
    assert (ok["status"] == "ok").all() and ok.height == 3 * 2 * 2  # 3 cases x 2 box protocols x 2 labels
    assert store.read_manifest()["failed_units"] == 1


def test_run_started_locally_is_finished_by_ray(quick_run: Path, ray_session: None, tmp_path: Path) -> None:
    plan = quick_plan("handover", adapters=("box", "otsu"), device="cpu")
    execute(dataclasses.replace(plan, units=plan.units[:3]), tmp_path, executor="local", progress=False)
    store = execute(plan, tmp_path, executor="ray", executor_options={"workers": 2}, progress=False)
    first, second = store.read_manifest()["sessions"]
    assert (first["executor"], first["pending_units"]) == ("local", 3)
    assert (second["executor"], second["skipped_units"], second["pending_units"]) == ("ray", 3, len(plan.units) - 3)
    assert store.read_cases().select(SCORES).sort(KEYS).equals(reference(quick_run, {"box", "otsu"}))
