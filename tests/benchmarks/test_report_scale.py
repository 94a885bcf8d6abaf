"""Benchmark: ``segbench report`` at leaderboard scale, 1,000,000 case rows (20 adapters x 50 tasks x 1,000
cases, one label and the box protocol each), bootstrap included — the whole command as a user runs it, in a
fresh interpreter, with its wall time and peak resident memory (the child's ``ru_maxrss``).

    python -m pytest tests/benchmarks/test_report_scale.py -o addopts="" -s

Issue 19 asks for under 60 s and 4 GB on 2 cores; the test fails above either. The rows are generated
column-wise (``tests/synthetic.py`` builds rows one dict at a time, fine at 10,000 rows, minutes at a
million) into the store's layout: ``cases.parquet`` in the row schema (``segbench.running.rows``) and a
``run.json`` recording its sha256, so the store reads the file instead of healing it from parts.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segbench.running.manifest import RunManifest
from segbench.running.rows import case_schema, row_defaults
from segbench.running.store import RunStore
from segbench.weights.checkpoints import sha256_file

from ..synthetic import SyntheticTask, manifest

ADAPTERS = 20
TASKS = 50
CASES = 1_000
LIMIT_S = 60.0
LIMIT_RSS_GB = 4.0


def write_big_run(run_dir: Path, adapters: int = ADAPTERS, tasks: int = TASKS, cases: int = CASES) -> Path:
    """A complete run of ``adapters x tasks x cases`` rows, each adapter with its own skill (Dice level)."""
    rng = np.random.default_rng(0)
    names = [f"adapter-{a:02d}" for a in range(adapters)]
    task_names = [f"task-{t:02d}" for t in range(tasks)]
    n = adapters * tasks * cases
    adapter_index = np.repeat(np.arange(adapters), tasks * cases)
    task_index = np.tile(np.repeat(np.arange(tasks), cases), adapters)
    case_index = np.tile(np.arange(cases), adapters * tasks)
    skill = np.linspace(0.3, 0.9, adapters)[adapter_index]
    dice = np.clip(rng.beta(2 + 18 * skill, 2 + 4 * (1 - skill)), 0, 1)
    encode_ms = 5 + 200 * skill * rng.uniform(0.9, 1.1, n)
    decode_ms = 2 + 10 * skill * rng.uniform(0.9, 1.1, n)
    adapter_col = pl.Series(names, dtype=pl.String).gather(adapter_index)
    task_col = pl.Series(task_names, dtype=pl.String).gather(task_index)
    case_col = pl.Series([f"case-{c:04d}" for c in range(cases)], dtype=pl.String).gather(case_index)
    frame = pl.DataFrame(
        {
            "adapter": adapter_col,
            "task": task_col,
            "case_id": case_col,
            "dice": dice,
            "nsd": np.clip(dice + rng.normal(0, 0.05, n), 0, 1),
            "hd95": 30 * (1 - dice) + rng.uniform(0, 2, n),
            "encode_ms": encode_ms,
            "decode_ms": decode_ms,
            "total_ms": encode_ms + decode_ms,
            "peak_mem_mb": 500 + 1000 * skill,
            "peak_rss_mb": 500 + 1000 * skill,
        }
    ).with_columns(
        pl.lit(run_dir.name).alias("run_id"),
        pl.concat_str("adapter", "task", "case_id", separator="-").alias("unit_id"),
        pl.lit("1").alias("task_version"),
        pl.lit("organ").alias("label"),
        pl.lit("box").alias("prompt"),
        pl.lit(0, dtype=pl.Int32).alias("step"),
        pl.lit(1, dtype=pl.Int32).alias("instances"),
        pl.lit("mm").alias("unit"),
        pl.lit(135.8).alias("diagonal"),
        pl.lit(2000, dtype=pl.Int64).alias("truth_area"),
        pl.lit(2000, dtype=pl.Int64).alias("pred_area"),
        pl.lit(14.0).alias("probe_ms"),
        pl.lit("cpu").alias("device"),
        pl.lit(1, dtype=pl.Int32).alias("threads"),
        pl.lit("synthetic").alias("host"),
        pl.lit("").alias("gpu"),
        pl.lit("pretrained").alias("weights"),
        pl.lit("ok").alias("status"),
        pl.lit(None, dtype=pl.String).alias("error"),
        pl.lit("[]").alias("prompt_json"),
        pl.lit(None, dtype=pl.Int32).alias("support_size"),
    )
    defaults = row_defaults()  # a column of the row contract the frame does not set: its default value
    frame = frame.select(
        [
            (pl.col(name) if name in frame.columns else pl.lit(defaults[name])).cast(dtype).alias(name)
            for name, dtype in case_schema().items()
        ]
    )
    store = RunStore(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(store.cases_path)
    synthetic_tasks = [SyntheticTask(name, cases) for name in task_names]
    written = manifest(run_dir.name, dict.fromkeys(names, 0.5), synthetic_tasks, ())
    written["cases_sha256"] = sha256_file(store.cases_path)
    store.write_manifest(RunManifest.from_json(written))
    return run_dir


def timed_report(run_dir: Path, site: Path) -> tuple[float, float]:
    """``segbench report RUN --out SITE`` in a fresh interpreter: wall seconds and the child's peak RSS in GB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "segbench.cli", "report", str(run_dir), "--out", str(site)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    wall = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kb >= before  # the children's maximum: this child's when it is the largest so far
    return wall, peak_kb / 2**20


@pytest.fixture(scope="module")
def million_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = write_big_run(tmp_path_factory.mktemp("million") / "million")
    assert pl.scan_parquet(run / "cases.parquet").select(pl.len()).collect().item() == ADAPTERS * TASKS * CASES
    return run


def test_report_on_a_million_rows(benchmark, million_rows: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    figures: list[tuple[float, float]] = []
    benchmark.pedantic(lambda: figures.append(timed_report(million_rows, tmp_path / "site")), rounds=1, iterations=1)
    wall, peak_gb = figures[0]
    benchmark.extra_info.update(rows=ADAPTERS * TASKS * CASES, wall_s=wall, peak_rss_gb=peak_gb)
    pages = len(list((tmp_path / "site").rglob("*.html")))
    print(f"\nsegbench report on 1,000,000 rows: {wall:.1f} s, peak RSS {peak_gb:.2f} GB, {pages} pages")
    assert pages > 0
    assert wall < LIMIT_S
    assert peak_gb < LIMIT_RSS_GB
