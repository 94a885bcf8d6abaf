"""Task definitions: TOML data files in ``tasks/`` (and any extra task directories a suite names).

A task file says where the data are (relative to the data root), which reader reads them, how mask
values become labels (``"nonzero"`` for unions such as "whole cell", or a list of values), the pixel
spacing, the intensity policy, the prompt protocols and the version; optionally a ``resize`` and a
``[support]`` split for in-context protocols. See ``tasks/README.md``.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.errors import ConfigError
from segbench.prompts import ProtocolSpec, parse_protocols
from segbench.support import SupportSplit, parse_support_split

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
    source: Path = field(default=Path("<memory>"))

    @property
    def needs_data_root(self) -> bool:
        return bool(self.dataset)

    def label(self, name: str) -> LabelSpec:
        return next(spec for spec in self.labels if spec.name == name)


def _require(table: Mapping[str, Any], key: str, kind: type, path: Path, where: str) -> Any:
    if key not in table:
        raise ConfigError(path, f"[{where}] needs '{key}'")
    value = table[key]
    if not isinstance(value, kind):
        raise ConfigError(path, f"[{where}] '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _parse_label(name: str, value: Any, path: Path) -> LabelSpec:
    file = None
    if isinstance(value, Mapping):
        file = value.get("file")
        if file is not None and not isinstance(file, str):
            raise ConfigError(path, f"[labels.{name}] 'file' must be a path template string")
        value = value.get("values", "nonzero")
    if value == "nonzero":
        return LabelSpec(name, None, file)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return LabelSpec(name, tuple(value), file)
    raise ConfigError(path, f"[labels] '{name}' must be \"nonzero\", an integer or a list of integers, got {value!r}")


def _parse_intensity(table: Mapping[str, Any], path: Path) -> IntensitySpec:
    policy = table.get("policy", "rgb8")
    if policy not in POLICIES:
        raise ConfigError(path, f"[intensity] policy must be one of {POLICIES}, got {policy!r}")
    numbers = {k: float(table[k]) for k in ("level", "width", "low", "high") if k in table}
    unknown = set(table) - {"policy", "nonzero", *numbers}
    if unknown:
        raise ConfigError(path, f"[intensity] unknown key(s) {sorted(unknown)}")
    return IntensitySpec(policy=policy, nonzero=bool(table.get("nonzero", True)), **numbers)


def parse_task(document: Mapping[str, Any], path: Path) -> TaskSpec:
    task = document.get("task")
    if not isinstance(task, Mapping):
        raise ConfigError(path, "missing [task] table")
    data = document.get("data")
    if not isinstance(data, Mapping):
        raise ConfigError(path, "missing [data] table")
    labels_table = document.get("labels")
    if not isinstance(labels_table, Mapping) or not labels_table:
        raise ConfigError(path, "missing [labels] table (at least one label)")
    dim = task.get("dim", 2)
    if dim not in (2, 3):
        raise ConfigError(path, f"[task] dim must be 2 or 3, got {dim!r}")
    prompts = document.get("prompts", {})
    protocols_raw = prompts.get("protocols", ["box"] if dim == 2 else ["slice_boxes", "key_slice_box"])
    if not isinstance(protocols_raw, list) or not protocols_raw:
        raise ConfigError(path, "[prompts] protocols must be a non-empty list")
    try:
        protocols = parse_protocols(protocols_raw)
    except ValueError as error:
        raise ConfigError(path, f"[prompts] {error}") from None
    instances = prompts.get("instances", "label")
    if instances not in INSTANCE_MODES:
        raise ConfigError(path, f"[prompts] instances must be one of {INSTANCE_MODES}, got {instances!r}")
    mismatched = [p.name for p in protocols if p.dim != dim]
    if mismatched:
        raise ConfigError(path, f"[prompts] protocol(s) {mismatched} are not for {dim}D tasks "
                                "(volumes take key_slice_box, slice_boxes, iterative_3d)")
    spacing = data.get("spacing")
    if spacing is not None and (not isinstance(spacing, list) or len(spacing) != dim
                                or not all(isinstance(v, int | float) and v > 0 for v in spacing)):
        raise ConfigError(path, f"[data] spacing must be {dim} positive numbers, got {spacing!r}")
    resize = data.get("resize")
    if resize is not None and (dim != 2 or not isinstance(resize, list) or len(resize) != 2
                               or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize)):
        raise ConfigError(path, f"[data] resize must be two positive integers [rows, cols] (2D only), got {resize!r}")
    evaluation = document.get("evaluation", {})
    tolerance = evaluation.get("nsd_tolerance", 2.0)
    if not isinstance(tolerance, int | float) or tolerance < 0:
        raise ConfigError(path, f"[evaluation] nsd_tolerance must be a number >= 0, got {tolerance!r}")
    return TaskSpec(
        name=_require(task, "name", str, path, "task"),
        version=str(task.get("version", "1")),
        description=str(task.get("description", "")),
        dim=dim,
        reader=_require(data, "reader", str, path, "data"),
        dataset=str(data.get("dataset", "")),
        data=data,
        labels=tuple(_parse_label(name, value, path) for name, value in labels_table.items()),
        intensity=_parse_intensity(document.get("intensity", {}), path),
        protocols=protocols,
        instances=instances,
        nsd_tolerance=float(tolerance),
        spacing=tuple(float(v) for v in spacing) if spacing else None,
        resize=(resize[0], resize[1]) if resize else None,
        support=parse_support_split(document["support"], path) if "support" in document else None,
        modality=str(task.get("modality", "")),
        license=str(task.get("license", "")),
        family=str(task.get("family", "")),
        source=path,
    )


def load_task(path: Path) -> TaskSpec:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
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
