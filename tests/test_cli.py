"""The CLI contract other tools rely on."""

from __future__ import annotations

import json

from .conftest import run_cli


def test_adapters_json_lists_capabilities_and_checkpoint_status() -> None:
    listed = {a["name"]: a for a in json.loads(run_cli("adapters", "--json").stdout)}
    assert {"litemedsam", "box", "otsu"} <= set(listed)
    assert listed["litemedsam"]["capabilities"] == "box"
    assert listed["litemedsam"]["checkpoint"] == "present (bundled)"
    assert listed["box"]["checkpoint"] == "not needed"


def test_tasks_json_lists_every_task_file() -> None:
    tasks = {t["name"]: t for t in json.loads(run_cli("tasks", "--json").stdout)}
    assert {"phantom", "wbc", "kvasir", "cvc", "ct-slices", "brats", "la-heart"} <= set(tasks)
    assert tasks["wbc"]["labels"] == "whole_cell,nucleus" and tasks["brats"]["dim"] == 3


def test_weights_list_shows_bundled_litemedsam() -> None:
    listed = {w["name"]: w for w in json.loads(run_cli("weights", "list", "--json").stdout)}
    assert listed["litemedsam"]["status"] == "present (bundled)"
    assert listed["litemedsam"]["sha256"].startswith("79d8c9dc")


def test_throughput_measures_every_batch_and_prompt_count() -> None:
    rows = json.loads(
        run_cli(
            "throughput",
            "--adapters",
            "box",
            "--device",
            "cpu",
            "--batch-sizes",
            "1,2",
            "--prompts",
            "1,3",
            "--repeats",
            "1",
            "--json",
        ).stdout
    )
    assert [(r["batch"], r["prompts"]) for r in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert all(r["images_per_s"] > 0 and r["prompts_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
