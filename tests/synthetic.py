"""Synthetic run directories for report tests and benchmarks: rows in the store's schema (plus the
``support_size`` column in-context protocols add), a manifest, and kept masks, with no model run.

They stand in for what producers not yet on this branch will write (3D tasks, support-size sweeps)
and for runs too large to make in a test (the 10,000-row report benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from segbench.data.case import Case
from segbench.running.kept_masks import MaskSample
from segbench.running.manifest import RunManifest
from segbench.running.plan import WorkUnit
from segbench.running.rows import case_schema
from segbench.running.store import RunStore


@dataclass(frozen=True)
class SyntheticTask:
    name: str
    cases: int
    labels: tuple[str, ...] = ("organ",)
    prompts: dict[str, int] = field(default_factory=lambda: {"box": 1})  # protocol -> steps
    support_sizes: tuple[int, ...] = ()  # non-empty: an in-context task swept over these sizes
    dim: int = 2
    shape: tuple[int, ...] = (96, 96)


def _disc(shape: tuple[int, ...], radius: float, centre_shift: float) -> np.ndarray:
    grid = np.indices(shape[-2:], dtype=np.float64)
    centre = np.array(shape[-2:]) / 2 + centre_shift
    disc = ((grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2) <= radius**2
    if len(shape) == 2:
        return disc
    peak = peak_slice(shape)  # the area shrinks away from this slice, which is off the middle on purpose
    return np.stack([_disc(shape[1:], radius * (1 - abs(k - peak) / shape[0]), centre_shift) for k in range(shape[0])])


def peak_slice(shape: tuple[int, ...]) -> int:
    """The slice of a synthetic volume where every structure has its largest area."""
    return 2 * shape[0] // 3


def _sample(adapter: str, task: SyntheticTask, case_id: str, skill: float, rng: np.random.Generator) -> MaskSample:
    image = rng.integers(0, 255, size=(*task.shape, 3) if task.dim == 2 else task.shape, dtype=np.uint8)
    labels = {label: _disc(task.shape, task.shape[-1] / (4 + i), 0) for i, label in enumerate(task.labels)}
    predicted = {
        label: _disc(task.shape, task.shape[-1] / (4 + i), (1 - skill) * 10) for i, label in enumerate(task.labels)
    }
    case = Case(case_id, image, labels, (1.0,) * task.dim)
    prompts = [p for p in task.prompts] if not task.support_sizes else [f"support{k}" for k in task.support_sizes]
    return MaskSample.of(
        WorkUnit(f"{adapter}-{task.name}-{case_id}", adapter, task.name, case_id),
        case,
        {prompt: predicted for prompt in prompts},
    )


def write_run(
    run_dir: Path,
    adapters: dict[str, float],
    tasks: list[SyntheticTask],
    *,
    seed: int = 0,
    random_weights: tuple[str, ...] = (),
    samples: int = 0,
) -> Path:
    """A complete run: ``adapters`` maps names to a skill in [0, 1] (higher: better Dice, slower)."""
    rng = np.random.default_rng(seed)
    store = RunStore(run_dir)
    rows: list[dict[str, Any]] = []
    for adapter, skill in adapters.items():
        weights = "random" if adapter in random_weights else "pretrained"
        for task in tasks:
            for index in range(task.cases):
                case_id = f"case-{index:04d}"
                encode_ms = 5 + 200 * skill * rng.uniform(0.9, 1.1)
                protocols = (
                    [(f"support{k}", 1, k) for k in task.support_sizes]
                    if task.support_sizes
                    else [(p, steps, None) for p, steps in task.prompts.items()]
                )
                for prompt, steps, support in protocols:
                    decode = [2 + 10 * skill * rng.uniform(0.9, 1.1) for _ in range(steps)]
                    for label in task.labels:
                        base = rng.beta(2 + 18 * skill, 2 + 4 * (1 - skill))
                        for step in range(steps):
                            gain = (1 - base) * (1 - 0.6**step) if steps > 1 else 0.0
                            gain += 0.05 * np.log2(support) if support else 0.0
                            dice = float(np.clip(base + gain, 0, 1))
                            rows.append(
                                {
                                    "run_id": run_dir.name,
                                    "unit_id": f"{adapter}-{task.name}-{case_id}",
                                    "adapter": adapter,
                                    "task": task.name,
                                    "task_version": "1",
                                    "case_id": case_id,
                                    "label": label,
                                    "prompt": prompt,
                                    "step": step,
                                    "instances": 1,
                                    "dice": dice,
                                    "nsd": float(np.clip(dice + rng.normal(0, 0.05), 0, 1)),
                                    "hd95": float(30 * (1 - dice) + rng.uniform(0, 2)),
                                    "encode_ms": encode_ms,
                                    "decode_ms": decode[step],
                                    "total_ms": encode_ms + sum(decode),
                                    "peak_mem_mb": 500 + 1000 * skill,
                                    "peak_rss_mb": 500 + 1000 * skill,
                                    "device": "cpu",
                                    "host": "synthetic",
                                    "weights": weights,
                                    "status": "ok",
                                    "error": None,
                                    "prompt_json": "[]",
                                    "support_size": support,
                                }
                            )
                if index < samples:
                    store.write_sample(f"{adapter}-{task.name}-{case_id}", _sample(adapter, task, case_id, skill, rng))
    frame = pl.DataFrame(rows, schema={**case_schema(), "support_size": pl.Int32})
    run_dir.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(store.cases_path)
    store.write_manifest(RunManifest.from_json(manifest(run_dir.name, adapters, tasks, random_weights)))
    return run_dir


def manifest(
    run_id: str, adapters: dict[str, float], tasks: list[SyntheticTask], random_weights: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "suite": "synthetic",
        "created": "2025-01-01T00:00:00+00:00",
        "status": "complete",
        "segbench_version": "test",
        "config_hash": "0" * 64,
        "config": {
            "device": "cpu",
            "precision": "fp32",
            "seed": 0,
            "limit": None,
            "tasks": {t.name: {"version": "1", "cases": t.cases} for t in tasks},
        },
        "tasks": {
            t.name: {
                "version": "1",
                "description": f"synthetic {t.dim}D task",
                "modality": "synthetic",
                "license": "n/a",
                "dataset": "",
                "labels": list(t.labels),
                "nsd_tolerance": 2.0,
                "dim": t.dim,
            }
            for t in tasks
        },
        "adapters": {
            name: {
                "family": "synthetic",
                "version": "1",
                "description": f"synthetic adapter {name}",
                "capabilities": ["box"],
                "weights": "random" if name in random_weights else "pretrained",
                "checkpoint": None,
                "precision": "fp32",
                "preprocessing": "none",
            }
            for name in adapters
        },
        "skipped": {},
        "data_root": None,
        "datasets": {t.name: {"files": 0, "sha256": None} for t in tasks},
        "machine": {
            "cpu": "synthetic",
            "cpu_count": 2,
            "memory_gb": 1,
            "platform": "test",
            "python": "3",
            "torch_threads": 1,
            "accelerator": {"gpus": []},
        },
        "packages": {"segbench": "test"},
        "git": {"commit": None, "dirty": None},
        "sessions": [],
    }
