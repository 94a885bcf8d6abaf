"""scripts/gpu-check.sh --dry-run: every step of the GPU check runs on the CPU at tiny sizes and writes
what the device run would bring back (issue 19 item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def test_gpu_check_dry_run_writes_every_result(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "cpu-dry-run"
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        ["SUMMARY.md", "ceiling.txt", "machine.json", "smoke.jsonl", "throughput.jsonl", "volume-speed.jsonl"]
    )
    assert len(written) <= 8  # what the device tool brings back from $OUT
    summary = (out / "SUMMARY.md").read_text()
    for step in ("throughput", "volume-speed", "smoke (real weights)", "harness ceiling"):
        assert f"| {step} | ok |" in summary, summary
    throughput = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    assert {(r["precision"], r["batch"], r["prompts"]) for r in throughput} == {
        (p, b, n) for p in ("fp32", "bf16") for b in (1, 2) for n in (1, 2)
    }
    volume = [json.loads(line) for line in (out / "volume-speed.jsonl").read_text().splitlines()]
    assert volume and all(r["status"] == "ok" and r["label"] == "tumour" for r in volume)
    assert all(json.loads(line)["status"] == "ok" for line in (out / "smoke.jsonl").read_text().splitlines())
    ceiling = (out / "ceiling.txt").read_text()
    assert "box 64x64" in ceiling and "box 8x64x64" in ceiling and "rows/s" in ceiling
    assert json.loads((out / "machine.json").read_text())["mode"].startswith("dry-run")
