"""Expanding a suite into a run plan: resolved adapters, task readers and work units with stable ids.

A work unit is one (adapter, task, case): the unit of scheduling, of resume and of failure. All the
prompt protocols of a case run inside its unit, so the encoder runs once per image and adapter and is
shared by every label, prompt and iteration. Unit ids hash what defines the unit's result, so they are
the same on every machine and in every executor, and a resumed run reuses a unit only when nothing that
made it has changed:

* the adapter's fingerprint (:func:`adapter_fingerprint`): the source of every module of the adapter
  class's MRO (the harness interface aside) and the distribution each comes from, its declared version,
  the checkpoint's sha256, the load options that change results (precision, offload, random weights,
  seed), the metrics' version and segbench's version;
* the task: its name, version and the sha256 of its task file;
* the case, the protocols (kind and parameters) and the seed.

The run id (``config_hash``) does not hash the fingerprints: rerunning the same command into the same
folder after editing an adapter resumes the run and reruns exactly that adapter's units.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from segbench import __version__, plugins
from segbench.data.readers import Reader
from segbench.data.readers.resize import ResizedReader
from segbench.data.suites import Suite
from segbench.data.support_sets import unfit_reason
from segbench.data.taskspec import TaskSpec
from segbench.errors import ConfigError
from segbench.interface import Adapter, Capabilities, LoadOptions, Precision
from segbench.measuring.metric_table import task_metrics, unit_key
from segbench.measuring.metrics import METRICS_VERSION
from segbench.protocols.prompts import ProtocolSpec
from segbench.running import prediction_writers
from segbench.running.environment import gpu_driver_present, torch_loaded
from segbench.weights import checkpoints

WEIGHT_MODES = ("pretrained", "random")


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str
    adapter: str
    task: str
    case_id: str


@dataclass(frozen=True)
class AdapterSetup:
    """How one adapter is built in this run, and what its rows are flagged with."""

    name: str
    options: LoadOptions
    weights: str  # "pretrained" | "random" | "none" (needs no weights)
    checkpoint: dict[str, Any] | None = None
    fingerprint: str = ""  # sha256 of what produced the adapter's units (adapter_fingerprint)
    code: dict[str, Any] = field(default_factory=dict)  # module sha256s and distribution behind the fingerprint


@dataclass
class RunPlan:
    """Everything a worker needs to execute units; plain data, so it can be sent to other processes."""

    run_id: str
    suite: str
    config: dict[str, Any]
    config_hash: str
    tasks: dict[str, TaskSpec]
    protocols: dict[str, tuple[ProtocolSpec, ...]]  # "adapter/task" -> protocols the adapter supports
    data_root: Path | None
    seed: int
    device: str
    adapters: dict[str, AdapterSetup]
    units: list[WorkUnit]
    skipped: dict[str, str] = field(default_factory=dict)
    warmup: bool = True  # one untimed encode/decode per adapter before the first case
    save_masks: int | None = 0  # cases per task whose predicted masks are kept, None: all (segbench.running.kept_masks)
    write_predictions: str | None = None  # format the final masks are written out in (running.prediction_writers)

    @property
    def fingerprints(self) -> dict[str, str]:
        return {name: setup.fingerprint for name, setup in self.adapters.items()}

    def planned(self) -> dict[str, list[str]]:
        """``"adapter/task"`` → the case ids of its units, in plan order."""
        out: dict[str, list[str]] = {}
        for unit in self.units:
            out.setdefault(f"{unit.adapter}/{unit.task}", []).append(unit.case_id)
        return out

    def protocols_for(self, adapter: str, task: str) -> tuple[ProtocolSpec, ...]:
        return self.protocols[f"{adapter}/{task}"]

    def reader(self, task: str) -> Reader:
        spec = self.tasks[task]
        reader = plugins.readers()[spec.reader](spec, self.data_root)
        return ResizedReader(reader, spec.resize) if spec.resize else reader


def resolve_device(device: str, check: bool = True) -> str:
    """``auto`` → cuda or cpu, as torch sees it here; ``check=False`` accepts cuda where the driver has no
    GPU (its workers run elsewhere)."""
    if device == "auto":
        if not torch_loaded() and not gpu_driver_present():  # no driver: no CUDA, and no torch import to say so
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if check and not torch.cuda.is_available():
            raise ConfigError("--device", f"'{device}' asked for, but torch sees no CUDA device")
    elif device != "cpu":
        raise ConfigError("--device", f"must be cpu, cuda[:N] or auto, got '{device}'")
    return device


def setup_adapter(
    name: str,
    weights: str,
    device: str,
    precision: Precision,
    seed: int,
    overrides: dict[str, Path],
    offload: bool = False,
) -> AdapterSetup:
    """Resolve an adapter's checkpoint (raising CheckpointMissing when absent) into load options."""
    meta = plugins.adapter_class(name).meta
    spec = meta.checkpoint
    if spec is None:
        return AdapterSetup(name, LoadOptions(device, None, False, precision, seed, offload), "none")
    if weights == "random":
        return AdapterSetup(
            name,
            LoadOptions(device, None, True, precision, seed, offload),
            "random",
            {"name": spec.name, "random": True},
        )
    found = checkpoints.resolve(spec, overrides.get(spec.name))
    info = {
        "name": spec.name,
        "path": str(found.path),
        "sha256": found.sha256,
        "source": found.source,
        "official": found.official,
    }
    return AdapterSetup(name, LoadOptions(device, found.path, False, precision, seed, offload), "pretrained", info)


@cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


# What a distribution lists of its files (wheels, eggs, old pip installs): a top-level name inferred from them
# is one of their paths' parts, so a distribution whose lists do not contain the name cannot provide it
_FILE_LISTS = ("RECORD", "installed-files.txt", "SOURCES.txt")


@cache
def _providers(top: str) -> list[str]:
    """``importlib.metadata.packages_distributions().get(top, [])`` without building the whole map, which
    parses every file of every installed distribution (0.5 s of each run's start on the dev VM, more
    loaded): the same rule (declared ``top_level.txt``, else names inferred from the files), the same order,
    with the inference run only for the distributions whose file lists mention ``top`` at all."""
    infer = getattr(importlib.metadata, "_top_level_inferred", None)
    if infer is None:  # another Python's internals: the whole map, as before
        return list(_distributions().get(top, []))
    names = []
    for dist in importlib.metadata.distributions():
        tops = (dist.read_text("top_level.txt") or "").split()
        if not tops:
            listed = "".join(dist.read_text(name) or "" for name in _FILE_LISTS)
            tops = list(infer(dist)) if top in listed else []
        if top in tops:
            names.append(dist.metadata["Name"])
    return names


def distribution_of(module: str) -> dict[str, str] | None:
    """The installed distribution a module belongs to (name and version), or None (a module on the path)."""
    names = _providers(module.split(".", 1)[0])
    if not names:
        return None
    try:
        return {"name": names[0], "version": importlib.metadata.version(names[0])}
    except importlib.metadata.PackageNotFoundError:
        return None


def _file_sha256(path: str | None) -> str | None:
    return checkpoints.sha256_file(Path(path)) if path and Path(path).is_file() else None


def _source_sha256(module: Any) -> str | None:
    try:
        return _file_sha256(inspect.getsourcefile(module))
    except TypeError:  # a built-in or extension module
        return None


def _unimported_source_sha256(name: str) -> str | None:
    """The sha256 of module ``name``'s source file, found without importing it (an adapter's model code)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec else None
    return _file_sha256(origin) if origin and origin.endswith(".py") else None


def adapter_code(cls: type) -> dict[str, Any]:
    """What the adapter's code is: the sha256 of each module of its class's MRO that defines an adapter
    class (the harness interface aside) and of every module those classes name in ``code_modules`` (model
    code imported only when the adapter loads, read here without importing it) and, per module, its
    distribution when it is installed; plus the distribution of the adapter's own module (in run.json)."""
    modules: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is Adapter or not (isinstance(klass, type) and issubclass(klass, Adapter)):
            continue
        name = klass.__module__
        if name not in modules:
            module = sys.modules.get(name)
            modules[name] = {
                "sha256": _source_sha256(module) if module else None,
                "distribution": distribution_of(name),
            }
        for extra in klass.__dict__.get("code_modules", ()):
            if extra not in modules:
                modules[extra] = {"sha256": _unimported_source_sha256(extra), "distribution": distribution_of(extra)}
    return {"modules": modules, "distribution": distribution_of(cls.__module__)}


def adapter_fingerprint(setup: AdapterSetup) -> AdapterSetup:
    """``setup`` with its fingerprint: the sha256 of everything that makes its results (module docstring)."""
    cls = plugins.adapter_class(setup.name)
    code = adapter_code(cls)
    options = setup.options
    made_of = {
        "adapter": setup.name,
        "version": cls.meta.version,
        "code": code,
        "checkpoint_sha256": (setup.checkpoint or {}).get("sha256"),
        "weights": setup.weights,
        "precision": options.precision,
        "offload": options.offload,
        "random_weights": options.random_weights,
        "seed": options.seed,
        "metrics": METRICS_VERSION,
        "segbench": __version__,
    }
    digest = hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()
    return dataclasses.replace(setup, fingerprint=digest, code=code)


def task_file_sha256(task: TaskSpec) -> str | None:
    """The sha256 of the task's file (None for a task defined in memory)."""
    return _file_sha256(str(task.source))


def unit_id(
    adapter: str,
    fingerprint: str,
    task: TaskSpec,
    case_id: str,
    protocols: tuple[ProtocolSpec, ...],
    seed: int,
    task_sha256: str | None = None,
    metrics: str = "",
) -> str:
    """The unit's content key; ``metrics`` is :func:`segbench.measuring.metric_table.unit_key` of the metrics
    it computes ("" for the default table, which leaves today's ids as they were)."""
    key = "\x1f".join(
        [
            adapter,
            fingerprint,
            task.name,
            task.version,
            task_sha256 or "",
            case_id,
            ",".join(f"{p.name}{p.kind}{sorted(p.params)!r}" for p in protocols),
            str(seed),
            *([metrics] if metrics else []),
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def supported_protocols(wanted: Sequence[ProtocolSpec], capabilities: Capabilities) -> tuple[ProtocolSpec, ...]:
    """The protocols of ``wanted`` an adapter with ``capabilities`` takes, at least their first step
    (:attr:`~segbench.protocols.base.ProtocolKind.first_requires`); the others are not run for it."""
    declared = set(capabilities.names())
    return tuple(p for p in wanted if p.handler.first_requires <= declared)


@dataclass(frozen=True)
class RunOptions:
    """How a suite is to be run: what ``segbench run``'s options choose. ``adapters``, ``limit`` and
    ``save_masks`` left None take the suite's own; ``save_masks`` ``"all"`` keeps every case;
    ``check_device=False`` accepts ``cuda`` on a driver without a GPU (its workers run elsewhere);
    ``write_predictions`` writes every unit's final masks out in that format (None: none)."""

    adapters: tuple[str, ...] | None = None
    limit: int | None = None
    device: str = "auto"
    weights: str = "pretrained"
    precision: Precision = "fp32"
    checkpoint_overrides: Mapping[str, Path] = field(default_factory=dict)
    data_root: Path | None = None
    run_id: str | None = None
    warmup: bool = True
    offload: bool = False
    save_masks: int | str | None = None
    check_device: bool = True
    write_predictions: str | None = None  # nifti, dicom-seg, npz or auto (segbench.running.prediction_writers)


def _cases(
    chosen: Mapping[str, TaskSpec], data_root: Path | None, limit: int | None
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Each task's case ids to run (its queries, for an in-context task: the pool is never scored), at
    most ``limit``; and the support pool's size of each in-context task."""
    case_ids: dict[str, list[str]] = {}
    pool_sizes: dict[str, int] = {}
    for name, spec in chosen.items():
        ids = plugins.readers()[spec.reader](spec, data_root).case_ids()
        if spec.support is not None:
            pool, ids = spec.support.split(ids, spec.source)
            pool_sizes[name] = len(pool)
        case_ids[name] = ids[:limit] if limit else ids
    return case_ids, pool_sizes


def _protocols_for(
    adapter: str, task_name: str, spec: TaskSpec, suite: Suite, pool_size: int | None, skipped: dict[str, str]
) -> tuple[ProtocolSpec, ...]:
    """The protocols ``adapter`` runs on the task: the suite's (or else the task's) of the task's
    dimension that the adapter's capabilities take and the task can serve; why the others are not run
    goes into ``skipped``."""
    meta = plugins.adapter_class(adapter).meta
    # a suite's protocols apply to the tasks of their dimension (2D kinds to images, 3D to volumes)
    wanted = tuple(p for p in suite.protocols or spec.protocols if p.dim == spec.dim)
    supported = supported_protocols(wanted, meta.capabilities)
    unfit = {p.name: unfit_reason(p, task_name, pool_size) for p in supported}
    skipped.update({f"{task_name}/{p}": reason for p, reason in unfit.items() if reason})
    supported = tuple(p for p in supported if not unfit[p.name])
    if not supported:
        skipped[f"{adapter}/{task_name}"] = (
            f"{adapter} supports none of {[p.name for p in wanted]} "
            f"for this {spec.dim}D task (capabilities: {sorted(meta.capabilities.names())})"
        )
    return supported


def _check_prediction_format(asked: str | None, tasks: Mapping[str, TaskSpec]) -> None:
    """``--write-predictions``: a known format, and DICOM-SEG only for tasks read from DICOM series."""
    if asked is None:
        return
    if asked != "auto" and asked not in prediction_writers.FORMATS:
        raise ConfigError("--write-predictions", f"must be auto or one of {prediction_writers.FORMATS}, got '{asked}'")
    if asked == "dicom-seg":
        other = sorted(name for name, spec in tasks.items() if spec.reader != "dicom")
        if other:
            raise ConfigError(
                "--write-predictions",
                f"dicom-seg references the source DICOM series; task(s) {other} are not read from DICOM "
                "(use nifti, npz or auto)",
            )


def make_plan(suite: Suite, tasks: dict[str, TaskSpec], options: RunOptions | None = None) -> RunPlan:
    """The plan of ``suite`` over ``tasks`` (the known tasks by name), run with ``options``."""
    options = options or RunOptions()
    weights, precision, offload, warmup = options.weights, options.precision, options.offload, options.warmup
    data_root = options.data_root
    if weights not in WEIGHT_MODES:
        raise ConfigError("--weights", f"must be one of {WEIGHT_MODES}")
    device = resolve_device(options.device, options.check_device)
    adapter_names = options.adapters or suite.adapters
    for name in adapter_names:
        plugins.adapter_class(name)  # fails early, naming the installed adapters
    missing = [t for t in suite.tasks if t not in tasks]
    if missing:
        raise ConfigError(
            suite.source, f"suite '{suite.name}' names unknown task(s) {missing} (known: {', '.join(sorted(tasks))})"
        )
    limit = options.limit if options.limit is not None else suite.limit
    # None: the suite's; "all" (--save-masks all): every case, stored as None like a suite's default
    asked = options.save_masks
    save_masks = suite.save_masks if asked is None else None if asked == "all" else asked
    if save_masks is not None and (not isinstance(save_masks, int) or save_masks < 0):
        raise ConfigError("--save-masks", f"must be >= 0, got {save_masks}")
    chosen = {name: tasks[name] for name in suite.tasks}
    _check_prediction_format(options.write_predictions, chosen)
    # unknown metric names fail here, before any adapter loads
    metric_keys = {name: unit_key(task_metrics(spec.metrics, spec.source)) for name, spec in chosen.items()}

    skipped: dict[str, str] = {}
    setups: dict[str, AdapterSetup] = {}
    for name in adapter_names:
        try:
            setups[name] = adapter_fingerprint(
                setup_adapter(name, weights, device, precision, suite.seed, dict(options.checkpoint_overrides), offload)
            )
        except checkpoints.CheckpointError as error:
            skipped[name] = str(error)

    case_ids, pool_sizes = _cases(chosen, data_root, limit)
    protocols: dict[str, tuple[ProtocolSpec, ...]] = {}
    units: list[WorkUnit] = []
    task_hashes = {name: task_file_sha256(spec) for name, spec in chosen.items()}
    for name, setup in setups.items():
        for task_name, spec in chosen.items():
            supported = _protocols_for(name, task_name, spec, suite, pool_sizes.get(task_name), skipped)
            if not supported:
                continue
            protocols[f"{name}/{task_name}"] = supported
            keys = (supported, suite.seed, task_hashes[task_name], metric_keys[task_name])
            units += [
                WorkUnit(unit_id(name, setup.fingerprint, spec, case, *keys), name, task_name, case)
                for case in case_ids[task_name]
            ]

    config = {
        "suite": suite.name,
        "adapters": {
            name: {
                "version": plugins.adapter_class(name).meta.version,
                "weights": s.weights,
                "checkpoint_sha256": (s.checkpoint or {}).get("sha256"),
            }
            for name, s in setups.items()
        },
        "tasks": {name: {"version": spec.version, "cases": len(case_ids[name])} for name, spec in chosen.items()},
        "protocols": {key: [p.name for p in value] for key, value in protocols.items()},
        "seed": suite.seed,
        "limit": limit,
        "device": device,
        "precision": precision,
        "weights": weights,
        "warmup": warmup,
        "save_masks": save_masks,
        **({"offload": True} if offload else {}),  # changes memory, not results
        # a run that writes predictions is another run: every unit of it has its files
        **({"write_predictions": options.write_predictions} if options.write_predictions else {}),
    }
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return RunPlan(
        options.run_id or f"{suite.name}-{config_hash[:10]}",
        suite.name,
        config,
        config_hash,
        chosen,
        protocols,
        data_root,
        suite.seed,
        device,
        setups,
        units,
        skipped,
        warmup,
        save_masks,
        options.write_predictions,
    )
