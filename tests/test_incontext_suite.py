"""The `incontext` suite on the real datasets: UniverSeg with random weights and the baselines, on CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segbench.data.readers.decode import read_image_file
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.reporting.aggregate import leaderboard
from segbench.running.plan import RunOptions, make_plan
from segbench.running.store import RunStore

from .conftest import run_cli

pytestmark = pytest.mark.data
ADAPTERS = {"universeg", "support-nearest", "support-mean"}


@pytest.fixture(scope="module")
def incontext_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite as a user runs it, on its two cheapest tasks so CI stays fast (the full suite with
    --limit 4 is the command in the README)."""
    out = tmp_path_factory.mktemp("incontext")
    result = run_cli(
        "run",
        "--suite",
        "incontext",
        "--limit",
        "1",
        "--weights",
        "random",
        "--device",
        "cpu",
        "--tasks",
        "ct-slices-incontext,cvc-incontext",
        "--data-root",
        str(data_root),
        "--out",
        str(out),
        "--no-progress",
    )
    return Path(result.stdout.strip().splitlines()[-1])


def test_universeg_runs_with_random_weights_and_the_baselines_score(incontext_run: Path) -> None:
    cases = pl.read_parquet(incontext_run / "cases.parquet")
    assert set(cases["adapter"]) == ADAPTERS and (cases["status"] == "ok").all()
    assert set(cases.filter(pl.col("adapter") == "universeg")["weights"]) == {"random"}
    baselines = cases.filter(pl.col("adapter") != "universeg")
    assert baselines.select(pl.col("dice").is_between(0, 1).all()).item()
    by_adapter = {
        row.adapter: row for row in leaderboard(cases) if row.prompt == "support1" and row.task == "cvc-incontext"
    }
    assert np.isnan(by_adapter["universeg"].dice.mean) and not np.isnan(by_adapter["support-nearest"].dice.mean)
    assert by_adapter["universeg"].latency_ms > 0


def test_sizes_follow_the_pools(incontext_run: Path) -> None:
    cases = pl.read_parquet(incontext_run / "cases.parquet").filter(pl.col("adapter") == "support-mean")
    sizes = {(row["task"], row["label"]): set() for row in cases.iter_rows(named=True)}
    for row in cases.iter_rows(named=True):
        sizes[(row["task"], row["label"])].add(row["prompt"])
    # the CVC pool holds 14 frames: 1 to 8 and the 8-example ensemble run, 16 and more do not
    assert sizes[("cvc-incontext", "polyp")] == {"support1", "support2", "support4", "support8", "support8x5"}
    # CT: the aorta is on both pool slices, the liver and the IVC on one
    assert sizes[("ct-slices-incontext", "aorta")] == {"support1", "support2"}
    assert sizes[("ct-slices-incontext", "liver")] == {"support1"}
    skipped = RunStore(incontext_run).read_manifest()["skipped"]
    assert "holds 14 cases" in skipped["cvc-incontext/support16"]


def test_every_adapter_saw_the_same_support_sets_none_from_the_queries(incontext_run: Path) -> None:
    cases = pl.read_parquet(incontext_run / "cases.parquet").filter(pl.col("prompt") != "box")
    given = cases.group_by("task", "case_id", "label", "prompt").agg(
        pl.col("prompt_json").n_unique().alias("sets"), pl.col("adapter").n_unique().alias("adapters")
    )
    assert (given["sets"] == 1).all() and (given["adapters"] == len(ADAPTERS)).all()
    for row in cases.iter_rows(named=True):
        for entry in json.loads(row["prompt_json"]):
            assert row["case_id"] not in entry["support"] and len(entry["support"]) == row["support_size"]


def test_the_report_renders_the_incontext_rows(incontext_run: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    run_cli("report", str(incontext_run), "--out", str(site))
    page = (site / "task-cvc-incontext.html").read_text()
    assert "support8x5" in page and "universeg" in page and "n/a" in page


def test_wbc_cytoplasm_is_mask_value_128_and_cases_are_read_at_128(data_root: Path) -> None:
    suite = dataclasses.replace(load_config().suite("incontext"), tasks=("wbc-incontext",))
    plan = make_plan(
        suite, discover_tasks(), RunOptions(adapters=("support-mean",), device="cpu", data_root=data_root, limit=1)
    )
    case = plan.reader("wbc-incontext").read(next(u.case_id for u in plan.units if u.task == "wbc-incontext"))
    assert case.image.shape == (128, 128, 3)
    nucleus, cytoplasm = case.labels["nucleus"], case.labels["cytoplasm"]
    assert nucleus.any() and cytoplasm.any() and not (nucleus & cytoplasm).any()
    raw = read_image_file(data_root / "wbc" / f"{case.case_id}.png")
    raw = raw[..., 0] if raw.ndim == 3 else raw
    assert abs(cytoplasm.mean() - (np.abs(raw.astype(int) - 128) < 64).mean()) < 0.05  # same share of the image
