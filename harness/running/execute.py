"""Running a plan into a run directory: manifest, resume, executor, consolidation.

Resuming: a run directory is keyed by the run id (the suite's configuration, ``config_hash``); the
units inside by what produced them (``segbench.running.plan``). A rerun of the same command reuses every unit
that has a part and whose id is still in the plan, and moves the parts of units the plan no longer
holds (an adapter whose code, weights or options changed) to ``parts/superseded/``, so they are never
consolidated. It says so: ``resumed: N units reused, M to run`` on stderr.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from segbench import __version__, plugins
from segbench.data.taskspec import TaskSpec
from segbench.errors import SegbenchError
from segbench.names import name_problem
from segbench.running import environment, executors
from segbench.running.manifest import (
    AdapterRecord,
    DatasetChecksum,
    GitState,
    Machine,
    RunManifest,
    Session,
    TaskRecord,
)
from segbench.running.model_cards import read_cards
from segbench.running.plan import AdapterSetup, RunPlan
from segbench.running.runner import report_notices
from segbench.running.store import SCORED, RunStore


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def dataset_checksums(plan: RunPlan) -> dict[str, DatasetChecksum]:
    """sha256 over the (path, sha256) of every file of the run's cases, per task."""
    out: dict[str, DatasetChecksum] = {}
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
        out[task] = DatasetChecksum(count, digest.hexdigest() if count else None)
    return out


def adapter_facts(setup: AdapterSetup) -> AdapterRecord:
    """What the report shows about an adapter, so it never needs the adapter installed."""
    meta = plugins.adapter_class(setup.name).meta
    return AdapterRecord(
        family=meta.family,
        version=meta.version,
        description=meta.description,
        license=meta.license,
        reference=meta.reference,
        input_size=meta.input_size,
        preprocessing=meta.preprocessing,
        capabilities=meta.capabilities.names(),
        weights=setup.weights,
        checkpoint=setup.checkpoint,
        precision=setup.options.precision,
        checkpoint_spec=meta.checkpoint.describe() if meta.checkpoint else None,
        distribution=setup.code.get("distribution"),
        fingerprint=setup.fingerprint,
        code={name: module["sha256"] for name, module in setup.code.get("modules", {}).items()},
        card=meta.card.describe(),
        measured=read_cards().get(setup.name),
    )


def task_facts(spec: TaskSpec) -> TaskRecord:
    """What the report shows about a task, so it never needs the task file."""
    return TaskRecord(
        version=spec.version,
        description=spec.description,
        reader=spec.reader,
        dataset=spec.dataset,
        modality=spec.modality,
        license=spec.license,
        nsd_tolerance=spec.nsd_tolerance,
        dim=spec.dim,
        family=spec.family,
        labels=[label.name for label in spec.labels],
        origin=list(spec.origin),
    )


def new_manifest(
    plan: RunPlan, command: Sequence[str] | None = None, datasets: Mapping[str, DatasetChecksum] | None = None
) -> RunManifest:
    """A new run's manifest; ``datasets``: its data checksums (``dataset_checksums``), computed if not given."""
    return RunManifest(
        run_id=plan.run_id,
        suite=plan.suite,
        created=_now(),
        status="running",
        segbench_version=__version__,
        config=plan.config,
        config_hash=plan.config_hash,
        tasks={name: task_facts(spec) for name, spec in plan.tasks.items()},
        adapters={name: adapter_facts(setup) for name, setup in plan.adapters.items()},
        fingerprints=plan.fingerprints,
        planned=plan.planned(),
        command=list(command) if command is not None else None,
        skipped=plan.skipped,
        data_root=str(plan.data_root) if plan.data_root else None,
        datasets=dict(datasets) if datasets is not None else dataset_checksums(plan),
        machine=Machine.from_dict(environment.machine()),
        packages=environment.package_versions(),
        git=GitState.from_dict(environment.git_commit()),
        sessions=[],
    )


def _supersede(plan: RunPlan, store: RunStore) -> int:
    """Move aside the parts of units this plan does not hold; how many there were."""
    planned = {unit.unit_id for unit in plan.units}
    stale = [unit_id for unit_id in store.done_units() if unit_id not in planned]
    if not stale:
        return 0
    owners = Counter(store.part_adapters(stale).values())
    store.supersede(stale)
    for adapter, count in sorted(owners.items()):
        print(
            f"superseded: {count} unit(s) of {adapter} made by other code, weights or options than this plan's; "
            f"moved to {store.parts.name}/superseded/ and left out of the results",
            file=sys.stderr,
        )
    return len(stale)


def _data_changes(first: Mapping[str, DatasetChecksum], now: Mapping[str, DatasetChecksum]) -> list[str]:
    """The tasks whose data checksums differ from the first session's (tasks either lacks are not judged)."""
    return [
        f"{task} ({first[task].files} files, sha256 {str(first[task].sha256)[:12]} → "
        f"{now[task].files} files, sha256 {str(now[task].sha256)[:12]})"
        for task in sorted(set(first) & set(now))
        if (first[task].files, first[task].sha256) != (now[task].files, now[task].sha256)
    ]


def execute(
    plan: RunPlan,
    out: Path,
    executor: str = "local",
    retry_failed: bool = False,
    progress: bool = True,
    executor_options: Mapping[str, Any] | None = None,
    command: Sequence[str] | None = None,
    fresh: bool = False,
    allow_data_change: bool = False,
) -> RunStore:
    """Run every pending unit of ``plan`` into ``out/<run_id>`` with the executor ``executor`` built from
    ``executor_options``; resumes a run already there, whichever executor made it, unless ``fresh``
    (which first removes what an earlier run wrote there). ``command`` is recorded as the command line.
    The session holds the run directory's lock throughout (a second session refuses); a resumed run whose
    data checksums differ from its first session's is refused unless ``allow_data_change``."""
    problem = name_problem(plan.run_id)
    if problem:  # a run id with '/' or '..' would write outside ``out``
        raise SegbenchError(f"run id {problem}")
    store = RunStore(Path(out) / plan.run_id)
    with store.locked(command):
        return _execute_locked(
            plan, store, executor, retry_failed, progress, executor_options, command, fresh, allow_data_change
        )


def _execute_locked(
    plan: RunPlan,
    store: RunStore,
    executor: str,
    retry_failed: bool,
    progress: bool,
    executor_options: Mapping[str, Any] | None,
    command: Sequence[str] | None,
    fresh: bool,
    allow_data_change: bool,
) -> RunStore:
    if fresh:
        store.clear()
    store.sweep_temporaries()
    resumed = store.exists()
    datasets = dataset_checksums(plan)
    changed: list[str] = []
    if resumed:
        manifest = store.manifest()
        if manifest.config_hash != plan.config_hash:
            raise SegbenchError(
                f"{store.dir} holds a run of another configuration; choose another --out, --run-id or --fresh"
            )
        changed = _data_changes(manifest.datasets, datasets)
        if changed and not allow_data_change:
            raise SegbenchError(
                f"{store.dir}: the data changed since this run's first session: {'; '.join(changed)}; "
                "its rows would mix two datasets. Use --fresh to start again, another --out, or "
                "--allow-data-change to resume anyway (recorded in run.json)"
            )
        for change in changed:
            print(
                f"warning: data changed since the first session, resuming anyway (--allow-data-change): {change}",
                file=sys.stderr,
            )
        manifest.adapters = {name: adapter_facts(setup) for name, setup in plan.adapters.items()}
        manifest.fingerprints = plan.fingerprints
        manifest.planned = plan.planned()
        if command is not None:
            manifest.command = list(command)
    else:
        manifest = new_manifest(plan, command, datasets)
    chosen = executors.create(executor, executor_options)
    superseded = _supersede(plan, store) if resumed else 0
    pending = store.pending(plan.units, retry_failed)
    if resumed:
        print(f"resumed: {len(plan.units) - len(pending)} units reused, {len(pending)} to run", file=sys.stderr)
    session = Session(
        started=_now(),
        executor=executor,
        executor_options=dict(executor_options or {}),
        pending_units=len(pending),
        skipped_units=len(plan.units) - len(pending),
        superseded_units=superseded,
        command=list(command) if command is not None else None,
        fingerprints=plan.fingerprints,
        git=GitState.from_dict(environment.git_commit()),
        host=environment.host(),
        segbench_version=__version__,
        datasets=datasets,
        data_changed=changed or None,
    )
    manifest.sessions.append(session)
    manifest.status = "running"
    store.write_manifest(manifest)
    for reason in plan.skipped.values():
        print(f"skipped: {reason}", file=sys.stderr)
    bar = tqdm(total=len(pending), desc=plan.run_id, unit="case", disable=not progress, file=sys.stderr)
    try:
        settings = chosen.run(plan, pending, store, lambda unit: bar.update(1)) if pending else None
    except BaseException:
        manifest.status = "interrupted"
        session.ended = _now()
        store.write_manifest(manifest)
        raise
    finally:
        bar.close()
    if manifest.machine.torch_threads is None and environment.torch_loaded():
        # the facts only torch knows (threads, its CUDA build), left out at the start of a run that had
        # not imported it (environment.accelerator): an adapter that uses torch has loaded it since
        manifest.machine = Machine.from_dict(environment.machine())
    frame = store.consolidate()
    report_notices(plan, frame, manifest)
    failed_units = frame.filter(~frame["status"].is_in(SCORED))["unit_id"].n_unique()
    missing = len(store.pending(plan.units))
    manifest.status = "complete" if not missing else "incomplete"
    manifest.rows = frame.height
    manifest.units = frame["unit_id"].n_unique()
    manifest.failed_units = failed_units
    manifest.missing_units = missing
    manifest.cases_sha256 = store.cases_sha256
    session.ended = _now()
    session.executor_settings = dict(settings or {})
    store.write_manifest(manifest)
    return store
