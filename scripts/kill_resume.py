"""kill -9 a run at random points, resume it each time, and check it ends as an uninterrupted run does.

    python scripts/kill_resume.py                      # 600 units (box and otsu over 300 phantoms), 20 kills
    python scripts/kill_resume.py --cases 20 --kills 3 # what tests/test_store_heals.py runs

Builds a suite in a temporary folder (a generated phantom task, one box prompt per label, the box and
otsu baselines: 2 x cases units), runs it once uninterrupted, then runs it into another folder and
SIGKILLs the run's process group ``--kills`` times, each time after a random number of new parts (0 to
``--max-step``) and a random extra delay (0 to 0.3 s), seeded; then one rerun. The rows (unit, case, label,
prompt, step, status, dice, nsd, hd95; timings aside) must equal the uninterrupted run's, with no duplicate
row key, no ``.tmp`` file, no lock and nothing quarantined left behind. Exit 0 when all hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

KEY = ["adapter", "task", "case_id", "label", "prompt", "step"]
COMPARED = ["unit_id", *KEY, "status", "dice", "nsd", "hd95"]


def write_suite(folder: Path, cases: int) -> Path:
    tasks = folder / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "ph.toml").write_text(
        '[task]\nname = "ph"\nversion = "1"\n[data]\nreader = "phantom"\n'
        f'cases = {cases}\nseed = 3\n[labels]\norgan = "nonzero"\nlesion = "nonzero"\n'
        '[prompts]\nprotocols = ["box"]\n'
    )
    config = folder / "bench.toml"
    config.write_text('task_dirs = ["tasks"]\n[suites.kill]\nadapters = ["box", "otsu"]\ntasks = ["ph"]\n')
    return config


def command(config: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "segbench.cli",
        "run",
        "--config",
        str(config),
        "--suite",
        "kill",
        "--out",
        str(out),
        "--run-id",
        "r",
        "--no-progress",
    ]


def parts(run_dir: Path) -> int:
    folder = run_dir / "parts"
    return len(list(folder.glob("*.parquet"))) if folder.is_dir() else 0


def leftovers(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.tmp")) if run_dir.is_dir() else []


def rows(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "cases.parquet").select(COMPARED).sort(KEY)


def kill_run(args: list[str], run_dir: Path, rng: random.Random, max_step: int) -> tuple[int, int, float, str]:
    """Start a session and SIGKILL its process group after a random number of new parts and a random delay;
    (parts before, parts after, seconds it ran, how it ended)."""
    before = parts(run_dir)
    target, delay = before + rng.randint(0, max_step), rng.uniform(0.0, 0.3)
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while parts(run_dir) < target and process.poll() is None and time.monotonic() - started < 600:
        time.sleep(0.01)
    time.sleep(delay)
    ended = "killed"
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        ended = f"exited {process.returncode}"
    process.wait()
    process.stderr.close()
    return before, parts(run_dir), time.monotonic() - started, ended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300, help="phantom cases (units: twice as many)")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--max-step", type=int, default=45, help="most new parts before a kill")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    options = parser.parse_args(argv)
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory() as scratch:
        work = options.workdir or Path(scratch)
        config = write_suite(work / "suite", options.cases)
        started = time.monotonic()
        subprocess.run(command(config, work / "plain"), check=True, capture_output=True)
        print(f"uninterrupted run: {time.monotonic() - started:.1f} s")
        reference = rows(work / "plain" / "r")
        run_dir = work / "killed" / "r"
        args = command(config, work / "killed")
        print(
            f"{'kill':>4} {'parts before':>12} {'parts after':>11} {'ran s':>6} {'tmp left':>8} {'lock left':>9}  "
            "ended",
            flush=True,
        )
        tmp_seen = locks_seen = 0
        for index in range(1, options.kills + 1):
            before, after, ran, ended = kill_run(args, run_dir, rng, options.max_step)
            tmp, lock = leftovers(run_dir), (run_dir / ".lock").exists()
            tmp_seen += bool(tmp)
            locks_seen += lock
            print(
                f"{index:>4} {before:>12} {after:>11} {ran:>6.1f} {len(tmp):>8} {'yes' if lock else 'no':>9}  {ended}",
                flush=True,
            )
        final = subprocess.run(args, capture_output=True, text=True)
        notices = [line for line in final.stderr.splitlines() if line.startswith(("notice:", "warning:", "resumed:"))]
        print(f"final rerun: exit {final.returncode}; " + " | ".join(notices))
        got = rows(run_dir) if final.returncode == 0 else pl.DataFrame()
        checks = {
            "final rerun exit 0": final.returncode == 0,
            f"rows equal to the uninterrupted run ({reference.height} rows, {options.cases * 2} units)": got.height > 0
            and got.equals(reference),
            "no duplicate row keys": got.height > 0 and got.select(KEY).is_unique().all(),
            "no leftover .tmp files": not leftovers(run_dir),
            "no lock left": not (run_dir / ".lock").exists(),
            "nothing quarantined": not (run_dir / "parts" / "quarantine").exists(),
        }
        print(f"kills that left .tmp files: {tmp_seen}; that left a stale lock: {locks_seen} (both healed on resume)")
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
        return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
