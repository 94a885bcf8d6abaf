"""`segbench tasks check` on a generated nnU-Net raw dataset of 1,000 small cases (issue 17 item 5).

Readers list cases from file names alone and read one case at a time, so listing a big task is
instant and checking it costs the reading of its files. The dataset (1,000 cases, one channel,
32 x 32 x 8 voxels, .nii.gz) is generated once into a temporary folder; the benchmark times
``tasks check`` in process (the listing alone is timed too, and printed).
Run: python -m pytest tests/benchmarks/test_bench_tasks_check.py --benchmark-only -s
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest

from segbench import plugins
from segbench.data.task_check import check_task
from segbench.data.taskspec import parse_task

CASES = 1000
TASK = {
    "task": {"name": "nn1000", "dim": 3},
    "data": {"reader": "nnunet_raw", "dataset": "nn1000"},
    "intensity": {"policy": "percentile"},
    "labels": {"organ": [1]},
    "prompts": {"protocols": ["slice_boxes"]},
}


def generate(root: Path, cases: int = CASES) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "nn1000"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    label = np.zeros((32, 32, 8), np.uint8)
    label[8:24, 10:22, 2:6] = 1
    for index in range(cases):
        image = (rng.normal(100, 10, label.shape) + 100 * label).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(image, np.eye(4)), folder / "imagesTr" / f"c{index:04d}_0000.nii.gz")
        nibabel.save(nibabel.Nifti1Image(label, np.eye(4)), folder / "labelsTr" / f"c{index:04d}.nii.gz")
    (folder / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"})
    )
    return root


@pytest.mark.benchmark(group="tasks-check")
def test_tasks_check_1000_cases(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = generate(tmp_path)
    spec = parse_task(TASK, tmp_path / "nn1000.toml")
    started = time.perf_counter()
    listed = plugins.readers()["nnunet_raw"](spec, root).case_ids()
    print(f"\nlisting {len(listed)} cases: {time.perf_counter() - started:.3f} s")
    result = benchmark.pedantic(check_task, args=(spec, root), rounds=1, iterations=1)
    print(f"tasks check: {result.read} of {result.cases} cases in {result.seconds:.2f} s")
    assert result.read == result.cases == CASES and result.present == {"organ": CASES}
