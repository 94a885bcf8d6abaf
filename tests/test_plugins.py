"""A third-party adapter, installed as a real package with an entry point, is found and run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from .conftest import run_cli


def test_external_adapter_is_listed(plugin_path: str) -> None:
    listed = json.loads(run_cli("adapters", "--json", env={"PYTHONPATH": plugin_path}).stdout)
    clicks = next(a for a in listed if a["name"] == "clicks")
    assert clicks["family"] == "example" and clicks["capabilities"] == "box,point,iterative"


def test_external_adapter_runs_every_protocol_in_a_suite(plugin_path: str, tmp_path: Path) -> None:
    result = run_cli("run", "--adapters", "clicks,box", "--out", str(tmp_path), "--no-progress",
                     env={"PYTHONPATH": plugin_path})
    cases = pl.read_parquet(Path(result.stdout.strip().splitlines()[-1]) / "cases.parquet")
    clicks = cases.filter(pl.col("adapter") == "clicks")
    assert (clicks["status"] == "ok").all()
    # it answers points, so it also gets the center-point and iterative protocols the box cannot take
    assert set(clicks["prompt"]) == {"box", "box_jitter5", "center_point", "iterative_box3"}
    assert set(cases.filter(pl.col("adapter") == "box")["prompt"]) == {"box", "box_jitter5"}
    iterative = clicks.filter(pl.col("prompt") == "iterative_box3").sort("step")
    assert iterative["step"].unique().to_list() == [0, 1, 2, 3]
    first = iterative.filter((pl.col("case_id") == "phantom-000") & (pl.col("label") == "organ"))
    clicks_per_step = [len(json.loads(p)[0].get("points", [])) for p in first["prompt_json"]]
    assert clicks_per_step == [0, 1, 2, 3]  # one correction click per step, on top of the box


def test_plugin_without_the_package_is_absent() -> None:
    listed = json.loads(run_cli("adapters", "--json").stdout)
    assert "clicks" not in {a["name"] for a in listed}
