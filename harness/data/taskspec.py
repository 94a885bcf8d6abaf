"""Task definitions: TOML data files in ``tasks/`` (and any extra task directories a suite names).

A task file says where the data are (relative to the data root), which reader reads them, how mask
values become labels (``"nonzero"`` for unions such as "whole cell", or a list of values), the pixel
spacing, the intensity policy, the prompt protocols and the version; optionally a ``resize`` and a
``[support]`` split for in-context protocols. See ``tasks/README.md``.
"""

from __future__ import annotations

import importlib.resources
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.data.support_sets import SPLIT_KEYS, SupportSplit, parse_support_split
from segbench.errors import ConfigError
from segbench.protocols.prompts import ProtocolSpec, known_kinds, parse_protocols
from segbench.strict import Kind, check_keys, check_table, check_value, template_fields

BUILTIN_TASK_DIR = Path(str(importlib.resources.files("segbench.tasks")))
INSTANCE_MODES = ("label", "components")


@dataclass(frozen=True)
class LabelSpec:
    """How one label is cut out of the mask data.

    ``values`` is ``None`` for "any non-zero value" (a union) or the tuple of mask values that belong
    to the label. ``file`` is a path template for labels stored in their own mask file.
    """

    name: str
    values: tuple[int, ...] | None
    file: str | None = None


@dataclass(frozen=True)
class IntensitySpec:
    """How raw pixel/voxel values become the uint8 image every adapter receives.

    ``rgb8``: 8-bit images as they are (grey replicated to 3 channels); ``minmax``: scale the range
    to 0-255; ``window``: CT window ``level``/``width``; ``percentile``: clip to the ``low``/``high``
    percentiles (of non-zero values when ``nonzero``) then scale.
    """

    policy: str = "rgb8"
    level: float = 40.0
    width: float = 400.0
    low: float = 0.5
    high: float = 99.5
    nonzero: bool = True


POLICIES = ("rgb8", "minmax", "window", "percentile")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: str
    description: str
    dim: int
    reader: str
    dataset: str  # folder under the data root ("" for in-process tasks such as phantoms)
    data: Mapping[str, Any]
    labels: tuple[LabelSpec, ...]
    intensity: IntensitySpec
    protocols: tuple[ProtocolSpec, ...]
    instances: str = "label"
    nsd_tolerance: float = 2.0
    spacing: tuple[float, ...] | None = None  # used when the files do not store it
    resize: tuple[int, int] | None = None  # (rows, cols) every 2D case is resized to (readers/resize.py)
    support: SupportSplit | None = None  # support pool / query split of in-context tasks (support.py)
    modality: str = ""
    license: str = ""
    family: str = ""  # the task's group on the leaderboard overview ("" → by kind: 2D, 3D, in-context)
    metrics: tuple[str, ...] | None = None  # [evaluation] metrics; None: the default table (Dice, NSD, HD95)
    source: Path = field(default=Path("<memory>"))

    @property
    def needs_data_root(self) -> bool:
        return bool(self.dataset)

    def label(self, name: str) -> LabelSpec:
        return next(spec for spec in self.labels if spec.name == name)


TABLES = ("task", "data", "labels", "intensity", "prompts", "evaluation", "support")
TASK_KEYS: dict[str, Kind] = {
    "name": "string",
    "version": "any",
    "description": "string",
    "modality": "string",
    "license": "string",
    "dim": "integer",
    "family": "string",
}
# [data] keys every reader takes; a reader declares its own in ``Reader.DATA_KEYS`` (readers/base.py)
COMMON_DATA_KEYS: dict[str, Kind] = {"reader": "string", "dataset": "path", "spacing": "any", "resize": "any"}
INTENSITY_KEYS: dict[str, Kind] = {
    "policy": POLICIES,
    "level": "number",
    "width": "number",
    "low": "number",
    "high": "number",
    "nonzero": "boolean",
}
PROMPTS_KEYS: dict[str, Kind] = {"protocols": "any", "instances": INSTANCE_MODES}
EVALUATION_KEYS: dict[str, Kind] = {"nsd_tolerance": "number", "metrics": "any"}
LABEL_KEYS: dict[str, Kind] = {"file": "template", "values": "any"}
TEMPLATE_FIELDS = ("id", "dir", "stem", "name")  # what GlobCases.fields gives every template (readers/base.py)


def _require(table: Mapping[str, Any], key: str, kind: type, path: Path, where: str) -> Any:
    if key not in table:
        raise ConfigError(path, f"[{where}] needs '{key}'")
    value = table[key]
    if not isinstance(value, kind):
        raise ConfigError(path, f"[{where}] '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _table(document: Mapping[str, Any], name: str, path: Path, required: bool = False) -> Mapping[str, Any]:
    value = document.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"missing [{name}] table" if value is None else f"[{name}] must be a table")
    return value


def _parse_label(name: str, value: Any, path: Path) -> LabelSpec:
    file = None
    if isinstance(value, Mapping):
        check_table(value, LABEL_KEYS, path, f"[labels.{name}]")
        file = value.get("file")
        value = value.get("values", "nonzero")
    if value == "nonzero":
        return LabelSpec(name, None, file)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return LabelSpec(name, tuple(value), file)
    raise ConfigError(path, f"[labels] '{name}' must be \"nonzero\", an integer or a list of integers, got {value!r}")


def _parse_intensity(table: Mapping[str, Any], path: Path) -> IntensitySpec:
    check_table(table, INTENSITY_KEYS, path, "[intensity]")
    numbers = {k: float(table[k]) for k in ("level", "width", "low", "high") if k in table}
    return IntensitySpec(policy=table.get("policy", "rgb8"), nonzero=table.get("nonzero", True), **numbers)


def check_protocol_tables(values: list[Any], path: Path | str, where: str = "[prompts]") -> None:
    """Unknown parameters of a protocol table, with a "did you mean" (prompts.parse_protocol checks the rest)."""
    kinds = known_kinds()
    for value in values:
        if isinstance(value, Mapping) and isinstance(value.get("kind"), str) and value["kind"] in kinds:
            check_keys(value, {"kind", *kinds[value["kind"]].defaults}, path, f"{where} protocol '{value['kind']}'")


def check_data(data: Mapping[str, Any], reader_keys: Mapping[str, Kind], path: Path | str, reader: str) -> None:
    """The ``[data]`` table against the keys every reader takes and those ``reader`` declares: unknown
    keys, value kinds, path texts (relative, no ``..``), and template fields that exist."""
    kinds = {**COMMON_DATA_KEYS, **reader_keys}
    check_keys(data, kinds, path, f"[data] of reader '{reader}'")
    for key, kind in kinds.items():
        check_value(data, key, kind, path, "[data]")
    for key, kind in kinds.items():
        if kind == "template" and key in data:
            check_template_fields(data[key], data, path, f"[data] {key}")


def check_template_fields(template: str, data: Mapping[str, Any], path: Path | str, where: str) -> None:
    """A ConfigError when ``template`` uses a field neither GlobCases nor ``case_pattern`` gives."""
    known = set(TEMPLATE_FIELDS)
    pattern = data.get("case_pattern")
    try:
        known |= set(re.compile(pattern).groupindex) if isinstance(pattern, str) else set()
    except re.error as error:
        raise ConfigError(path, f"[data] case_pattern is not a valid regular expression ({error})") from None
    unknown = sorted(set(template_fields(template)) - known)
    if unknown:
        raise ConfigError(path, f"{where} uses unknown field(s) {unknown} (known: {sorted(known)})")


def _builtin_reader_keys(reader: str) -> Mapping[str, Kind] | None:
    """The declared [data] keys of a built-in reader (a plugin reader's are checked when it is made)."""
    from segbench.data.readers import BUILTIN_READERS  # readers import this module

    cls = BUILTIN_READERS.get(reader)
    return None if cls is None else cls.DATA_KEYS


def _parse_support(document: Mapping[str, Any], path: Path) -> SupportSplit | None:
    if "support" not in document:
        return None
    if isinstance(document["support"], Mapping):
        check_keys(document["support"], {*SPLIT_KEYS, "split_seed"}, path, "[support]")
    return parse_support_split(document["support"], path)


def parse_task(document: Mapping[str, Any], path: Path) -> TaskSpec:
    """A task from its TOML document; a ConfigError naming ``path`` and the key for anything unknown
    or of the wrong type (see :mod:`segbench.strict`)."""
    check_keys(document, TABLES, path, "top level", what="table")
    task = _table(document, "task", path, required=True)
    data = _table(document, "data", path, required=True)
    check_table(task, TASK_KEYS, path, "[task]")
    check_value(data, "reader", "string", path, "[data]")
    check_value(data, "dataset", "path", path, "[data]")
    reader_keys = _builtin_reader_keys(data["reader"]) if isinstance(data.get("reader"), str) else None
    if reader_keys is not None:
        check_data(data, reader_keys, path, data["reader"])
    labels_table = document.get("labels")
    if not isinstance(labels_table, Mapping) or not labels_table:
        raise ConfigError(path, "missing [labels] table (at least one label)")
    labels = tuple(_parse_label(str(name), value, path) for name, value in labels_table.items())
    for label in labels:
        if label.file is not None:
            check_template_fields(label.file, data, path, f"[labels.{label.name}] file")
    dim = task.get("dim", 2)
    if dim not in (2, 3) or isinstance(dim, bool):
        raise ConfigError(path, f"[task] dim must be 2 or 3, got {dim!r}")
    version = task.get("version", "1")
    if not isinstance(version, str | int) or isinstance(version, bool):
        raise ConfigError(path, f"[task] version must be a string or an integer, got {version!r}")
    prompts = _table(document, "prompts", path)
    check_table(prompts, PROMPTS_KEYS, path, "[prompts]")
    protocols_raw = prompts.get("protocols", ["box"] if dim == 2 else ["slice_boxes", "key_slice_box"])
    if not isinstance(protocols_raw, list) or not protocols_raw:
        raise ConfigError(path, "[prompts] protocols must be a non-empty list")
    check_protocol_tables(protocols_raw, path)
    try:
        protocols = parse_protocols(protocols_raw)
    except (ValueError, TypeError) as error:
        raise ConfigError(path, f"[prompts] {error}") from None
    instances = prompts.get("instances", "label")
    mismatched = [p.name for p in protocols if p.dim != dim]
    if mismatched:
        raise ConfigError(
            path,
            f"[prompts] protocol(s) {mismatched} are not for {dim}D tasks "
            f"(volumes take {', '.join(kind for kind, cls in known_kinds().items() if cls.dim == 3)})",
        )
    spacing = data.get("spacing")
    if spacing is not None and (
        not isinstance(spacing, list)
        or len(spacing) != dim
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v) for v in spacing
        )
    ):
        raise ConfigError(path, f"[data] spacing must be {dim} positive numbers, got {spacing!r}")
    resize = data.get("resize")
    if resize is not None and (
        dim != 2
        or not isinstance(resize, list)
        or len(resize) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize)
    ):
        raise ConfigError(path, f"[data] resize must be two positive integers [rows, cols] (2D only), got {resize!r}")
    evaluation = _table(document, "evaluation", path)
    check_table(evaluation, EVALUATION_KEYS, path, "[evaluation]")
    tolerance = evaluation.get("nsd_tolerance", 2.0)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(path, f"[evaluation] nsd_tolerance must be a number >= 0, got {tolerance!r}")
    metrics = evaluation.get("metrics")  # names are checked against the metric registry when a run is planned
    if metrics is not None and (
        not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics)
    ):
        raise ConfigError(path, f"[evaluation] metrics must be a list of metric names, got {metrics!r}")
    return TaskSpec(
        name=_require(task, "name", str, path, "task"),
        version=str(version),
        description=task.get("description", ""),
        dim=dim,
        reader=_require(data, "reader", str, path, "data"),
        dataset=data.get("dataset", ""),
        data=data,
        labels=labels,
        intensity=_parse_intensity(_table(document, "intensity", path), path),
        protocols=protocols,
        instances=instances,
        nsd_tolerance=float(tolerance),
        spacing=tuple(float(v) for v in spacing) if spacing else None,
        resize=(resize[0], resize[1]) if resize else None,
        support=_parse_support(document, path),
        modality=task.get("modality", ""),
        license=task.get("license", ""),
        family=task.get("family", ""),
        metrics=tuple(metrics) if metrics is not None else None,
        source=path,
    )


def load_task(path: Path) -> TaskSpec:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(path, f"cannot read: {error.strerror}") from None
    return parse_task(document, path)


def discover_tasks(extra_dirs: tuple[Path, ...] = ()) -> dict[str, TaskSpec]:
    """All task files of the built-in task directory and ``extra_dirs`` (later directories win)."""
    tasks: dict[str, TaskSpec] = {}
    for directory in (BUILTIN_TASK_DIR, *extra_dirs):
        if not directory.is_dir():
            raise ConfigError(directory, "task directory does not exist")
        for path in sorted(directory.glob("*.toml")):
            spec = load_task(path)
            tasks[spec.name] = spec
    return tasks
