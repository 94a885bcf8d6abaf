"""Prompt protocols: geometry, seeding, and the CVPR 2025 correction click."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy import ndimage

from segbench.protocols.prompts import (
    Target,
    bounding_box,
    correction_click,
    initial_prompt,
    parse_protocol,
    refine_prompt,
    target_rng,
    targets_for,
)


@pytest.fixture
def mask() -> np.ndarray:
    mask = np.zeros((60, 80), dtype=bool)
    mask[10:31, 20:51] = True
    mask[25:40, 45:60] = True
    return mask


def test_tight_box_is_the_mask_extent(mask: np.ndarray) -> None:
    assert bounding_box(mask).tolist() == [20, 10, 59, 39]


def test_jittered_box_moves_each_side_within_px(mask: np.ndarray) -> None:
    spec = parse_protocol({"kind": "box_jitter", "px": 4})
    tight = bounding_box(mask)
    boxes = [initial_prompt(spec, Target("a", 0, mask), target_rng(0, "case", i)).box for i in range(200)]
    moves = np.abs(np.stack(boxes) - tight)
    assert moves.max() == 4 and moves.min() == 0
    assert len({tuple(b) for b in boxes}) > 50  # really random


def test_center_point_is_the_distance_transform_maximum(mask: np.ndarray) -> None:
    prompt = initial_prompt(parse_protocol("center_point"), Target("a", 0, mask), target_rng(0))
    ((x, y),) = prompt.points
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert mask[int(y), int(x)] and distance[int(y), int(x)] == distance.max()
    assert prompt.point_labels.tolist() == [1]


def test_random_points_are_distinct_positives_inside(mask: np.ndarray) -> None:
    spec = parse_protocol({"kind": "random_points", "k": 5})
    prompt = initial_prompt(spec, Target("a", 0, mask), target_rng(3, "c", "a"))
    assert len({tuple(p) for p in prompt.points}) == 5
    assert all(mask[int(y), int(x)] for x, y in prompt.points)
    again = initial_prompt(spec, Target("a", 0, mask), target_rng(3, "c", "a"))
    other = initial_prompt(spec, Target("a", 0, mask), target_rng(4, "c", "a"))
    assert np.array_equal(prompt.points, again.points) and not np.array_equal(prompt.points, other.points)


def test_correction_click_targets_the_largest_error() -> None:
    gt = np.zeros((50, 50), dtype=bool)
    gt[10:40, 10:40] = True
    pred = gt.copy()
    pred[10:40, 30:40] = False  # a missed 30x10 strip (false negatives)
    pred[45:48, 0:3] = True  # a small false positive
    (row, col), label = correction_click(gt, pred)
    assert label == 1 and 10 <= row < 40 and 30 <= col < 40
    pred = gt | (np.indices(gt.shape)[1] >= 42)  # a large false-positive band
    (row, col), label = correction_click(gt, pred)
    assert label == 0 and col >= 42
    assert correction_click(gt, gt) is None


def test_iterative_prompt_accumulates_clicks(mask: np.ndarray) -> None:
    spec = parse_protocol({"kind": "iterative", "start": "box", "clicks": 2})
    target = Target("a", 0, mask)
    first = initial_prompt(spec, target, target_rng(0))
    second = refine_prompt(first, target, np.zeros_like(mask), feedback="logits")
    assert np.array_equal(second.box, first.box) and second.previous == "logits"
    assert second.points.shape == (1, 2) and second.point_labels.tolist() == [1]
    third = refine_prompt(second, target, mask | (np.indices(mask.shape)[0] > 50), feedback=None)
    assert third.points.shape == (2, 2) and third.point_labels.tolist() == [1, 0]


def test_components_become_instances() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[2:8, 2:8] = True
    mask[20:25, 20:28] = True
    assert len(targets_for({"x": mask}, "components")) == 2
    assert len(targets_for({"x": mask}, "label")) == 1
    assert targets_for({"x": np.zeros_like(mask)}, "label") == []


@pytest.mark.parametrize(
    "bad",
    ["cube", {"kind": "box_jitter", "px": -1}, {"kind": "box", "px": 3}, {"kind": "iterative", "start": "scribble"}],
)
def test_bad_protocols_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_protocol(bad)  # type: ignore[arg-type]


def test_same_seed_gives_every_adapter_the_same_prompts(quick_run) -> None:
    cases = pl.read_parquet(quick_run / "cases.parquet").filter(pl.col("step") == 0)
    per_adapter = {
        adapter: {
            (r["case_id"], r["label"], r["prompt"]): json.loads(r["prompt_json"]) for r in group.iter_rows(named=True)
        }
        for (adapter,), group in cases.group_by("adapter")
    }
    assert len(per_adapter) >= 3
    reference = next(iter(per_adapter.values()))
    for prompts in per_adapter.values():
        shared = set(prompts) & set(reference)
        assert shared and all(prompts[key] == reference[key] for key in shared)
