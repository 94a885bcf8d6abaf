"""The run manifest (``run.json``) as typed records, versioned, with the upgrade of older files.

``run.json`` says what a run is (suite, configuration and its hash, tasks, adapters with their
fingerprints, the plan), where and with what it ran (machine, packages, git, one session per
invocation) and how it ended (status, row and unit counts, the sha256 of ``cases.parquet``). The
runner writes it, the report, ``compare`` and the publishing checks read it; all of them go through
these records, so a field is named once.

Versions, as asv versions its result files: every file carries ``format_version``; a reader upgrades
an older file in memory, step by step (:data:`UPGRADES`), and refuses a newer one, naming both versions.

* 1: the files written before the version was recorded (no ``format_version`` key);
* 2: the same fields, with ``format_version``.

Reading is forgiving in the way the report always was: a field a run did not record (an older segbench,
a hand-made manifest in a test) reads as its default (None, or empty), and a field these records do not
know is kept in ``extra`` and written back unchanged, so nothing in a file is lost by reading and
writing it. Some fields are written only once known (a run's counts at its end, a session's end):
they are left out of the file while None, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from segbench.errors import SegbenchError

FORMAT_VERSION = 2


def _plain(value: Any) -> Any:
    """``value`` as JSON data: records as dicts, recursively."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@dataclass
class Record:
    """A record of ``run.json``: its known keys as fields, in the file's order; any other key in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    # fields left out of the file while None (written only once known)
    omitted_when_none: ClassVar[frozenset[str]] = frozenset()
    # field -> how its JSON value becomes a typed one (nested records)
    nested: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {key: cls.nested.get(key, _same)(value) for key, value in data.items() if key in names}
        return cls(**known, extra={key: value for key, value in data.items() if key not in names})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "extra" or (value is None and item.name in self.omitted_when_none):
                continue
            out[item.name] = _plain(value)
        out.update(_plain(self.extra))
        return out


def _same(value: Any) -> Any:
    return value


def _records(kind: type[Record]) -> Callable[[Any], dict[str, Any]]:
    """A JSON object of records by name (entries that are not objects are dropped, as the report did)."""
    return lambda value: {
        str(key): kind.from_dict(item) for key, item in (value or {}).items() if isinstance(item, Mapping)
    }


@dataclass
class TaskRecord(Record):
    """What the report shows about a task, so it never needs the task file."""

    version: str | None = None
    description: str | None = None
    reader: str | None = None
    dataset: str | None = None
    modality: str | None = None
    license: str | None = None
    nsd_tolerance: float | None = None
    dim: int | None = None
    family: str | None = None
    labels: list[str] | None = None
    origin: list[str] | None = None  # [task] origin: dataset ids (tasks/README.md); None: not recorded

    omitted_when_none: ClassVar[frozenset[str]] = frozenset({"origin"})  # runs before issue 18 read back unchanged


@dataclass
class AdapterRecord(Record):
    """What the report shows about an adapter, so it never needs the adapter installed."""

    family: str | None = None
    version: str | None = None
    description: str | None = None
    license: str | None = None
    reference: str | None = None
    input_size: int | None = None
    preprocessing: str | None = None
    capabilities: list[str] | None = None
    weights: str | None = None  # "pretrained" | "random" | "none"
    checkpoint: dict[str, Any] | None = None  # name, path, sha256, source, official (or name, random)
    precision: str | None = None
    checkpoint_spec: dict[str, Any] | None = None
    distribution: dict[str, Any] | None = None
    fingerprint: str | None = None
    code: dict[str, Any] | None = None  # module -> sha256
    card: dict[str, Any] | None = None  # ModelCard.describe(): links, trained_on and its source
    measured: dict[str, Any] | None = None  # params and FLOPs from segbench cards (running/model_cards.py)

    omitted_when_none: ClassVar[frozenset[str]] = frozenset({"card", "measured"})  # as "origin" above

    @property
    def checkpoint_sha256(self) -> str | None:
        return (self.checkpoint or {}).get("sha256")


@dataclass
class DatasetChecksum(Record):
    """sha256 over the (path, sha256) of every file of a task's cases; None: nothing read from files."""

    files: int | None = None
    sha256: str | None = None


@dataclass
class GitState(Record):
    commit: str | None = None
    dirty: bool | None = None
    remote: str | None = None  # a public URL, never a local path


@dataclass
class Machine(Record):
    host: str | None = None
    platform: str | None = None
    python: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None
    memory_gb: float | None = None
    torch_threads: int | None = None
    accelerator: dict[str, Any] = field(default_factory=dict)  # cuda_available, cuda, cudnn, gpus, driver

    omitted_when_none: ClassVar[frozenset[str]] = frozenset({"host"})  # a published manifest has no host

    @property
    def gpu_names(self) -> list[str | None]:
        return [gpu.get("name") for gpu in self.accelerator.get("gpus") or [] if isinstance(gpu, Mapping)]


def _git(value: Any) -> GitState | None:
    return GitState.from_dict(value) if isinstance(value, Mapping) else None


@dataclass
class Session(Record):
    """One invocation that worked on the run (the first, then every resume)."""

    started: str | None = None
    executor: str | None = None
    executor_options: dict[str, Any] = field(default_factory=dict)
    pending_units: int | None = None
    skipped_units: int | None = None
    superseded_units: int | None = None
    command: list[str] | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    git: GitState | None = None
    host: str | None = None
    segbench_version: str | None = None
    datasets: dict[str, DatasetChecksum] = field(default_factory=dict)
    data_changed: list[str] | None = None  # the tasks whose data changed since the first session
    ended: str | None = None  # None: the session never recorded its end (killed)
    executor_settings: dict[str, Any] | None = None

    omitted_when_none: ClassVar[frozenset[str]] = frozenset({"host", "data_changed", "ended", "executor_settings"})
    nested: ClassVar[Mapping[str, Callable[[Any], Any]]] = {"git": _git, "datasets": _records(DatasetChecksum)}


@dataclass
class RunManifest(Record):
    """``run.json``."""

    format_version: int = FORMAT_VERSION
    run_id: str | None = None
    suite: str | None = None
    created: str | None = None
    status: str | None = None  # "running" | "interrupted" | "complete" | "incomplete"
    segbench_version: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the configuration, exactly as hashed into config_hash
    config_hash: str | None = None
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    adapters: dict[str, AdapterRecord] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    planned: dict[str, list[str]] | None = None  # "adapter/task" -> case ids; None: a run that did not record it
    command: list[str] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    data_root: str | None = None
    datasets: dict[str, DatasetChecksum] = field(default_factory=dict)
    machine: Machine = field(default_factory=Machine)
    packages: dict[str, Any] = field(default_factory=dict)
    git: GitState | None = None
    sessions: list[Session] = field(default_factory=list)
    warnings: list[str] | None = None
    rows: int | None = None
    units: int | None = None
    failed_units: int | None = None
    missing_units: int | None = None
    cases_sha256: str | None = None

    omitted_when_none: ClassVar[frozenset[str]] = frozenset(
        {"warnings", "rows", "units", "failed_units", "missing_units", "cases_sha256"}
    )
    nested: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "tasks": _records(TaskRecord),
        "adapters": _records(AdapterRecord),
        "datasets": _records(DatasetChecksum),
        "machine": lambda value: Machine.from_dict(value if isinstance(value, Mapping) else {}),
        "git": _git,
        "sessions": lambda value: [Session.from_dict(s) for s in value or [] if isinstance(s, Mapping)],
        "planned": lambda value: {str(k): list(v) for k, v in value.items()} if isinstance(value, Mapping) else None,
    }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunManifest:
        """A manifest from the JSON of ``run.json`` of any format version, upgraded to this one."""
        return cls.from_dict(upgrade(data))

    @property
    def device(self) -> str | None:
        """The device the run asked for (``config.device``)."""
        return self.config.get("device")

    def adapter(self, name: str) -> AdapterRecord:
        """The record of adapter ``name``; an empty one where the run recorded none."""
        return self.adapters.get(name) or AdapterRecord()

    def planned_units(self) -> set[tuple[str, str, str]] | None:
        """(adapter, task, case id) of every unit the plan held; None where the run did not record it."""
        if self.planned is None:
            return None
        units = set()
        for pair, case_ids in self.planned.items():
            adapter, _, task = pair.partition("/")
            units |= {(adapter, task, str(case_id)) for case_id in case_ids}
        return units


def _from_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 → 2: the fields are the same; the version is recorded."""
    return {"format_version": 2, **data}


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_1}  # version -> its upgrade to the next


def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of a ``run.json`` of any known format version as the current version's."""
    out = dict(data)
    version = out.pop("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise SegbenchError(f"run.json: format_version {version!r} is not a version (1, 2, ...)")
    if version > FORMAT_VERSION:
        raise SegbenchError(
            f"run.json has format version {version}, written by a newer segbench; this one reads versions up to "
            f"{FORMAT_VERSION}: upgrade segbench to read it"
        )
    while version < FORMAT_VERSION:
        out = UPGRADES[version](out)
        version = out.pop("format_version")
    return {"format_version": version, **out}
