"""Start-up without model libraries (issue 19): ``segbench run`` with a baseline imports no torch, no
torchvision, segment_anything or sam2, in a fresh interpreter, and still writes its rows; the lookup of an
adapter's distribution (its fingerprint) gives what ``importlib.metadata`` would, without its whole map."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from segbench.running import plan
from segbench.running.environment import gpu_driver_present

MODEL_LIBRARIES = ("torch", "torchvision", "segment_anything", "sam2")

CHILD = """
import json, runpy, sys
sys.argv = ["segbench", "run", "--suite", "quick", "--adapters", "box", "--limit", "1", "--out", sys.argv[1],
            "--device", sys.argv[2], "--no-warmup"]
try:
    runpy.run_module("segbench.cli", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "loaded": sorted(name for name in sys.modules if name.split(".")[0] in %r)}))
"""


def test_box_run_imports_no_model_library(tmp_path: Path) -> None:
    """``--device auto`` (the default) too: on a machine without a GPU driver there is nothing to ask torch."""
    device = "auto"
    done = subprocess.run(
        [sys.executable, "-c", CHILD % (MODEL_LIBRARIES,), str(tmp_path), device],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["code"] in (0, None), done.stderr[-2000:]
    if gpu_driver_present():  # a GPU machine: auto asks torch, as it must
        pytest.skip("a GPU driver is present: resolving --device auto imports torch here")
    assert child["loaded"] == []
    parts = list(tmp_path.glob("*/parts/*.parquet"))
    assert parts, "the run wrote no rows"


def test_distribution_lookup_matches_importlib() -> None:
    every = importlib.metadata.packages_distributions()
    for name in ("segbench", "numpy", "polars", "PIL", "no_such_module_anywhere", *sorted(every)[:20]):
        plan._providers.cache_clear()
        assert plan._providers(name) == every.get(name, []), name
