"""segbench's named challenge protocols against the official scripts' own clicks and scores (issue 16 item 2).

Fixtures (tests/fixtures/official/, recorded by helper X; provenance inside each file, checked below):
* cvpr25_iter_eval.json -- repository JunMa11/CVPR-MedSegFMCompetition, commit
  748e862d162e3e3ee8197bd4085b19bbbe0bb8a0, CVPR25_iter_eval.py (sample_coord, compute_edt, the click loop)
  with SurfaceDice.py;
* cvpr25_get_boxes.json -- the same repository and commit, get_boxes.py (mask3D_to_bbox, mask2D_to_bbox:
  the challenge's 3D boxes with their random shift), run by helper P with the script's seed 2025;
* cvpr24_compute_metrics.json -- repository bowang-lab/MedSAM, branch LiteMedSAM, commit
  b0fab476e54e631dd412b25e0db9fdf2a2b0f54c, evaluation/compute_metrics.py with evaluation/SurfaceDice.py;
* microsam_iterative_prompts.json -- repository computational-cell-analytics/micro-sam, commit
  3acdcd72958395d51c86da1414770b603a781173, micro_sam/prompt_generators.py IterativePromptGenerator.
Command (each file's ``source.command``): a scratch script outside the project compiled the named official
functions (ast) at those commits, replaced the docker call (the model) by a stand-in model -- the ground
truth shifted and eroded/dilated, then every click sets its class to the ground truth within 3 voxels --
and wrote the clicks and scores; numpy 2.4.6, scipy 1.17.1, connected-components-3d 4.1.1.

Here segbench's registered kinds (``cvpr25``, ``microsam``; found through the plugin registry) are driven
by the same stand-in model, step by step: each step's clicks come from the kind's ``refine`` on the
previous prediction and must equal the recorded ones (coordinates, sign, order); the stand-in model then
applies them, and the ``cvpr25``/``cvpr24`` scores (:mod:`segbench.measuring.challenge`) must equal the
recorded ones to 1e-6. The micro-sam fixture seeds its legacy generator with ``np.random.seed(seed)``;
the test gives the kind that seed through :meth:`MicroSam.random_state` (segbench's own runs key it by
case), everything else is the kind's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segbench import plugins
from segbench.measuring import challenge
from segbench.protocols.base import ProtocolInputs
from segbench.protocols.challenge_kinds import ChallengeVolumePrompt, Cvpr25, MicroSam, cvpr25_click
from segbench.protocols.prompts import parse_protocol

from .conftest import run_cli
from .test_challenge_scores import brats_label, ct_labels, fix, initial, la_label, load


def test_the_fixtures_name_their_provenance() -> None:
    expected = {
        "cvpr25_iter_eval.json": ("JunMa11/CVPR-MedSegFMCompetition", "748e862d162e3e3ee8197bd4085b19bbbe0bb8a0"),
        "cvpr25_get_boxes.json": ("JunMa11/CVPR-MedSegFMCompetition", "748e862d162e3e3ee8197bd4085b19bbbe0bb8a0"),
        "cvpr24_compute_metrics.json": ("bowang-lab/MedSAM", "b0fab476e54e631dd412b25e0db9fdf2a2b0f54c"),
        "microsam_iterative_prompts.json": (
            "computational-cell-analytics/micro-sam",
            "3acdcd72958395d51c86da1414770b603a781173",
        ),
    }
    for name, (repository, commit) in expected.items():
        source = load(name)["source"]
        assert (source["repository"], source["commit"]) == (repository, commit) and source["command"]


def test_the_challenge_kinds_are_registered_under_stable_names() -> None:
    kinds = plugins.protocols()
    assert {"cvpr25", "cvpr24", "cvpr24_3d", "microsam"} <= set(kinds)
    names = [
        parse_protocol(value).name
        for value in (
            {"kind": "cvpr25"},
            {"kind": "cvpr25", "start": "none"},
            {"kind": "cvpr24"},
            {"kind": "microsam"},
            {"kind": "microsam", "start": "point"},
            {"kind": "microsam", "logits": "none"},
        )
    ]
    assert names == ["cvpr25", "cvpr25_nobox", "cvpr24", "microsam_box8", "microsam_point8", "microsam_box8_nologits"]
    assert parse_protocol({"kind": "cvpr25"}).steps == 6 and parse_protocol({"kind": "microsam"}).steps == 8
    with pytest.raises(ValueError, match="start"):
        parse_protocol({"kind": "cvpr25", "start": "point"})


@pytest.mark.parametrize("index", [0, 1, 2])
def test_cvpr25_clicks_and_scores_equal_the_official_script(data_root: Path, index: int) -> None:
    case = load("cvpr25_iter_eval.json")["cases"][index]
    gt = brats_label(data_root) if case["case"].startswith("brats") else la_label(data_root)
    classes = challenge.cvpr25_classes(gt)
    assert classes == case["classes"]
    kind = plugins.protocols()["cvpr25"]()
    inputs = ProtocolInputs(seed=0, task="t", case_id=case["case"], labels={str(c): gt == c for c in classes})
    ask = kind.first(inputs)
    assert [t.label for t in ask.targets] == [str(c) for c in classes]
    model = case["stand_in_model"]
    pred = initial(gt, model["initial"]["offset"], model["initial"]["erode"])
    spacing = tuple(case["spacing"])
    dscs, nsds = [], []
    for number, step in enumerate(case["steps"]):
        if number:
            before = [len(p.clicks) for p in ask.prompts]
            ask = kind.refine(ask, np.stack([pred == c for c in classes]), [None] * ask.count)
            clicks = []
            for cls, prompt, old in zip(classes, ask.prompts, before, strict=True):
                assert isinstance(prompt, ChallengeVolumePrompt)
                new = prompt.clicks[old:]
                assert len(new) <= 1
                clicks += [{"class": cls, "sign": "fg" if label else "bg", "coordinate": list(at)} for at, label in new]
            assert clicks == [c for c in step["clicks"] if c["coordinate"] is not None]
            for click in clicks:
                pred = fix(pred, gt, click["class"], click["coordinate"], model["click_fix_radius_voxels"])
        dsc, nsd = challenge.multi_class_scores(gt, pred, spacing, classes)
        assert (dsc, nsd) == pytest.approx((step["dsc"], step["nsd"]), abs=1e-6)
        dscs.append(dsc)
        nsds.append(nsd)
    # every class's clicks, in order, as the script's clicks and clicks_order keys hold them
    for cls_index, prompt in enumerate(ask.prompts):
        signs = ["fg" if label else "bg" for _, label in prompt.clicks]
        assert signs == case["clicks_order"][cls_index]
        for sign in ("fg", "bg"):
            recorded = case["clicks"][cls_index][sign]
            assert [list(at) for at, label in prompt.clicks if (label == 1) == (sign == "fg")] == recorded
        # the clicks are the points the adapter is given, (x, y) on their slices
        for (z, y, x), _label in prompt.clicks:
            on_slice = prompt.slices[z]
            assert [float(x), float(y)] in on_slice.points.tolist()
    assert challenge.click_auc(dscs) == pytest.approx(case["DSC_AUC"], abs=1e-6)
    assert challenge.click_auc(nsds) == pytest.approx(case["NSD_AUC"], abs=1e-6)
    assert (dscs[-1], nsds[-1]) == pytest.approx((case["DSC_Final"], case["NSD_Final"]), abs=1e-6)


class SeededCvpr25(Cvpr25):
    """The registered cvpr25 kind with ``get_boxes.py``'s ``np.random.seed(2025)``."""

    def random_state(self, inputs: ProtocolInputs) -> np.random.RandomState:
        return np.random.RandomState(2025)


@pytest.mark.parametrize("index", [0, 1])
def test_cvpr25_boxes_equal_the_official_get_boxes(data_root: Path, index: int) -> None:
    """The middle occupied slice (brats class 3 skips slices: the middle of its extent is not it), the
    tight box grown by the drawn shift scaled to the slice, the unshifted extent."""
    case = load("cvpr25_get_boxes.json")["cases"][index]
    gt = brats_label(data_root) if case["case"].startswith("brats") else la_label(data_root)
    assert plugins.protocols()["cvpr25"] is Cvpr25
    labels = {str(c): gt == c for c in case["classes"]}
    ask = SeededCvpr25().first(ProtocolInputs(seed=0, task="t", case_id=case["case"], labels=labels))
    given = []
    for prompt in ask.prompts:
        ((z, on_slice),) = prompt.slices.items()
        x0, y0, x1, y1 = (int(v) for v in on_slice.box)
        assert on_slice.points is None and prompt.key_slice == z
        given.append(
            {"z_min": prompt.z_range[0], "z_max": prompt.z_range[1], "z_mid": z}
            | {"z_mid_x_min": x0, "z_mid_y_min": y0, "z_mid_x_max": x1, "z_mid_y_max": y1}
        )
    assert given == case["boxes"]
    assert any(shift for shift in case["bbox_shift"])  # the fixture exercises the shift


def test_cvpr25_box_shifts_are_keyed_by_case_not_by_adapter() -> None:
    truth = np.zeros((5, 300, 300), bool)
    truth[1:4, 100:200, 100:200] = True
    kind = parse_protocol({"kind": "cvpr25"}).handler
    boxes = {
        case: [
            p.slices[2].box.tolist()
            for _ in range(2)
            for p in kind.first(ProtocolInputs(0, "t", case, {"a": truth})).prompts
        ]
        for case in ("c0", "c1", "c2", "c3", "c4", "c5")
    }
    for box in boxes.values():
        assert box[0] == box[1]  # the same case draws the same shift
        shift = 100 - box[0][0]
        assert 0 <= shift <= int(5 * 300 / 256) and box[0] == [100 - shift, 100 - shift, 199 + shift, 199 + shift]
    assert len({tuple(b[0]) for b in boxes.values()}) > 1  # the shift is drawn, not fixed


def test_cvpr25_ties_are_drawn_with_the_scripts_seed_not_in_c_order() -> None:
    gt = np.zeros((9, 9, 30), bool)
    for left in (2, 12, 22):  # three 5-voxel cubes joined by a thin bar: one component, three maxima
        gt[2:7, 2:7, left : left + 5] = True
    gt[4, 4, 2:27] = True
    maxima = [(4, 4, 4), (4, 4, 14), (4, 4, 24)]  # distance 3 at the cubes' centres, < 3 elsewhere
    chosen = maxima[np.random.RandomState(42).choice(3)]
    assert chosen != maxima[0]  # the script's draw, not the first maximum in C order
    assert cvpr25_click(gt, np.zeros_like(gt)) == (chosen, 1)
    assert cvpr25_click(np.zeros_like(gt), gt) == (chosen, 0)
    assert cvpr25_click(gt, gt) is None


def test_cvpr24_case_scores_equal_the_official_script(data_root: Path) -> None:
    """The cvpr24 kind's rules are its scores: the recorded stand-in predictions, scored by challenge.py."""
    case = next(c for c in load("cvpr24_compute_metrics.json")["cases"] if c["case"].startswith("2D"))
    gt = ct_labels(data_root)
    pred = initial(gt, case["stand_in_prediction"]["offset"], case["stand_in_prediction"]["erode"])
    assert challenge.cvpr24_scores(gt, pred, None) == pytest.approx((case["dsc"], case["nsd"]), abs=1e-6)
    kind = plugins.protocols()["cvpr24"]()
    ask = kind.first(ProtocolInputs(0, "t", "c", {str(c): gt == c for c in challenge.cvpr24_classes(gt)}))
    rows, cols = np.nonzero(gt == 1)
    assert ask.prompts[0].box.tolist() == [cols.min(), rows.min(), cols.max(), rows.max()]


class SeededMicroSam(MicroSam):
    """The registered microsam kind with the fixture's ``np.random.seed(seed)``."""

    seed = 0

    def random_state(self, inputs: ProtocolInputs) -> np.random.RandomState:
        return np.random.RandomState(self.seed)


@pytest.mark.parametrize("index", [0, 1])
def test_microsam_clicks_equal_the_official_generator(data_root: Path, index: int) -> None:
    case = load("microsam_iterative_prompts.json")["cases"][index]
    assert plugins.protocols()["microsam"] is MicroSam
    labels = ct_labels(data_root)
    truths = {name: labels == i for i, name in enumerate(case["objects"], start=1)}
    kind = SeededMicroSam()
    kind.seed = case["seed"]
    ask = kind.first(ProtocolInputs(seed=123, task="t", case_id=case["case"], labels=truths))
    assert [t.label for t in ask.targets] == case["objects"]
    start = initial(labels, case["initial"]["offset"], case["initial"]["erode"])
    masks = [start == i for i in range(1, len(truths) + 1)]
    # the fixture records 8 generator calls: micro-sam's 8 predictions use the first 7, the 8th is drawn
    # after the last prediction; the kind's stream is checked through all 8
    for iteration in case["iterations"]:
        given = len(ask.prompts[0].points) if ask.prompts[0].points is not None else 0
        ask = kind.refine(ask, np.stack(masks), [f"logits{iteration['iteration']}"] * ask.count)
        points = [prompt.points[given:].tolist() for prompt in ask.prompts]
        signs = [prompt.point_labels[given:].tolist() for prompt in ask.prompts]
        assert points == iteration["points_xy"]
        assert signs == iteration["labels"]
        assert all(prompt.previous == f"logits{iteration['iteration']}" for prompt in ask.prompts)
        assert all(prompt.box is not None for prompt in ask.prompts)  # the box start is kept
        radius = case["click_fix_radius_voxels"]
        for m, (truth, object_points) in enumerate(zip(truths.values(), points, strict=True)):
            for x, y in object_points:
                masks[m] = fix(masks[m].astype(np.uint8), truth.astype(np.uint8), 1, [int(y), int(x)], radius) == 1


def test_microsam_without_logits_feeds_nothing_back() -> None:
    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:15] = True
    kind = parse_protocol({"kind": "microsam", "logits": "none"}).handler
    ask = kind.first(ProtocolInputs(0, "t", "c", {"a": truth}))
    wrong = np.zeros_like(truth)
    wrong[3:10, 3:10] = True
    ask = kind.refine(ask, wrong[None], ["logits"])
    (prompt,) = ask.prompts
    assert prompt.previous is None and prompt.point_labels.tolist() == [1, 0]
    x, y = prompt.points[0]
    assert truth[int(y), int(x)] and not wrong[int(y), int(x)]  # a false negative
    x, y = prompt.points[1]
    assert wrong[int(y), int(x)] and not truth[int(y), int(x)]  # a false positive


@pytest.mark.slow  # ~20 s of CPU: a 3D case through 6 steps, then the report
def test_a_run_of_the_challenge_protocols_draws_their_step_curves(
    data_root: Path, plugin_path: str, tmp_path: Path
) -> None:
    """cvpr25 on a 3D task and microsam on the phantoms, with the example ``clicks`` adapter (box and
    point): every step is a row, and the leaderboard draws each protocol's Dice per step and DSC AUC."""
    (tmp_path / "bench.toml").write_text(
        '[suites.challenge]\nadapters = ["clicks", "box"]\ntasks = ["la-heart", "phantom"]\nlimit = 1\n'
        'protocols = [{ kind = "cvpr25" }, { kind = "microsam" }]\n'
    )
    env = {"PYTHONPATH": plugin_path}
    common = ("--data-root", str(data_root), "--out", str(tmp_path / "out"), "--no-progress")
    result = run_cli("run", "--config", str(tmp_path / "bench.toml"), "--suite", "challenge", *common, env=env)
    run = Path(result.stdout.strip().splitlines()[-1])
    rows = pl.read_parquet(run / "cases.parquet")
    steps = {
        (task, prompt): sorted(group["step"].to_list())
        for (task, prompt), group in rows.filter((pl.col("status") == "ok") & (pl.col("adapter") == "clicks")).group_by(
            "task", "prompt"
        )
    }
    assert steps[("la-heart", "cvpr25")] == list(range(6))  # one label: the box, then 5 clicks
    assert set(steps[("phantom", "microsam_box8")]) == set(range(8))  # micro-sam's n_iterations = 8
    at_5 = rows.filter((pl.col("task") == "la-heart") & (pl.col("step") == 5) & (pl.col("adapter") == "clicks"))
    clicks = json.loads(at_5["prompt_json"][0])
    assert len(clicks[0]["clicks"]) == 5 and all(str(z) in clicks[0]["slices"] for (z, _, _), _ in clicks[0]["clicks"])
    run_cli("report", str(run), "--out", str(tmp_path / "site"), env=env)
    document = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    for task, prompt, count in (("la-heart", "cvpr25", 6), ("phantom", "microsam_box8", 8)):
        section = next(
            s for t in document["tasks"] if t["name"] == task for s in t["iterative"] if s["prompt"] == prompt
        )
        box, curve = sorted(section["curves"], key=lambda c: c["adapter"])
        assert curve["steps"] == list(range(count)) and curve["dsc_auc"] is not None
        assert curve["click_steps"] == list(range(1, count)) and len(curve["noc"]) == 2
        assert curve["interactions"][0] == 1 and curve["interactions"][-1] > 1  # the box, then the clicks
        # the box baseline takes boxes only: its box step is scored, its click steps not taken
        assert box["adapter"] == "box" and box["steps"] == [0] and box["not_taken"] and box["dsc_auc"] is None
        assert section["not_taken"] == ["box"]
        assert (tmp_path / "site" / "figures" / f"{task}-{prompt}-steps.svg").is_file()
    la = next(t for t in document["tasks"] if t["name"] == "la-heart")
    (cvpr,) = la["iterative"]
    scores = {case["adapter"]: case for case in cvpr["cases"]}
    assert scores["clicks"]["DSC_AUC"] is not None and scores["box"]["DSC_AUC"] is None
    assert scores["clicks"]["DSC_Final"] == pytest.approx(scores["clicks"]["dsc"][-1])
    assert {c["prompt"] for c in la["cost"]} == {"cvpr25"}
    not_taken = rows.filter(pl.col("status") == "not_taken")
    assert set(not_taken["adapter"]) == {"box"} and not_taken.filter(pl.col("task") == "la-heart").height == 5


def test_cvpr25_without_a_box_starts_from_clicks_on_an_empty_prediction() -> None:
    """As the script does for a case without ``boxes``: the first prediction comes from a click on the
    largest error of an empty prediction, the whole object."""
    truth = np.zeros((9, 12, 12), bool)
    truth[2:7, 3:8, 3:8] = True
    kind = parse_protocol({"kind": "cvpr25", "start": "none"}).handler
    assert kind.steps == 5 and kind.requires == frozenset({"point"})
    (prompt,) = kind.first(ProtocolInputs(0, "t", "c", {"a": truth})).prompts
    assert prompt.clicks == (((4, 5, 5), 1),)  # the cube's centre, the only distance maximum
    assert prompt.slices[4].box is None and prompt.slices[4].points.tolist() == [[5.0, 5.0]]
    assert prompt.key_slice == 4 and prompt.z_range == (0, 8) and not kind.propagates  # no extent given
