"""Caching you can trust: a unit is reused only when nothing that produced it changed. Editing a
third-party adapter's module and rerunning the same command into the same folder reruns that adapter's
units alone, says how many were reused, and keeps the old parts out of the results; ``--fresh`` reruns
everything."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from segbench.running.store import RunStore

from .conftest import run_cli
from .plugin_site import install_plugin

MODULE = "segbench_cache_test"
PLUGIN = """
from segbench import hookimpl
from segbench.adapters.baselines import BoxBaseline
from segbench.interface import AdapterMeta


class MyBox(BoxBaseline):
    meta = AdapterMeta(name="mybox", family="test", description="the box baseline under another name",
                       capabilities=BoxBaseline.meta.capabilities)


@hookimpl
def segbench_register_adapters(register):
    register(MyBox)
"""
UNITS = 4  # the quick suite's phantom cases, per adapter


def _run(out: Path, env: dict[str, str], *extra: str) -> tuple[RunStore, str]:
    result = run_cli("run", "--adapters", "box,mybox", "--out", str(out), "--no-progress", *extra, env=env)
    return RunStore(Path(result.stdout.strip().splitlines()[-1])), result.stderr


def _unit_ids(store: RunStore, adapter: str) -> set[str]:
    return set(store.read_cases().filter(pl.col("adapter") == adapter)["unit_id"])


def test_changed_adapter_code_reruns_its_units_alone_and_fresh_reruns_all(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = install_plugin(site, MODULE, PLUGIN, "segbench-cache-test", "0.0")
    out = tmp_path / "out"
    store, stderr = _run(out, env)
    assert "resumed:" not in stderr
    manifest = store.read_manifest()
    assert manifest["status"] == "complete" and manifest["command"][:2] == ["segbench", "run"]
    assert manifest["planned"] == {f"{a}/phantom": [f"phantom-{i:03d}" for i in range(UNITS)] for a in ("box", "mybox")}
    assert manifest["adapters"]["mybox"]["distribution"] == {"name": "segbench-cache-test", "version": "0.0"}
    before = {adapter: _unit_ids(store, adapter) for adapter in ("box", "mybox")}
    fingerprints = manifest["fingerprints"]

    # edit the adapter's module (not its version, nor its distribution's): its units run again, box's do not
    (site / f"{MODULE}.py").write_text(
        PLUGIN.replace('"the box baseline under another name"', '"the box baseline, renamed"')
    )
    again, stderr = _run(out, env)
    assert again.dir == store.dir  # the run id hashes the configuration, not the code
    assert f"resumed: {UNITS} units reused, {UNITS} to run" in stderr
    assert f"superseded: {UNITS} unit(s) of mybox" in stderr
    manifest = again.read_manifest()
    assert manifest["fingerprints"]["box"] == fingerprints["box"]
    assert manifest["fingerprints"]["mybox"] != fingerprints["mybox"]
    assert manifest["sessions"][-1]["pending_units"] == UNITS
    assert _unit_ids(again, "box") == before["box"]
    rerun = _unit_ids(again, "mybox")
    assert len(rerun) == UNITS and not rerun & before["mybox"]
    cases = again.read_cases()
    assert cases.height == 2 * UNITS * 2 * 2  # 2 labels x 2 box protocols, no stale rows consolidated
    superseded = sorted(p.name.split(".")[0] for p in (again.parts / "superseded").glob("*.parquet"))
    assert set(superseded) == before["mybox"]

    # --fresh: the same folder, nothing kept
    fresh, stderr = _run(out, env, "--fresh")
    assert fresh.dir == store.dir and "resumed:" not in stderr
    manifest = fresh.read_manifest()
    assert len(manifest["sessions"]) == 1 and manifest["sessions"][0]["pending_units"] == 2 * UNITS
    assert not (fresh.parts / "superseded").exists()
    assert fresh.read_cases().height == 2 * UNITS * 2 * 2
