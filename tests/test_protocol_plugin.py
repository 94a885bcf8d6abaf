"""A prompt protocol kind from a third-party package (tests/plugins/segbench-protocol-example, installed with
pip like any plugin, no segbench file edited): named in a task file, run in a suite, scored and shown
on the leaderboard like a built-in kind."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segbench import plugins
from segbench.data.readers.phantom import phantom
from segbench.data.taskspec import parse_task
from segbench.errors import ConfigError

from .conftest import run_cli

PACKAGE = Path(__file__).parent / "plugins" / "segbench-protocol-example"
MARGIN = 6
TASK = f"""
[task]
name = "phantom-margin"
description = "Phantoms prompted with tight and loose boxes"

[data]
reader = "phantom"
cases = 3
seed = 7

[labels]
organ = "nonzero"
lesion = "nonzero"

[prompts]
protocols = ["box", {{ kind = "box_margin", px = {MARGIN} }}]
"""
SUITE = """
task_dirs = ["tasks"]

[suites.margins]
description = "The box baseline with tight and loose boxes"
adapters = ["box"]
tasks = ["phantom-margin"]
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PYTHONPATH with the example protocol package installed (pip, no network, no build isolation)."""
    target, build = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(PACKAGE)],
        check=True,
        cwd=build,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


def _loose_box(mask: np.ndarray, px: int) -> list[float]:
    """The expected prompt, computed here from the mask's own extent."""
    rows, cols = np.where(mask)
    height, width = mask.shape
    return [
        float(max(cols.min() - px, 0)),
        float(max(rows.min() - px, 0)),
        float(min(cols.max() + px, width - 1)),
        float(min(rows.max() + px, height - 1)),
    ]


def test_a_plugin_protocol_runs_in_a_suite_and_shows_on_the_leaderboard(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "phantom-margin.toml").write_text(TASK)
    (tmp_path / "bench.toml").write_text(SUITE)
    result = run_cli(
        "run", "--config", str(tmp_path / "bench.toml"), "--suite", "margins", "--out", str(tmp_path / "out"),
        "--no-progress", env=plugin_env,
    )  # fmt: skip
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    rows = pl.read_parquet(run_dir / "cases.parquet")
    name = f"box_margin{MARGIN}"
    assert set(rows["prompt"]) == {"box", name} and (rows["status"] == "ok").all()
    assert rows.height == 2 * 3 * 2  # protocols x cases x labels
    for row in rows.filter(pl.col("prompt") == name).iter_rows(named=True):
        _, masks = phantom(7, int(row["case_id"].rsplit("-", 1)[1]))
        assert json.loads(row["prompt_json"]) == [{"box": _loose_box(masks[row["label"]], MARGIN)}]
    # the box baseline fills its box: a looser box can only add false positives
    paired = rows.pivot(on="prompt", index=["case_id", "label"], values="dice")
    assert (paired[name] <= paired["box"]).all() and (paired[name] < paired["box"]).any()

    site = tmp_path / "site"
    run_cli("report", str(run_dir), "--out", str(site), env=plugin_env)
    assert name in (site / "task-phantom-margin.html").read_text()


@contextmanager
def _registered_plugin(site: str) -> Iterator[None]:
    """The installed package's module registered in this process's plugin manager, as its entry point is in
    a fresh interpreter."""
    sys.path.insert(0, site)
    module = importlib.import_module("segbench_protocol_example")
    manager = plugins.plugin_manager()
    manager.register(module)
    plugins.protocols.cache_clear()
    try:
        yield
    finally:
        manager.unregister(module)
        plugins.protocols.cache_clear()
        sys.path.remove(site)


def test_a_plugin_protocol_is_checked_like_a_built_in_one(plugin_env: dict[str, str], tmp_path: Path) -> None:
    document = tomllib.loads(TASK)
    with pytest.raises(ConfigError, match="unknown protocol kind 'box_margin'"):
        parse_task(document, tmp_path / "t.toml")  # not installed: not known
    with _registered_plugin(plugin_env["PYTHONPATH"].split(os.pathsep)[0]):
        assert [p.name for p in parse_task(document, tmp_path / "t.toml").protocols] == ["box", f"box_margin{MARGIN}"]
        for given, message in (
            ({"kind": "box_margin", "pxx": 3}, r"protocol 'box_margin': unknown key 'pxx' \(did you mean 'px'\?\)"),
            ({"kind": "box_margin", "px": 300}, "px must be at most 256"),
            ({"kind": "box_margin", "px": -1}, "px must be a non-negative integer"),
        ):
            document["prompts"]["protocols"] = [given]
            with pytest.raises(ConfigError, match=message):
                parse_task(document, tmp_path / "t.toml")
