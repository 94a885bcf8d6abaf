"""``segbench tasks check TASK``: read every case of a task, as a run would, and summarise what came out.

One case at a time (a reader lists its cases from names alone and opens a case's files in ``read``),
so a task of thousands of cases is checked in constant memory. A case that fails to read is counted
and listed with its error (which names the file), never stopping the check, as a failed row never
stops a run. The summary: cases read and failed, each label's presence (cases where it is non-empty)
and empty masks, the spacing range per axis and its unit, the raw intensity range (``Case.raw``, the
values before the intensity policy, where the reader keeps them; else the image the adapters get).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segbench import plugins
from segbench.data.taskspec import TaskSpec
from segbench.errors import DataError


@dataclass
class TaskCheck:
    task: str
    reader: str
    cases: int = 0
    read: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # case id -> error
    present: dict[str, int] = field(default_factory=dict)  # label -> cases where it is non-empty
    empty: dict[str, int] = field(default_factory=dict)  # label -> cases where its mask is empty or absent
    spacing_low: list[float] = field(default_factory=list)
    spacing_high: list[float] = field(default_factory=list)
    units: set[str] = field(default_factory=set)
    intensity: tuple[float, float] | None = None
    dtypes: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, spacing: tuple[float, ...], unit: str, values: np.ndarray) -> None:
        self.units.add(unit)
        if not self.spacing_low:
            self.spacing_low, self.spacing_high = list(spacing), list(spacing)
        self.spacing_low = [min(a, b) for a, b in zip(self.spacing_low, spacing, strict=False)]
        self.spacing_high = [max(a, b) for a, b in zip(self.spacing_high, spacing, strict=False)]
        low, high = float(values.min()), float(values.max())
        self.intensity = (
            (low, high) if self.intensity is None else (min(low, self.intensity[0]), max(high, self.intensity[1]))
        )
        self.dtypes.add(str(values.dtype))

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "reader": self.reader,
            "cases": self.cases,
            "read": self.read,
            "failed": self.failed,
            "labels_present": self.present,
            "empty_masks": self.empty,
            "spacing_min": self.spacing_low,
            "spacing_max": self.spacing_high,
            "unit": sorted(self.units),
            "intensity_range": list(self.intensity) if self.intensity else None,
            "intensity_dtypes": sorted(self.dtypes),
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        out = [
            f"task {self.task} (reader {self.reader}): {self.read} of {self.cases} case(s) read in {self.seconds:.2f} s"
        ]
        for label in self.present:
            out.append(f"  label {label}: in {self.present[label]} case(s), empty in {self.empty.get(label, 0)}")
        if self.spacing_low:
            axes = ", ".join(
                f"{a:g}" if a == b else f"{a:g}-{b:g}" for a, b in zip(self.spacing_low, self.spacing_high, strict=True)
            )
            out.append(f"  spacing: ({axes}) {'/'.join(sorted(self.units))}")
        if self.intensity is not None:
            out.append(
                f"  intensity (raw): {self.intensity[0]:g} to {self.intensity[1]:g} ({', '.join(sorted(self.dtypes))})"
            )
        out += [f"  warning: {message}" for message in self.warnings[:10]]
        if self.failed:
            out.append(f"  {len(self.failed)} case(s) failed:")
            out += [f"    {case_id}: {error}" for case_id, error in list(self.failed.items())[:20]]
        return out


def check_task(spec: TaskSpec, data_root: Path | None) -> TaskCheck:
    """Read every case of ``spec``; a reader that cannot start (a ConfigError) propagates."""
    from segbench.data.readers.resize import ResizedReader

    started = time.perf_counter()
    reader = plugins.readers()[spec.reader](spec, data_root)
    if spec.resize:
        reader = ResizedReader(reader, spec.resize)
    declared = [label.name for label in spec.labels if label.name != "*"]  # "*": every structure a file names
    result = TaskCheck(spec.name, spec.reader, present=dict.fromkeys(declared, 0))
    ids = reader.case_ids()
    result.cases = len(ids)
    for case_id in ids:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                case = reader.read(case_id)
            except DataError as error:
                result.failed[case_id] = str(error)
                continue
        result.warnings += [str(w.message) for w in caught]
        result.read += 1
        for name in declared:
            mask = case.labels.get(name)
            if mask is not None and mask.any():
                result.present[name] = result.present.get(name, 0) + 1
            else:
                result.empty[name] = result.empty.get(name, 0) + 1
        for name in case.labels.keys() - result.present.keys():  # labels a wildcard reader found
            result.present[name] = result.present.get(name, 0) + int(case.labels[name].any())
        result.add(case.spacing, case.unit, case.raw if case.raw is not None else case.image)
    result.seconds = time.perf_counter() - started
    return result
