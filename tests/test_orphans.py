"""Workers end when their driver dies: `segbench run --executor multigpu --workers 2` is SIGKILLed while
both workers are inside a unit, and the workers are gone seconds later; each of the two mechanisms alone
(Linux's parent-death signal, the portable parent watch) ends a process whose parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

# `box`, but each encode announces its pid in $SLOW_BOX_DIR and then sleeps far longer than the test runs
SLOW_PLUGIN = """
import os
import time

from segbench import hookimpl
from segbench.adapters.baselines import BoxBaseline
from segbench.interface import AdapterMeta


class SlowBox(BoxBaseline):
    meta = AdapterMeta(name="slow-box", family="test", description="box; each image takes minutes",
                       capabilities=BoxBaseline.meta.capabilities)

    def encode(self, image):
        marker = os.path.join(os.environ["SLOW_BOX_DIR"], f"{os.getpid()}.busy")
        with open(marker, "w") as handle:
            handle.write(str(os.getppid()))
        time.sleep(120)
        return super().encode(image)


@hookimpl
def segbench_register_adapters(register):
    register(SlowBox)
"""


def install_plugin(site: Path) -> str:
    site.mkdir()
    (site / "segbench_slow_test.py").write_text(SLOW_PLUGIN)
    info = site / "segbench_slow_test-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segbench-slow-test\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[segbench.adapters]\nslow = segbench_slow_test\n")
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def gone(pids: list[int]) -> bool:
    def dead(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return all(dead(pid) for pid in pids)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_multigpu_workers_die_with_their_killed_driver(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    env = {**os.environ, "PYTHONPATH": install_plugin(tmp_path / "site"), "SLOW_BOX_DIR": str(busy)}
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segbench.cli",
            "run",
            "--suite",
            "quick",
            "--adapters",
            "slow-box",
            "--device",
            "cpu",
            "--executor",
            "multigpu",
            "--workers",
            "2",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers: list[int] = []
    try:
        started = wait_until(lambda: len(list(busy.glob("*.busy"))) >= 2 or driver.poll() is not None, 60)
        assert started and driver.poll() is None, driver.stderr.read().decode() if driver.poll() is not None else ""
        workers = [int(marker.stem) for marker in busy.glob("*.busy")]
        assert {int(marker.read_text()) for marker in busy.glob("*.busy")} == {driver.pid}  # its own workers
        assert len(workers) == 2 and not gone(workers)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        assert wait_until(lambda: gone(workers), 5), f"workers {workers} outlived their driver"
    finally:
        kill_all([driver.pid, *workers])  # never leave a sleeper behind, whatever failed
        driver.wait(10)


# what leaves each mechanism alone: the watch thread as on a system without prctl, and Linux's parent-death
# signal with no watch thread
ALONE = {
    "watch": "lifeline.set_parent_death_signal = lambda sig=0: False",
    "pdeathsig": "lifeline._watch = lambda parent_pid, interval: None",
}


@pytest.mark.parametrize(
    "mechanism",
    [
        "watch",
        pytest.param(
            "pdeathsig", marks=pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
        ),
    ],
)
def test_each_mechanism_alone_ends_an_orphan(mechanism: str, tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    middle = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = '''
        import os, time
        from segbench.running.executors import lifeline
        {ALONE[mechanism]}
        lifeline.die_with_parent({{parent}}, interval=0.1)
        open({str(child_pid)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
        '''.format(parent=os.getpid())
        subprocess.Popen([sys.executable, "-c", child])
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", middle])
    orphan: list[int] = []
    try:
        assert wait_until(lambda: child_pid.exists() and child_pid.read_text() != "", 30)
        orphan = [int(child_pid.read_text())]
        assert psutil.Process(orphan[0]).ppid() == parent.pid and not gone(orphan)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_until(lambda: gone(orphan), 3), f"the orphan outlived its parent ({mechanism} alone)"
    finally:
        kill_all([parent.pid, *orphan])
        parent.wait(10)
