"""The ``pipelined`` executor: its rows equal the ``local`` executor's, column for column but the timings
and memory figures, on the quick suite (phantoms; LiteMedSAM, box, otsu) and on real smoke data, with
thread pools and with worker processes; every unit's part is on disk (one per unit) and its kept masks
too; a bad case is a failed row (the same error text) and the run goes on; a store that fails, or a
worker process that dies, stops the run with every unit reported done on disk."""

from __future__ import annotations

import multiprocessing
import os
import signal
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from segbench import plugins
from segbench.data.case import Case
from segbench.data.readers.phantom import PhantomCases
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.errors import SegbenchError
from segbench.running.execute import execute
from segbench.running.executors import create
from segbench.running.plan import RunOptions, RunPlan, make_plan
from segbench.running.store import RunStore

# What a run measures rather than computes: it differs between two runs of the same executor too
MEASURED = {"run_id", "encode_ms", "decode_ms", "total_ms", "peak_mem_mb", "peak_rss_mb", "probe_ms", "threads"}
KEYS = ["unit_id", "label", "prompt", "step"]
# small enough that the read-ahead waits for the writer and a batch holds several units
OPTIONS = {"readers": 2, "scorers": 2, "in_flight": 3, "batch": 2}
PROCESSES = {"processes": 2, "in_flight": 3, "batch": 2}


def plan_of(suite: str, run_id: str, adapters: tuple[str, ...], limit: int, data_root: Path | None = None) -> RunPlan:
    config = load_config(None)
    options = RunOptions(
        adapters=adapters,
        limit=limit,
        device="cpu",
        run_id=run_id,
        data_root=data_root,
        save_masks="all",
        warmup=False,  # untimed: the rows are the same with it, and LiteMedSAM's costs ~2 s each run
    )
    return make_plan(config.suite(suite), discover_tasks(config.task_dirs), options)


def computed(store: RunStore) -> pl.DataFrame:
    cases = store.read_cases()
    return cases.select(sorted(set(cases.columns) - MEASURED)).sort(KEYS)


def assert_same_run(make: object, tmp_path: Path, variants: tuple[dict[str, int], ...] = (OPTIONS,)) -> pl.DataFrame:
    """Runs ``local`` once and ``pipelined`` with each of ``variants``; every pipelined run's rows equal local's."""
    assert callable(make)
    local = execute(make("local"), tmp_path / "local", progress=False)
    expected = computed(local)
    parts = lambda store: sorted(path.name for path in store.parts.glob("*.parquet"))  # noqa: E731
    samples = lambda store: sorted(path.name for path in store.samples.glob("*.npz"))  # noqa: E731
    for index, options in enumerate(variants):
        piped = execute(
            make(f"piped{index}"), tmp_path / "piped", "pipelined", progress=False, executor_options=options
        )
        actual = computed(piped)
        assert actual.height == expected.height > 0
        assert actual.equals(expected, null_equal=True), options  # NaN scores compare equal to NaN too
        # one part per unit, and every unit's kept masks, as the local executor wrote them
        assert parts(piped) == parts(local)
        assert samples(piped) == samples(local) != []
        manifest = piped.manifest()
        assert manifest.status == "complete"
        assert manifest.sessions[-1].executor_settings == options
    return actual


@pytest.mark.parametrize(
    ("adapters", "limit", "variants"),
    [(("litemedsam",), 1, (OPTIONS,)), (("box", "otsu"), 4, (OPTIONS, PROCESSES))],
)
def test_quick_suite_rows_equal_local(
    adapters: tuple[str, ...], limit: int, variants: tuple[dict[str, int], ...], tmp_path: Path
) -> None:
    """LiteMedSAM on one phantom (~1.5 s an encode on this CPU, and every protocol's decodes), the
    baselines on four, with threads and with worker processes."""
    rows = assert_same_run(lambda run_id: plan_of("quick", run_id, adapters, limit), tmp_path, variants)
    assert set(rows["adapter"]) == set(adapters)
    assert rows["case_id"].n_unique() == limit


def test_smoke_subset_rows_equal_local(data_root: Path, tmp_path: Path) -> None:
    make = lambda run_id: plan_of("smoke", run_id, ("box", "otsu"), 2, data_root)  # noqa: E731
    rows = assert_same_run(make, tmp_path, (OPTIONS, PROCESSES))
    assert rows["task"].n_unique() == 4


class FlakyPhantoms(PhantomCases):
    """Phantoms of which two cannot be read: one a DataError (a file's fault), one a bug's ValueError,
    whose row's text names the line that raised; pickled to the worker processes by reference."""

    def read(self, case_id: str) -> Case:
        if case_id.endswith("001"):
            raise ValueError(f"{case_id}: a reader's bug")
        if case_id.endswith("002"):
            from segbench.errors import DataError

            raise DataError(f"{case_id}.png", "truncated file")
        return super().read(case_id)


def test_bad_cases_are_failed_rows_the_same_as_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(plugins.readers(), "phantom", FlakyPhantoms)
    rows = assert_same_run(lambda run_id: plan_of("quick", run_id, ("box",), 4), tmp_path, (OPTIONS, PROCESSES))
    failed = rows.filter(pl.col("status") == "failed")
    assert sorted(failed["case_id"].unique()) == ["phantom-001", "phantom-002"]
    assert failed["error"].str.contains("test_pipelined.py:").any()  # the frame survived the process boundary
    assert rows.filter(pl.col("status") == "ok")["case_id"].n_unique() == 2  # the run went on


class KillingPhantoms(PhantomCases):
    """Phantoms whose last case kills the worker process reading it, once (the mark file says it did; its
    path travels with the pickled reader, as the fork server's environment is the one it started with)."""

    def __init__(self, spec: Any, root: Path | None, mark: Path):
        super().__init__(spec, root)
        self.mark = mark

    def read(self, case_id: str) -> Case:
        mark = self.mark
        if multiprocessing.parent_process() is not None and case_id.endswith("003") and not mark.exists():
            mark.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().read(case_id)


def test_a_killed_worker_process_stops_the_run_and_loses_nothing_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error names the unit; every unit reported done (in the run's order) has its part, the killed
    one has none; resuming the run makes the rows of a local run."""
    monkeypatch.setitem(plugins.readers(), "phantom", partial(KillingPhantoms, mark=tmp_path / "killed"))
    plan = plan_of("quick", "killed", ("box",), limit=4)
    store = RunStore(tmp_path / "runs" / "killed")
    store.parts.mkdir(parents=True)
    done: list[str] = []
    options = {"processes": 2, "in_flight": 2, "batch": 2}
    with pytest.raises(SegbenchError, match=r"worker process reading box/.*003 died"):
        create("pipelined", options).run(plan, plan.units, store, lambda unit: done.append(unit.unit_id))
    on_disk = {path.name.split(".")[0] for path in store.parts.glob("*.parquet")}
    assert done == [unit.unit_id for unit in plan.units[: len(done)]]  # in order, none skipped
    assert len(done) >= 2  # the last read waited for two slots: two units were written before it
    assert set(done) <= on_disk and plan.units[-1].unit_id not in on_disk
    assert not list(store.parts.glob(".*.tmp"))  # a part is written or it is not
    resumed = computed(execute(plan, tmp_path / "runs", "pipelined", progress=False, executor_options=options))
    local = computed(execute(plan_of("quick", "killed", ("box",), 4), tmp_path / "local", progress=False))
    assert resumed.drop("unit_id").equals(local.drop("unit_id"), null_equal=True)


def test_a_failing_store_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's error reaches the caller, and no unit is reported done whose part was not written."""
    plan = plan_of("quick", "broken", ("box",), limit=4)
    store = RunStore(tmp_path / "broken")
    store.parts.mkdir(parents=True)
    written: list[str] = []

    def write_units(results: list[tuple[str, object]]) -> None:
        if written:
            raise OSError("disk full")
        written.extend(unit_id for unit_id, _ in results)

    monkeypatch.setattr(store, "write_units", write_units)
    done: list[str] = []
    with pytest.raises(OSError, match="disk full"):
        create("pipelined", OPTIONS).run(plan, plan.units, store, lambda unit: done.append(unit.unit_id))
    assert done == written and 0 < len(done) < len(plan.units)


def test_options_are_checked() -> None:
    with pytest.raises(SegbenchError, match="in_flight"):
        create("pipelined", {"in_flight": 0})
    with pytest.raises(SegbenchError, match="processes"):
        create("pipelined", {"processes": -1})
