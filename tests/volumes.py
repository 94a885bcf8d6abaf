"""Small crops of the real shared volumes, for tests that must stay fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segbench import plugins
from segbench.data.case import Case
from segbench.data.taskspec import discover_tasks


def read_case(data_root: Path, task: str, index: int = 0) -> Case:
    spec = discover_tasks()[task]
    reader = plugins.readers()[spec.reader](spec, data_root)
    return reader.read(reader.case_ids()[index])


def crop_around(case: Case, label: str, slices: int, margin: int) -> Case:
    """``slices`` slices around the middle of ``label``'s extent, cropped in-plane to its box plus ``margin``."""
    mask = case.labels[label]
    present = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = (present[0] + present[-1]) // 2
    z0 = max(0, middle - slices // 2)
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    y0, y1 = max(0, rows[0] - margin), min(mask.shape[1], rows[-1] + margin + 1)
    x0, x1 = max(0, cols[0] - margin), min(mask.shape[2], cols[-1] + margin + 1)
    window = (slice(z0, z0 + slices), slice(y0, y1), slice(x0, x1))
    return Case(
        f"{case.case_id}[crop]",
        np.ascontiguousarray(case.image[window]),
        {name: np.ascontiguousarray(m[window]) for name, m in case.labels.items()},
        case.spacing,
        case.sources,
    )
