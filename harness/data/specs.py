"""The parsed task: :class:`TaskSpec` and its parts, and the ``[data]`` checks every reader shares.

The task parser (:mod:`segbench.data.taskspec`) makes these from a task file and the readers
(:mod:`segbench.data.readers`) read cases by them; this module imports neither, so the parser can look a
built-in reader's declared ``[data]`` keys up at parse time and the readers can check a plugin reader's
keys when it is made, without an import circle between them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.data.support_sets import SupportSplit
from segbench.errors import ConfigError
from segbench.protocols.prompts import ProtocolSpec
from segbench.strict import Kind, check_keys, check_value, template_fields


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
    metrics: tuple[str, ...] | None = None  # [evaluation] metrics: names in the metric table; None: Dice, NSD, HD95
    spacing: tuple[float, ...] | None = None  # used when the files do not store it
    resize: tuple[int, int] | None = None  # (rows, cols) every 2D case is resized to (readers/resize.py)
    support: SupportSplit | None = None  # support pool / query split of in-context tasks (support.py)
    modality: str = ""
    license: str = ""
    family: str = ""  # the task's group on the leaderboard overview ("" → by kind: 2D, 3D, in-context)
    origin: tuple[str, ...] = ()  # [task] origin: ids of the published datasets its cases come from (tasks/README.md)
    source: Path = field(default=Path("<memory>"))

    @property
    def needs_data_root(self) -> bool:
        return bool(self.dataset)

    def label(self, name: str) -> LabelSpec:
        return next(spec for spec in self.labels if spec.name == name)


# a dataset id of [task] origin and of a model card's trained_on: short, lowercase (tasks/README.md, "Origin")
ORIGIN_ID = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


def parse_origin(value: Any, path: Path | str) -> tuple[str, ...]:
    """``[task] origin``: a list of dataset ids (lowercase letters and digits, joined by ``-`` or ``.``), each
    once; a ConfigError naming the file for anything else."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(path, f"[task] origin must be a list of dataset ids, got {value!r}")
    bad = [item for item in value if not ORIGIN_ID.match(item)]
    if bad:
        raise ConfigError(
            path,
            f"[task] origin ids must be lowercase letters and digits joined by '-' or '.', got {bad} (tasks/README.md)",
        )
    repeated = sorted({item for item in value if value.count(item) > 1})
    if repeated:
        raise ConfigError(path, f"[task] origin names {repeated} more than once")
    return tuple(value)


# [data] keys every reader takes; a reader declares its own in ``Reader.DATA_KEYS`` (readers/base.py)
COMMON_DATA_KEYS: dict[str, Kind] = {"reader": "string", "dataset": "path", "spacing": "any", "resize": "any"}
TEMPLATE_FIELDS = ("id", "dir", "stem", "name")  # what GlobCases.fields gives every template (readers/base.py)


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
