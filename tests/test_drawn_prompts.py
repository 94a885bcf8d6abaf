"""Scribble and lasso prompts (issue 18.1, nnInteractive's drawn interactions): the simulation rule of
:mod:`segbench.protocols.drawn` checked on shapes whose answer is known from their geometry, the kinds' names,
checks and capability gates, the cost they record, and a suite run through the real planner, runner and store
with an adapter that answers with exactly what it was drawn (so each row's Dice is the drawing's own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from segbench.interface import Adapter, AdapterMeta, Capabilities, LoadOptions, Prediction, Prompt
from segbench.protocols.base import Ask, ProtocolInputs, Target
from segbench.protocols.drawn import lasso, scribble
from segbench.protocols.prompts import parse_protocol
from segbench.protocols.volume_prompts import key_slice_box
from segbench.running.plan import supported_protocols

from .conftest import registered_adapters


def bar(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def pieces(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, structure=np.ones((3, 3)))[1])


def test_a_scribble_runs_along_the_middle_of_a_bar_inside_it() -> None:
    mask = bar((40, 100), slice(10, 21), slice(10, 90))  # 11 rows x 80 columns
    stroke = scribble(mask, radius=1)
    assert stroke.any() and not (stroke & ~mask).any()  # inside the target
    assert pieces(stroke) == 1  # one stroke
    rows, cols = np.nonzero(stroke)
    assert cols.max() - cols.min() >= 60  # along the bar's long axis, most of its length
    assert abs(rows.mean() - 15) <= 1.0 and rows.max() - rows.min() <= 4  # through its middle, 3 px wide
    thin = scribble(mask, radius=0)
    assert (thin <= stroke).all() and thin.sum() < stroke.sum()
    assert np.array_equal(scribble(mask, radius=1), stroke)  # a function of the target alone


def test_a_scribble_follows_a_bent_target_and_keeps_to_its_largest_piece() -> None:
    mask = bar((60, 60), slice(5, 50), slice(5, 14)) | bar((60, 60), slice(41, 50), slice(5, 50))  # an L
    mask |= bar((60, 60), slice(20, 24), slice(40, 44))  # and a small separate piece
    stroke = scribble(mask, radius=1)
    assert not (stroke & ~mask).any() and pieces(stroke) == 1
    assert not stroke[20:24, 40:44].any()  # one stroke, on the largest piece
    assert stroke[5:25, 5:14].any() and stroke[41:50, 35:50].any()  # both arms of the L


def test_a_lasso_is_the_convex_outline_around_every_piece() -> None:
    mask = bar((50, 80), slice(10, 20), slice(5, 20)) | bar((50, 80), slice(30, 40), slice(50, 70))
    drawn = lasso(mask)
    assert (drawn >= mask).all()  # encloses the whole target
    assert drawn[25, 35]  # and the gap between its two pieces
    rows, cols = np.nonzero(mask)
    assert not drawn[: rows.min()].any() and not drawn[:, cols.max() + 1 :].any()  # nothing outside its box
    assert not drawn[35, 10] and not drawn[12, 65]  # the corners a box would take but a hull cuts off
    assert pieces(drawn) == 1 and not ndimage.binary_fill_holes(drawn)[~drawn].any()  # one filled region


def test_the_kinds_names_parameters_and_capabilities() -> None:
    names = {
        "scribble": "scribble",
        "lasso": "lasso",
        "key_slice_scribble": "key_scribble_middle",
        "key_slice_lasso": "key_lasso_middle",
    }
    assert {kind: parse_protocol(kind).name for kind in names} == names
    assert parse_protocol({"kind": "scribble", "radius": 2}).name == "scribble_r2"
    assert parse_protocol({"kind": "key_slice_scribble", "slice": "largest", "radius": 3}).name == (
        "key_scribble_largest_r3"
    )
    with pytest.raises(ValueError, match="radius"):
        parse_protocol({"kind": "scribble", "radius": 100})
    with pytest.raises(ValueError, match="slice must be one of"):
        parse_protocol({"kind": "key_slice_lasso", "slice": "first"})
    specs = [parse_protocol(kind) for kind in names]
    boxes_only = supported_protocols(specs, Capabilities(box=True, point=True, volume=True))
    assert boxes_only == ()  # a model that takes no drawing is not asked to
    flat = supported_protocols(specs, Capabilities(scribble=True, lasso=True))
    assert [p.name for p in flat] == ["scribble", "lasso"]  # the harness propagates boxes only
    native = supported_protocols(specs, Capabilities(scribble=True, lasso=True, volume=True))
    assert len(native) == 4


def test_a_key_slice_drawing_is_on_the_key_slice_box_s_slice_and_costs_one_drawing() -> None:
    volume = np.zeros((9, 30, 30), bool)
    volume[2:7, 8:20, 6:25] = True
    volume[4, 8:28, 6:29] = True  # the largest slice
    for rule in ("middle", "largest"):
        box = key_slice_box(volume, rule)
        for kind in ("key_slice_scribble", "key_slice_lasso"):
            spec = parse_protocol({"kind": kind, "slice": rule})
            ask = spec.handler.first(ProtocolInputs(0, "t", "c", {"organ": volume}))
            (prompt,) = ask.prompts or []
            assert prompt.key_slice == box.key_slice and prompt.z_range == box.z_range
            assert list(prompt.slices) == [box.key_slice]
            drawing = prompt.slices[box.key_slice]
            assert drawing.box is None and drawing.points is None
            cost = ask.cost("organ")
            drawn_kind = "scribbles" if "scribble" in kind else "lassos"
            assert cost == {
                "boxes": 0, "clicks": 0, "scribbles": int(drawn_kind == "scribbles"),
                "lassos": int(drawn_kind == "lassos"), "prompted_slices": 1,
            }  # fmt: skip


def test_a_drawing_is_recorded_by_its_size_box_and_digest_not_its_pixels() -> None:
    mask = bar((20, 30), slice(4, 9), slice(3, 25))
    prompt = Prompt(scribbles=scribble(mask, 1)[None], scribble_labels=np.array([1]), lassos=lasso(mask)[None])
    record = prompt.describe()
    (stroke,) = record["scribbles"]
    rows, cols = np.nonzero(prompt.scribbles[0])  # type: ignore[index]
    assert stroke["label"] == 1 and stroke["pixels"] == rows.size
    assert stroke["box"] == [cols.min(), rows.min(), cols.max(), rows.max()]
    assert len(json.dumps(record)) < 400  # a row stays small whatever the image size
    other = Prompt(scribbles=scribble(mask, 2)[None]).describe()["scribbles"][0]
    assert other["sha256"] != stroke["sha256"]
    assert record["lassos"][0]["label"] == 1  # no labels given: include
    assert Prompt(lassos=lasso(mask)[None], lasso_labels=np.array([0])).drawn("lasso")[0][1] is False


class Drawer(Adapter):
    """Answers every target with the union of its include drawings: the row's Dice is the drawing's."""

    meta = AdapterMeta("drawer", "test", "returns what it was drawn", Capabilities(scribble=True, lasso=True))

    def load(self, options: LoadOptions) -> None:
        pass

    def encode(self, image: Any) -> Any:
        return image.shape[:2]

    def predict(self, state: Any, prompts: Any = None, support: Any = None) -> Prediction:
        masks = np.zeros((len(prompts), *state), bool)
        for index, prompt in enumerate(prompts):
            for kind in ("scribble", "lasso"):
                for mask, include in prompt.drawn(kind):
                    masks[index] |= mask & include
        return Prediction(masks)


TASK = """
[task]
name = "phantom-drawn"
description = "Phantoms prompted by scribbles and lassos"

[data]
reader = "phantom"
cases = 2
seed = 3

[labels]
organ = "nonzero"

[prompts]
protocols = ["scribble", "lasso", "box"]
"""


def test_a_suite_runs_scribbles_and_lassos_and_records_their_cost(tmp_path: Path) -> None:
    from segbench.data.suites import Suite
    from segbench.data.taskspec import load_task
    from segbench.running.execute import execute
    from segbench.running.plan import RunOptions, make_plan

    (tmp_path / "phantom-drawn.toml").write_text(TASK)
    with registered_adapters(Drawer):
        spec = load_task(tmp_path / "phantom-drawn.toml")
        suite = Suite("s", "", ("drawer",), ("phantom-drawn",), None, 0, None, tmp_path / "bench.toml")
        options = RunOptions(device="cpu", warmup=False, save_masks=0)
        plan = make_plan(suite, {"phantom-drawn": spec}, options)
        store = execute(plan, tmp_path / "out", progress=False)
    rows = store.read_cases().sort("case_id", "prompt")
    assert set(rows["status"]) == {"ok"} and set(rows["prompt"]) == {"scribble", "lasso"}
    cost = rows.select("prompt", "boxes", "clicks", "scribbles", "lassos", "prompted_slices").unique().sort("prompt")
    assert cost.rows() == [("lasso", 0, 0, 0, 1, 1), ("scribble", 0, 0, 1, 0, 1)]
    by_prompt = {p: part for (p,), part in rows.group_by("prompt")}
    # a lasso holds the whole target (Dice < 1 only by the hull's extra pixels); a scribble a thin line of it
    assert (by_prompt["lasso"]["dice"] > 0.5).all() and (by_prompt["scribble"]["dice"] < 0.5).all()
    assert (by_prompt["lasso"]["pred_area"] >= by_prompt["lasso"]["truth_area"]).all()
    for text in by_prompt["scribble"]["prompt_json"]:
        (given,) = json.loads(text)
        assert set(given) == {"scribbles"} and given["scribbles"][0]["label"] == 1


def test_box_and_drawn_targets_agree_on_the_phantom_truth() -> None:
    """The drawn kinds see the same target the box kinds do: the lasso's box is the truth's tight box."""
    from segbench.data.readers.phantom import phantom

    _, labels = phantom(0, 0)
    for name, truth in labels.items():
        if not truth.any():
            continue
        ask: Ask = parse_protocol("lasso").handler.first(ProtocolInputs(0, "t", "c", {name: truth}))
        (prompt,) = ask.prompts or []
        rows, cols = np.nonzero(prompt.lassos[0])
        truth_rows, truth_cols = np.nonzero(truth)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (
            truth_rows.min(), truth_rows.max(), truth_cols.min(), truth_cols.max(),
        )  # fmt: skip
        assert isinstance(ask.targets[0], Target)
