"""Running a plan into a run directory: manifest, resume, executor, consolidation."""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from segbench import __version__, environment, executors, plugins
from segbench.errors import SegbenchError
from segbench.plan import AdapterSetup, RunPlan, WorkUnit
from segbench.store import RunStore


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def dataset_checksums(plan: RunPlan) -> dict[str, Any]:
    """sha256 over the (path, sha256) of every file of the run's cases, per task."""
    out: dict[str, Any] = {}
    for task in plan.tasks:
        reader = plan.reader(task)
        digest = hashlib.sha256()
        count = 0
        case_ids = {u.case_id for u in plan.units if u.task == task}
        spec = plan.tasks[task]
        if spec.support is not None:  # support examples shape the results as much as the queries
            case_ids |= set(spec.support.split(reader.case_ids(), spec.source)[0])
        for case_id in sorted(case_ids):
            for path in reader.files(case_id):
                if path.is_file():
                    digest.update(f"{path.relative_to(reader.root).as_posix()}\0".encode())
                    digest.update(hashlib.sha256(path.read_bytes()).digest())
                    count += 1
        out[task] = {"files": count, "sha256": digest.hexdigest() if count else None}
    return out


def adapter_facts(setup: AdapterSetup) -> dict[str, Any]:
    """What the report shows about an adapter, so it never needs the adapter installed."""
    meta = plugins.adapter_class(setup.name).meta
    return {"family": meta.family, "version": meta.version, "description": meta.description,
            "license": meta.license, "reference": meta.reference, "input_size": meta.input_size,
            "preprocessing": meta.preprocessing, "capabilities": meta.capabilities.names(),
            "weights": setup.weights, "checkpoint": setup.checkpoint, "precision": setup.options.precision,
            "checkpoint_spec": meta.checkpoint.describe() if meta.checkpoint else None}


def new_manifest(plan: RunPlan) -> dict[str, Any]:
    return {
        "run_id": plan.run_id,
        "suite": plan.suite,
        "created": _now(),
        "status": "running",
        "segbench_version": __version__,
        "config": plan.config,
        "config_hash": plan.config_hash,
        "tasks": {name: {"version": spec.version, "description": spec.description, "reader": spec.reader,
                         "dataset": spec.dataset, "modality": spec.modality, "license": spec.license,
                         "nsd_tolerance": spec.nsd_tolerance, "dim": spec.dim, "family": spec.family,
                         "labels": [label.name for label in spec.labels]}
                  for name, spec in plan.tasks.items()},
        "adapters": {name: adapter_facts(setup) for name, setup in plan.adapters.items()},
        "skipped": plan.skipped,
        "data_root": str(plan.data_root) if plan.data_root else None,
        "datasets": dataset_checksums(plan),
        "machine": environment.machine(),
        "packages": environment.package_versions(),
        "git": environment.git_commit(),
        "sessions": [],
    }


def execute(plan: RunPlan, out: Path, executor: str = "local", retry_failed: bool = False,
            progress: bool = True, executor_options: Mapping[str, Any] | None = None) -> RunStore:
    """Run every pending unit of ``plan`` into ``out/<run_id>`` with the executor ``executor`` built from
    ``executor_options``; resumes a run already there, whichever executor made it."""
    store = RunStore(Path(out) / plan.run_id)
    if store.exists():
        manifest = store.read_manifest()
        if manifest.get("config_hash") != plan.config_hash:
            raise SegbenchError(f"{store.dir} holds a run of another configuration; choose another --out "
                                "or --run-id")
    else:
        manifest = new_manifest(plan)
    chosen = executors.create(executor, executor_options)
    done = store.done_units()
    pending: list[WorkUnit] = [u for u in plan.units
                               if u.unit_id not in done or (retry_failed and done[u.unit_id] == "failed")]
    session = {"started": _now(), "executor": executor, "executor_options": dict(executor_options or {}),
               "pending_units": len(pending),
               "skipped_units": len(plan.units) - len(pending), "git": environment.git_commit(),
               "host": environment.host(), "segbench_version": __version__}
    manifest["sessions"].append(session)
    manifest["status"] = "running"
    store.write_manifest(manifest)
    for reason in plan.skipped.values():
        print(f"skipped: {reason}", file=sys.stderr)
    bar = tqdm(total=len(pending), desc=plan.run_id, unit="case", disable=not progress, file=sys.stderr)
    try:
        settings = chosen.run(plan, pending, store, lambda unit: bar.update(1)) if pending else None
    except BaseException:
        manifest["status"] = "interrupted"
        session["ended"] = _now()
        store.write_manifest(manifest)
        raise
    finally:
        bar.close()
    frame = store.consolidate()
    failed_units = frame.filter(frame["status"] != "ok")["unit_id"].n_unique()
    manifest.update(status="complete", rows=frame.height, units=frame["unit_id"].n_unique(),
                    failed_units=failed_units)
    session.update(ended=_now(), executor_settings=dict(settings or {}))
    store.write_manifest(manifest)
    return store
