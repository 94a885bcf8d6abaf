"""The ``pipelined`` executor: its rows equal the ``local`` executor's, column for column but the timings
and memory figures, on the quick suite (phantoms; LiteMedSAM, box, otsu) and on real smoke data; every
unit's part is on disk (one per unit) and its kept masks too; a store that fails stops the run."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

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


def assert_same_run(make: object, tmp_path: Path) -> pl.DataFrame:
    assert callable(make)
    local = execute(make("local"), tmp_path / "local", progress=False)
    piped = execute(make("piped"), tmp_path / "piped", "pipelined", progress=False, executor_options=OPTIONS)
    expected, actual = computed(local), computed(piped)
    assert actual.height == expected.height > 0
    assert actual.equals(expected, null_equal=True)  # NaN scores compare equal to NaN too
    # one part per unit, and every unit's kept masks, as the local executor wrote them
    parts = lambda store: sorted(path.name for path in store.parts.glob("*.parquet"))  # noqa: E731
    samples = lambda store: sorted(path.name for path in store.samples.glob("*.npz"))  # noqa: E731
    assert parts(piped) == parts(local)
    assert samples(piped) == samples(local) != []
    manifest = piped.manifest()
    assert manifest.status == "complete"
    assert manifest.sessions[-1].executor_settings == OPTIONS
    return actual


@pytest.mark.parametrize(("adapters", "limit"), [(("litemedsam",), 1), (("box", "otsu"), 4)])
def test_quick_suite_rows_equal_local(adapters: tuple[str, ...], limit: int, tmp_path: Path) -> None:
    """LiteMedSAM on one phantom (~1.5 s an encode on this CPU, and every protocol's decodes), the
    baselines on four."""
    rows = assert_same_run(lambda run_id: plan_of("quick", run_id, adapters, limit), tmp_path)
    assert set(rows["adapter"]) == set(adapters)
    assert rows["case_id"].n_unique() == limit


def test_smoke_subset_rows_equal_local(data_root: Path, tmp_path: Path) -> None:
    rows = assert_same_run(lambda run_id: plan_of("smoke", run_id, ("box", "otsu"), 2, data_root), tmp_path)
    assert rows["task"].n_unique() == 4


def test_a_failing_store_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's error reaches the caller, and no unit is reported done whose part was not written."""
    plan = plan_of("quick", "broken", ("box",), limit=6)
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
