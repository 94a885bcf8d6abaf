"""Reading one case of each file format through its task (decode, intensity policy, labels).

Run: python -m pytest tests/benchmarks/test_bench_readers.py --benchmark-only
"""

from __future__ import annotations

import pytest

from segbench import plugins
from segbench.data.taskspec import discover_tasks

# one task per reader/format: BMP+PNG, JPEG, TIFF (tifffile), GIF (DRIVE masks), JSON index, NIfTI, HDF5
TASKS = ["wbc", "kvasir", "cvc", "drive", "ct-slices", "brats", "la-heart"]


@pytest.mark.parametrize("task", TASKS)
def test_read_case(benchmark, task: str, data_root) -> None:  # type: ignore[no-untyped-def]
    spec = discover_tasks()[task]
    reader = plugins.readers()[spec.reader](spec, data_root)
    case_id = reader.case_ids()[0]
    benchmark.group = "read one case"
    case = benchmark(reader.read, case_id)
    assert case.labels
