"""Replaying a challenge file's own prompts (protocol kinds ``given`` / ``given_3d``, issue 17).

The CVPR files are generated here (tests/formats_data.py) and their boxes then moved off the tight box
of the ground truth, so a protocol that drew its own box instead of the file's would fail. The expected
masks are the file's boxes filled, computed here from the files' numbers; the clicks expected are read
from the files with numpy, in their ``clicks_order``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from segbench import cli, plugins
from segbench.data.given_prompts import given_prompts
from segbench.data.layouts import init_task
from segbench.data.taskspec import load_task
from segbench.interface import Adapter, AdapterMeta, Capabilities, LoadOptions, Prediction, Prompt, VolumePrompt
from segbench.protocols.base import ProtocolInputs
from segbench.protocols.challenge_kinds import ChallengeVolumePrompt
from segbench.protocols.prompts import parse_protocol
from segbench.running.session import ImageSession
from segbench.running.volume_runner import VolumeSession

from . import formats_data as fd


def filled(box: Sequence[float], shape: tuple[int, ...]) -> np.ndarray:
    """A box (x0, y0, x1, y1, inclusive) filled, independently of the adapters' code."""
    out = np.zeros(shape, bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    out[y0 : y1 + 1, x0 : x1 + 1] = True
    return out


def rewrite(path: Path, **changes: Any) -> None:
    with np.load(path, allow_pickle=True) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays.update(changes)
    np.savez_compressed(path, **arrays)


def task_of(folder: Path, data: Path, name: str, tasks: Path) -> Path:
    text = init_task(folder, data, name).replace("allow_pickle = false", "allow_pickle = true")
    text = text.replace('foreground = "nonzero"\n', "")  # the user's review: a union is no challenge object
    tasks.mkdir(exist_ok=True)
    (tasks / f"{name}.toml").write_text(text)
    return tasks / f"{name}.toml"


def read(task: Path, data: Path, case_id: str):  # type: ignore[no-untyped-def]
    spec = load_task(task)
    case = plugins.readers()[spec.reader](spec, data).read(case_id)
    values = {label.name: label.values for label in spec.labels}
    return spec, case, ProtocolInputs(0, spec.name, case_id, case.labels, given=lambda: given_prompts(case, values))


def test_the_file_s_2d_box_is_what_the_adapter_gets_and_a_missing_one_fails_its_label_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fd.cvpr_npz(data / "cv", dim=2, year=2024)
    with np.load(data / "cv" / "case0.npz") as npz:
        boxes = npz["boxes"].copy()
    boxes[0] += np.array([-2, 1, 3, -1])  # the file's box of label_1 is not the tight box
    rewrite(data / "cv" / "case0.npz", boxes=boxes)
    with np.load(data / "cv" / "case1.npz") as npz:
        rewrite(data / "cv" / "case1.npz", boxes=npz["boxes"][:1])  # no box for label_2 in case1
    task = task_of(data / "cv", data, "cv", tmp_path / "tasks")
    assert [p.name for p in load_task(task).protocols] == ["box", "given"]  # tasks init suggests the replay
    (tmp_path / "bench.toml").write_text(
        'task_dirs = ["tasks"]\n[suites.g]\nadapters = ["box"]\ntasks = ["cv"]\nprotocols = ["given"]\n'
    )
    args = ["run", "--config", str(tmp_path / "bench.toml"), "--suite", "g", "--data-root", str(data)]
    args += ["--out", str(tmp_path / "out"), "--run-id", "g", "--no-progress", "--no-warmup"]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main(args)
    assert status == 0, err.getvalue()
    rows = pl.read_parquet(tmp_path / "out" / "g" / "cases.parquet").sort("case_id", "label")
    assert rows.select("case_id", "label", "status").rows() == [
        ("case0", "label_1", "ok"),
        ("case0", "label_2", "ok"),
        ("case1", "label_1", "ok"),
        ("case1", "label_2", "failed"),
    ]
    assert set(rows["prompt"]) == {"given"}  # the row says the prompts were the file's
    failed = rows.filter(pl.col("status") == "failed")["error"][0]
    assert "case1.npz" in failed and "no given box for label label_2" in failed
    ok = rows.filter(pl.col("status") == "ok")
    assert ok.select("boxes", "clicks", "prompted_slices").unique().rows() == [(1, 0, 1)]
    for case_id, label, given in ok.select("case_id", "label", "prompt_json").rows():
        with np.load(data / "cv" / f"{case_id}.npz") as npz:
            box = npz["boxes"][int(label[-1]) - 1]
        assert json.loads(given) == [{"box": [float(v) for v in box]}]
    _, case, inputs = read(task, data, "case0")
    run = ImageSession(plugins.adapter_class("box")(), case.image, "cpu").run(parse_protocol("given"), inputs)
    mask = run.steps[0].by_label["label_1"]
    with np.load(data / "cv" / "case0.npz") as npz:
        truth, box = npz["gts"] == 1, npz["boxes"][0]
    rows_, cols = np.nonzero(truth)
    tight = filled([cols.min(), rows_.min(), cols.max(), rows_.max()], truth.shape)
    assert np.array_equal(mask, filled(box, truth.shape)) and not np.array_equal(mask, tight)


@pytest.mark.parametrize("year", [2024, 2025])
def test_the_3d_box_step_uses_the_file_s_z_range(tmp_path: Path, year: int) -> None:
    data = tmp_path / "data"
    fd.cvpr_npz(data / "cv", dim=3, year=year)
    with np.load(data / "cv" / "case0.npz", allow_pickle=True) as npz:
        boxes, truth = npz["boxes"].copy(), npz["gts"] == 1
    z = np.flatnonzero(truth.any(axis=(1, 2)))
    low, high, mid = int(z[0]) + 1, int(z[-1]) - 1, int(z[0] + z[-1]) // 2  # narrower than the truth's extent
    if year == 2024:
        boxes[0][2], boxes[0][5] = low, high
        boxes[0][0] += 2  # x_min moved in
        box2d = [boxes[0][0], boxes[0][1], boxes[0][3], boxes[0][4]]
    else:
        boxes[0] = {**boxes[0], "z_min": low, "z_max": high, "z_mid": mid, "z_mid_x_min": boxes[0]["z_mid_x_min"] + 2}
        box2d = [boxes[0][key] for key in ("z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")]
    rewrite(data / "cv" / "case0.npz", boxes=boxes)
    task = task_of(data / "cv", data, "cv", tmp_path / "tasks")
    assert "given_3d" in [p.name for p in load_task(task).protocols]
    _, case, inputs = read(task, data, "case0")
    session = VolumeSession(plugins.adapter_class("box")(), case.image, "cpu")
    mask = session.run(parse_protocol("given_3d"), inputs).steps[0].by_label["label_1"]
    present = np.flatnonzero(mask.any(axis=(1, 2)))
    assert (present.min(), present.max()) == (low, high) and (z[0], z[-1]) != (low, high)
    assert np.array_equal(mask[mid], filled(box2d, truth.shape[1:]))


class Recorder(Adapter):
    """A volume model that records the prompts it is given and answers with nothing."""

    meta = AdapterMeta(
        name="recorder",
        family="test",
        description="records",
        capabilities=Capabilities(box=True, point=True, volume=True),
    )

    def __init__(self) -> None:
        self.asked: list[list[VolumePrompt]] = []

    def load(self, options: LoadOptions) -> None: ...

    def encode(self, image: np.ndarray) -> Any:
        return image.shape

    def predict(self, state: Any, prompts: Sequence[Prompt] | None = None, support: Any = None) -> Prediction:
        raise NotImplementedError

    def encode_volume(self, volume: np.ndarray) -> Any:
        return volume.shape

    def predict_volume(self, state: Any, prompts: Sequence[VolumePrompt]) -> Prediction:
        self.asked.append(list(prompts))
        return Prediction(np.zeros((len(prompts), *state), bool))


def test_the_clicks_variant_replays_the_file_s_clicks_in_their_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fd.cvpr_npz(data / "cv", dim=3, year=2025)
    with np.load(data / "cv" / "case0.npz", allow_pickle=True) as npz:
        truth = npz["gts"]
    inside = [tuple(int(v) for v in p) for p in np.argwhere(truth == 1)[[0, 5, 40]]]
    outside = [tuple(int(v) for v in p) for p in np.argwhere(truth == 0)[[3, 7]]]
    clicks = [{"fg": [list(p) for p in inside], "bg": [list(p) for p in outside]}, {"fg": [], "bg": []}]
    order = [["fg", "bg", None, "fg", "bg", "fg"], [None]]  # None: the challenge placed no click there
    rewrite(
        data / "cv" / "case0.npz", clicks=np.asarray(clicks, dtype=object), clicks_order=np.asarray(order, dtype=object)
    )
    task = task_of(data / "cv", data, "cv", tmp_path / "tasks")
    _, case, inputs = read(task, data, "case0")
    recorder = Recorder()
    run = VolumeSession(recorder, case.image, "cpu").run(parse_protocol({"kind": "given_3d", "clicks": 5}), inputs)
    assert run.protocol.name == "given_3d_clicks5" and len(recorder.asked) == 6
    expected = [(inside[0], 1), (outside[0], 0), (inside[1], 1), (outside[1], 0)]  # the file's, in clicks_order
    counts = [0, 1, 2, 2, 3, 4]  # clicks given by step: step 3 adds none (None), step 5 is past the fifth entry
    for step, (asked, count) in enumerate(zip(recorder.asked, counts, strict=True)):
        first = asked[0]
        assert isinstance(first, ChallengeVolumePrompt) and first.clicks == tuple(expected[:count]), step
        points = sorted(
            (z, int(y), int(x), int(lab))
            for z, p in first.slices.items()
            if p.points is not None
            for (x, y), lab in zip(p.points, p.point_labels, strict=True)
        )
        assert points == sorted((*index, label) for index, label in expected[:count])
        assert asked[1].clicks == ()  # label_2's file records no click
    assert [step.ask.cost("label_1")["clicks"] for step in run.steps] == counts


class Recorder2D(Recorder):
    """An image model that records the prompts it is given and answers with nothing."""

    meta = AdapterMeta(
        name="recorder2d", family="test", description="records", capabilities=Capabilities(box=True, point=True)
    )

    def predict(self, state: Any, prompts: Sequence[Prompt] | None = None, support: Any = None) -> Prediction:
        self.asked.append(list(prompts or []))  # type: ignore[arg-type]
        return Prediction(np.zeros((len(prompts or []), *state[:2]), bool))


def test_a_2d_click_is_the_file_s_row_col_as_an_x_y_point(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fd.cvpr_npz(data / "cv", dim=2, year=2025)
    with np.load(data / "cv" / "case0.npz", allow_pickle=True) as npz:
        row, col = (int(v) for v in npz["clicks"][0]["fg"][0])
    assert row != col  # a swapped (x, y) would show
    rewrite(data / "cv" / "case0.npz", clicks_order=np.asarray([["fg"], [None]], dtype=object))
    task = task_of(data / "cv", data, "cv", tmp_path / "tasks")
    _, case, inputs = read(task, data, "case0")
    recorder = Recorder2D()
    ImageSession(recorder, case.image, "cpu").run(parse_protocol({"kind": "given", "clicks": 1}), inputs)
    first, second = recorder.asked
    assert first[0].points is None and first[0].box is not None
    assert second[0].points.tolist() == [[col, row]] and second[0].point_labels.tolist() == [1]
    assert np.array_equal(second[0].box, first[0].box) and len(second[1].points) == 0  # label_2: no click recorded
