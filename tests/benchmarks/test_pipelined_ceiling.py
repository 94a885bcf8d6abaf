"""The harness ceiling through the executors: rows a second of a whole ``execute`` (read, model, score,
rows, kept masks, parts on disk, consolidation) for the ``box`` baseline on generated 512² cases (an organ
and a lesion each, the ``box`` protocol), with the ``local`` executor and with ``pipelined``, alternated
so a change of the machine's load falls on both. Unlike ``test_harness_ceiling.py`` (one runner, stage by
stage), this is what a run of the baselines gets, and what is left for a model on a GPU.

    python -m pytest tests/benchmarks/test_pipelined_ceiling.py -o addopts="" -s
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from segbench.data.suites import Suite
from segbench.data.taskspec import load_task
from segbench.running.execute import execute
from segbench.running.plan import RunOptions, make_plan
from tests.benchmarks.test_harness_ceiling import ceiling, write_task  # noqa: F401  (the fixture)

CASES = int(os.environ.get("SEGBENCH_CEILING_CASES", "100"))
ROUNDS = 2


def timed_run(executor: str, task_file: Path, out: Path, options: dict[str, int]) -> tuple[int, float]:
    spec = load_task(task_file)
    suite = Suite("ceiling", "", ("box",), (spec.name,), None, 0, None, task_file)
    plan = make_plan(suite, {spec.name: spec}, RunOptions(device="cpu", run_id=executor, save_masks=0))
    start = time.perf_counter()
    store = execute(plan, out, executor, progress=False, executor_options=options)
    wall = time.perf_counter() - start
    return store.read_cases().height, wall


def test_pipelined_ceiling(benchmark, ceiling: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    task = write_task(tmp_path, "ceiling-512", 512, 0, CASES)
    figures: dict[str, list[float]] = {"local": [], "pipelined": []}

    def alternate() -> None:
        for round_ in range(ROUNDS):
            for executor in figures:
                rows, wall = timed_run(executor, task, tmp_path / f"round-{round_}", {})
                figures[executor].append(rows / wall)
                print(f"\nround {round_}: {executor:<9} {rows} rows in {wall:6.2f} s: {rows / wall:7.1f} rows/s")

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    best = {executor: max(rates) for executor, rates in figures.items()}
    benchmark.extra_info.update(rows_per_s=best, ratio=best["pipelined"] / best["local"])
    print(f"best of {ROUNDS}: {best}; pipelined / local x{best['pipelined'] / best['local']:.2f}")
    assert best["pipelined"] > 0
