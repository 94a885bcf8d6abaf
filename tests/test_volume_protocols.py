"""Volume protocols: key slices, boxes on slices, 3D clicks, and how plans and task files take them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segbench.data.suites import Suite
from segbench.data.taskspec import discover_tasks, parse_task
from segbench.errors import ConfigError
from segbench.protocols.prompts import Target, bounding_box, correction_click, parse_protocol
from segbench.protocols.volume_prompts import initial_volume_prompt, key_slice, refine_volume_prompt, slice_extent
from segbench.running.plan import RunOptions, make_plan

from .volumes import crop_around, read_case


@pytest.fixture(scope="module")
def tumour(data_root: Path) -> np.ndarray:
    """A real tumour core, with empty slices above and below it."""
    case = read_case(data_root, "brats")
    return crop_around(case, "tumour_core", slices=80, margin=4).labels["tumour_core"]


@pytest.mark.data
def test_key_slices_follow_the_ground_truth(tumour: np.ndarray) -> None:
    first, last = slice_extent(tumour)
    areas = tumour.sum(axis=(1, 2))
    assert areas[first] > 0 and areas[last] > 0 and not areas[:first].any() and not areas[last + 1 :].any()
    middle = key_slice(tumour, "middle")
    assert middle == (first + last) // 2 and areas[middle] > 0
    assert areas[key_slice(tumour, "largest")] == areas.max()
    # a target that skips its middle slice is prompted on the nearest slice that has it
    holed = tumour.copy()
    holed[middle - 1 : middle + 2] = False
    assert key_slice(holed, "middle") in (middle - 2, middle + 2) and holed[key_slice(holed, "middle")].any()


@pytest.mark.data
def test_key_slice_box_is_the_tight_box_there_with_the_extent(tumour: np.ndarray) -> None:
    prompt = initial_volume_prompt(parse_protocol("key_slice_box"), Target("core", 0, tumour))
    key = key_slice(tumour, "middle")
    assert list(prompt.slices) == [key] and prompt.key_slice == key
    assert prompt.slices[key].box.tolist() == bounding_box(tumour[key]).tolist()
    assert prompt.z_range == slice_extent(tumour)


@pytest.mark.data
@pytest.mark.parametrize("every", [1, 2, 5])
def test_slice_boxes_cover_every_kth_slice_of_the_extent(tumour: np.ndarray, every: int) -> None:
    prompt = initial_volume_prompt(parse_protocol({"kind": "slice_boxes", "every": every}), Target("c", 0, tumour))
    first, last = slice_extent(tumour)
    expected = [z for z in range(first, last + 1, every) if tumour[z].any()]
    assert sorted(prompt.slices) == expected and prompt.key_slice == first
    assert all(prompt.slices[z].box.tolist() == bounding_box(tumour[z]).tolist() for z in expected)


@pytest.mark.data
def test_3d_click_lands_on_its_slice_and_accumulates(tumour: np.ndarray) -> None:
    spec = parse_protocol({"kind": "iterative_3d", "clicks": 2})
    target = Target("core", 0, tumour)
    prompt = initial_volume_prompt(spec, target)
    predicted = np.zeros_like(tumour)
    predicted[prompt.key_slice] = tumour[prompt.key_slice]  # only the key slice found
    (z, y, x), label = correction_click(tumour, predicted)
    refined = refine_volume_prompt(prompt, target, predicted, feedback="state")
    assert label == 1 and refined.previous == "state" and refined.key_slice == prompt.key_slice
    assert refined.slices[z].points.tolist() == [[x, y]] and refined.slices[z].point_labels.tolist() == [1]
    assert refined.slices[prompt.key_slice].box is not None
    again = refine_volume_prompt(refined, target, predicted, None)
    assert sum(len(p.points) for p in again.slices.values() if p.points is not None) == 2
    assert refine_volume_prompt(prompt, target, tumour, None).slices == prompt.slices  # perfect: no click


def test_protocol_names_dimensions_and_needs() -> None:
    cases = {
        "key_slice_box": ("key_box_middle", 1, {"box"}, True),
        '{"kind": "key_slice_box", "slice": "largest"}': ("key_box_largest", 1, {"box"}, True),
        "slice_boxes": ("slice_boxes", 1, {"box"}, False),
        '{"kind": "slice_boxes", "every": 2}': ("slice_boxes_every2", 1, {"box", "volume"}, False),
        "iterative_3d": ("iterative3d_middle_box5", 6, {"box", "point"}, True),
    }
    import json

    for text, (name, steps, needs, propagates) in cases.items():
        spec = parse_protocol(json.loads(text) if text.startswith("{") else text)
        assert (spec.name, spec.steps, set(spec.requires), spec.propagates, spec.dim) == (
            name,
            steps,
            needs,
            propagates,
            3,
        )
    assert parse_protocol("box").dim == 2
    with pytest.raises(ValueError, match="slice must be one of"):
        parse_protocol({"kind": "key_slice_box", "slice": "first"})
    with pytest.raises(ValueError, match="every must be at least 1"):
        parse_protocol({"kind": "slice_boxes", "every": 0})


def test_task_files_reject_protocols_of_the_other_dimension(tmp_path: Path) -> None:
    document = {
        "task": {"name": "v", "dim": 3},
        "data": {"reader": "npz"},
        "labels": {"a": "nonzero"},
        "prompts": {"protocols": ["box"]},
    }
    with pytest.raises(ConfigError, match=r"\['box'\] are not for 3D tasks"):
        parse_task(document, tmp_path / "v.toml")
    del document["prompts"]
    assert [p.name for p in parse_task(document, tmp_path / "v.toml").protocols] == ["slice_boxes", "key_box_middle"]


@pytest.mark.data
def test_plans_run_volumes_and_give_each_task_the_protocols_of_its_dimension(data_root: Path) -> None:
    suite = Suite(
        "mixed",
        "",
        ("litemedsam", "box"),
        ("brats", "wbc"),
        (parse_protocol("box"), parse_protocol("slice_boxes"), parse_protocol({"kind": "slice_boxes", "every": 2})),
        0,
        1,
        Path("mixed.toml"),
    )
    plan = make_plan(suite, discover_tasks(), RunOptions(device="cpu", data_root=data_root))
    assert [p.name for p in plan.protocols_for("litemedsam", "brats")] == ["slice_boxes"]  # every 2 needs volume
    assert [p.name for p in plan.protocols_for("litemedsam", "wbc")] == ["box"]
    assert {u.task for u in plan.units} == {"brats", "wbc"} and len(plan.units) == 4
