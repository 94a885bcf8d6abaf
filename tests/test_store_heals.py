"""A store that heals (issue 14): what a kill, a power loss or a careless hand leaves in a run directory
(truncated or empty parts, stray files, ``.tmp`` leftovers, a second session, a dead session's lock, a
changed dataset, a tampered ``cases.parquet``) is named, set aside or refused, and the run ends with the
rows an undisturbed run has."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from segbench.data.readers.phantom import phantom
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.errors import SegbenchError
from segbench.running import executors
from segbench.running.execute import execute
from segbench.running.plan import RunOptions, RunPlan, WorkUnit, make_plan
from segbench.running.store import FILE_MODE, RunLocked, RunStore

ROOT = Path(__file__).resolve().parents[1]
KEY = ["adapter", "task", "case_id", "label", "prompt", "step"]


def quick_plan() -> RunPlan:
    config = load_config(None)
    return make_plan(
        config.suite("quick"), discover_tasks(config.task_dirs), RunOptions(adapters=("box",), device="cpu")
    )


def scores(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select([*KEY, "unit_id", "status", "dice", "nsd", "hd95"]).sort(KEY)


@pytest.fixture()
def finished(tmp_path: Path) -> tuple[RunPlan, RunStore, pl.DataFrame]:
    plan = quick_plan()
    store = execute(plan, tmp_path, progress=False)
    return plan, store, scores(store.read_cases())


def test_truncated_and_empty_parts_are_quarantined_by_name_and_rerun(
    finished: tuple[RunPlan, RunStore, pl.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, store, reference = finished
    first, second = sorted(store.parts.glob("*.parquet"))[:2]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # a write cut short
    second.write_bytes(b"")  # a power loss after the rename, before the data reached the disk
    assert first.name.split(".")[0] not in store.done_units()  # neither counts as done
    assert second.name.split(".")[0] not in RunStore(store.dir).done_units()
    capsys.readouterr()
    execute(plan, tmp_path, progress=False)
    err = capsys.readouterr().err
    for bad in (first, second):
        assert f"parts/{bad.name} is not a valid part" in err and (store.parts / "quarantine" / bad.name).is_file()
    assert f"resumed: {len(plan.units) - 2} units reused, 2 to run" in err
    assert "empty file" in err and "unreadable" in err
    rerun = scores(RunStore(store.dir).read_cases())
    assert rerun.equals(reference) and rerun.select(KEY).is_unique().all()


def test_a_part_whose_rows_belong_to_another_unit_is_quarantined(
    finished: tuple[RunPlan, RunStore, pl.DataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    _, store, _ = finished
    first, second = sorted(store.parts.glob("*.parquet"))[:2]
    moved = store.parts / f"{'0' * 20}.ok.parquet"
    moved.write_bytes(first.read_bytes())
    renamed = store.parts / second.name.replace(".ok.", ".failed.")
    os.replace(second, renamed)  # ok rows under a failed name
    with RunStore(store.dir).locked() as healing:
        done = healing.done_units()
    err = capsys.readouterr().err
    assert "0" * 20 not in done and second.name.split(".")[0] not in done
    assert f"{moved.name} is not a valid part (holds rows of unit(s) {first.name.split('.')[0]})" in err
    assert f"{renamed.name} is not a valid part (named failed but its rows say ok)" in err


def test_stray_files_warn_and_tmp_leftovers_are_swept(
    finished: tuple[RunPlan, RunStore, pl.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, store, reference = finished
    (store.parts / "notes.txt").write_text("mine")
    (store.parts / "old-results.parquet").write_bytes(b"PAR1")
    leftovers = [
        store.parts / ".abc.ok.parquet.k2j4h_x.tmp",
        store.dir / ".run.json.q8w7e6r.tmp",
        store.samples / ".case-x.npz.a1b2c3d4.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
    assert RunStore(store.dir).sweep_temporaries() == 0  # only a session holding the lock sweeps
    capsys.readouterr()
    execute(plan, tmp_path, progress=False)
    err = capsys.readouterr().err
    assert "parts/notes.txt: not a part" in err and "parts/old-results.parquet: not a part" in err
    assert "Traceback" not in err and "removed 3 temporary file(s)" in err
    assert not any(path.exists() for path in leftovers) and (store.parts / "notes.txt").read_text() == "mine"
    assert scores(RunStore(store.dir).read_cases()).equals(reference)


def test_a_second_session_into_the_same_run_refuses_and_names_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = quick_plan()
    refusals: list[str] = []
    real_create = executors.create

    class SecondSessionMeanwhile:
        """The first session's executor: while it holds the lock, another session tries the same run."""

        def run(self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]) -> None:
            monkeypatch.setattr(executors, "create", real_create)
            with pytest.raises(RunLocked) as refused:
                execute(plan, tmp_path, progress=False, command=["segbench", "run", "--second"])
            refusals.append(str(refused.value))
            real_create("local").run(plan, units, store, done)

    monkeypatch.setattr(executors, "create", lambda name, options=None: SecondSessionMeanwhile())
    store = execute(plan, tmp_path, progress=False, command=["segbench", "run", "--first"])
    assert len(refusals) == 1
    assert f"pid {os.getpid()} on {socket.gethostname()}" in refusals[0] and "segbench run --first" in refusals[0]
    manifest = store.read_manifest()
    assert manifest["status"] == "complete" and len(manifest["sessions"]) == 1  # the refused one wrote nothing
    assert not store.lock_path.exists()  # released at the end


def test_a_lock_held_by_a_live_process_refuses_and_a_dead_ones_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = quick_plan()
    store = RunStore(tmp_path / plan.run_id)
    store.dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {
            "pid": sleeper.pid,
            "host": socket.gethostname(),
            "started": "2026-01-01T00:00:00+00:00",
            "command": ["segbench", "run", "--suite", "other"],
        }
        store.lock_path.write_text(json.dumps(lock))
        with pytest.raises(RunLocked, match=f"pid {sleeper.pid} .* \\(segbench run --suite other\\)"):
            execute(plan, tmp_path, progress=False)
        assert not store.exists()  # refused before writing anything
    finally:
        sleeper.kill()
        sleeper.wait()
    capsys.readouterr()
    manifest = execute(plan, tmp_path, progress=False).read_manifest()  # the pid is dead now
    assert (
        f"taking over the lock of {plan.run_id} left by a session that is no longer running (pid {sleeper.pid}"
        in capsys.readouterr().err
    )
    assert manifest["status"] == "complete" and not store.lock_path.exists()
    store.lock_path.write_text(json.dumps({**lock, "host": "another-host"}))  # a live pid elsewhere can't be judged
    with pytest.raises(RunLocked, match="on another-host"):
        execute(plan, tmp_path, progress=False)
    assert store.lock_path.exists()  # someone else's lock is never removed


def test_files_follow_the_umask(finished: tuple[RunPlan, RunStore, pl.DataFrame], tmp_path: Path) -> None:
    _, store, _ = finished
    mask = os.umask(0o022)
    os.umask(mask)
    assert FILE_MODE == 0o666 & ~mask
    for path in [store.manifest_path, store.cases_path, *store.parts.glob("*.parquet")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    script = (
        "import os, sys, stat; os.umask(0o027); from segbench.running.store import RunStore; "
        "from segbench.running.unit_result import UnitResult; from segbench.running.manifest import RunManifest; "
        "s = RunStore(sys.argv[1]); s.write_manifest(RunManifest()); "
        "s.write_unit('u1', UnitResult([])); print(oct(stat.S_IMODE(s.manifest_path.stat().st_mode)), "
        "oct(stat.S_IMODE((s.parts / 'u1.ok.parquet').stat().st_mode)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "masked")], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["0o640", "0o640"]  # not mkstemp's 0600


def write_pngs(root: Path, count: int) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        image, labels = phantom(5, index)
        Image.fromarray(image).save(root / "images" / f"{index:03d}.png")
        Image.fromarray(labels["organ"].astype(np.uint8) * 255).save(root / "masks" / f"{index:03d}.png")


def test_a_changed_dataset_is_refused_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "pngs.toml").write_text(
        '[task]\nname = "pngs"\n[data]\nreader = "image_mask_pairs"\ndataset = "pngs"\n'
        'images = "images/*.png"\nmask = "masks/{name}"\n[labels]\norgan = "nonzero"\n[prompts]\nprotocols = ["box"]\n'
    )
    (tmp_path / "bench.toml").write_text(
        'task_dirs = ["tasks"]\n[suites.files]\nadapters = ["box"]\ntasks = ["pngs"]\n'
    )
    write_pngs(tmp_path / "data" / "pngs", 3)
    config = load_config(tmp_path / "bench.toml")

    def plan() -> RunPlan:
        return make_plan(
            config.suite("files"),
            discover_tasks(config.task_dirs),
            RunOptions(device="cpu", data_root=tmp_path / "data"),
        )

    store = execute(plan(), tmp_path / "out", progress=False)
    first = store.read_manifest()["sessions"][0]["datasets"]["pngs"]
    assert first == store.read_manifest()["datasets"]["pngs"] and first["files"] == 6
    mask = tmp_path / "data" / "pngs" / "masks" / "001.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(mask)  # a mask fixed between sessions
    with pytest.raises(
        SegbenchError,
        match=r"data changed since this run's first session: pngs \(6 files, sha256 "
        f"{first['sha256'][:12]} → 6 files",
    ):
        execute(plan(), tmp_path / "out", progress=False)
    assert len(store.read_manifest()["sessions"]) == 1 and not store.lock_path.exists()
    capsys.readouterr()
    manifest = execute(plan(), tmp_path / "out", progress=False, allow_data_change=True).read_manifest()
    assert "resuming anyway (--allow-data-change): pngs" in capsys.readouterr().err
    latest = manifest["sessions"][-1]
    assert latest["data_changed"][0].startswith("pngs") and latest["datasets"]["pngs"]["sha256"] != first["sha256"]
    assert manifest["datasets"]["pngs"] == first  # the run's own record stays the first session's


def test_cases_parquet_sha_mismatch_is_detected_and_rebuilt(
    finished: tuple[RunPlan, RunStore, pl.DataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    _, store, reference = finished
    manifest = store.read_manifest()
    assert manifest["cases_sha256"] == hashlib.sha256(store.cases_path.read_bytes()).hexdigest()
    tampered = pl.read_parquet(store.cases_path).with_columns(pl.col("dice") * 0 + 1.0)
    tampered.write_parquet(store.cases_path)
    os.utime(store.cases_path)  # newer than every part, so only the sha tells
    read = RunStore(store.dir).read_cases()
    assert "cases.parquet: its sha256" in capsys.readouterr().err and scores(read).equals(reference)
    with RunStore(store.dir).locked() as healing:  # a session rewrites it (and records its sha)
        assert scores(healing.read_cases()).equals(reference)
    recorded = RunStore(store.dir).read_manifest()["cases_sha256"]
    assert recorded == hashlib.sha256(store.cases_path.read_bytes()).hexdigest()
    assert scores(pl.read_parquet(store.cases_path)).equals(reference)
    capsys.readouterr()
    RunStore(store.dir).read_cases()
    assert "sha256" not in capsys.readouterr().err  # healed: read without a word
    tampered.write_parquet(store.cases_path)
    for part in store.parts.glob("*.parquet"):
        part.unlink()
    with pytest.raises(SegbenchError, match="no parts to rebuild it from"):
        RunStore(store.dir).read_cases()


def test_kill_9_three_times_then_rerun_gives_the_uninterrupted_rows(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("kill_resume", ROOT / "scripts" / "kill_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main(["--cases", "6", "--kills", "3", "--max-step", "4", "--seed", "3"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.count("PASS") == 6 and "FAIL" not in out
