"""From case rows to leaderboard figures (polars): means with bootstrap CIs, speed and memory.

Accuracy is taken at the last step of each protocol (the final answer of an iterative protocol);
every (case, label) row counts once. Speed is per case and protocol: ``total_ms`` is one encoder pass
plus every decode of the protocol, so throughput = cases / total seconds and latency is its median.
Rows made with random weights carry no accuracy (n/a): their speed and memory still count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@lru_cache(maxsize=16)
def _resample_indices(size: int, seed: int, resamples: int) -> np.ndarray:
    """The bootstrap's resampling indices: they depend on the sample size alone, so the many estimates
    of a leaderboard with equal case counts share them (read-only)."""
    indices = np.random.default_rng(seed).integers(0, size, size=(resamples, size))
    indices.flags.writeable = False
    return indices


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (seeded, so a report is reproducible)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), float(values[0])
    means = values[_resample_indices(values.size, seed, resamples)].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> Estimate:
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else float("nan")
        return cls(mean, *bootstrap_ci(finite))


@dataclass(frozen=True)
class LeaderboardRow:
    task: str
    prompt: str
    adapter: str
    weights: str
    dice: Estimate
    nsd: Estimate
    hd95: Estimate
    throughput: float  # cases per second
    latency_ms: float  # median per case
    peak_mem_mb: float
    cases: int
    failures: int

    @property
    def accuracy_known(self) -> bool:
        return self.weights != "random"


def final_steps(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows at the last step of their protocol."""
    last = frame.group_by("adapter", "task", "prompt").agg(pl.col("step").max().alias("last_step"))
    return frame.join(last, on=["adapter", "task", "prompt"]).filter(pl.col("step") == pl.col("last_step"))


def _combinations(frame: pl.DataFrame) -> list[tuple[str, str, str]]:
    """Every (task, prompt, adapter) the run ran; an adapter whose every case failed before any
    protocol (prompt ``*``) is listed under every protocol of the task."""
    ran = frame.filter(pl.col("prompt") != "*").select("task", "prompt", "adapter").unique()
    prompts = ran.select("task", "prompt").unique()
    never = frame.select("task", "adapter").unique().join(ran.select("task", "adapter"), on=["task", "adapter"],
                                                          how="anti")
    return sorted(pl.concat([ran, never.join(prompts, on="task").select("task", "prompt", "adapter")]).iter_rows())


def leaderboard(frame: pl.DataFrame, label: str | None = None) -> list[LeaderboardRow]:
    """One row per (task, prompt, adapter), best Dice first within each (task, prompt)."""
    ok = final_steps(frame.filter(pl.col("status") == "ok"))
    if label is not None:
        ok = ok.filter(pl.col("label") == label)
    failed = frame.filter(pl.col("status") != "ok")
    rows = []
    for task, prompt, adapter in _combinations(frame):
        group = ok.filter((pl.col("task") == task) & (pl.col("prompt") == prompt) & (pl.col("adapter") == adapter))
        weights = str(frame.filter(pl.col("adapter") == adapter)["weights"][0])
        per_case = group.unique(["case_id"], keep="first", maintain_order=True)  # a sum in a fixed order
        total_s = float(per_case["total_ms"].sum()) / 1000
        measured = weights != "random"

        def estimate(column: str, group: pl.DataFrame = group, measured: bool = measured) -> Estimate:
            return Estimate.of(group[column].to_numpy() if measured else np.array([]))

        n_failed = failed.filter((pl.col("task") == task) & (pl.col("adapter") == adapter)
                                 & pl.col("prompt").is_in([prompt, "*"]))["case_id"].n_unique()
        rows.append(LeaderboardRow(
            task=task, prompt=prompt, adapter=adapter, weights=weights,
            dice=estimate("dice"), nsd=estimate("nsd"), hd95=estimate("hd95"),
            throughput=per_case.height / total_s if total_s > 0 else float("nan"),
            latency_ms=float(per_case["total_ms"].median()) if per_case.height else float("nan"),
            peak_mem_mb=float(group["peak_mem_mb"].max()) if group.height else float("nan"),
            cases=per_case.height, failures=n_failed))
    rows.sort(key=lambda r: (r.task, r.prompt, -np.nan_to_num(r.dice.mean, nan=-1.0)))
    return rows
