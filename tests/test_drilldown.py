"""The case drill-down: picks from every scored case of the run, the same cases for every adapter,
failures shown, the prompt drawn, true/false positive/negative colours, WebP files named by content."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segbench.cli import build_parser
from segbench.data.suites import load_config
from segbench.data.taskspec import discover_tasks
from segbench.reporting.overlays import (
    EDGE_RGB,
    FILL_OPACITY,
    FN_RGB,
    FP_RGB,
    PROMPT_RGB,
    TP_RGB,
    draw_prompts,
    given_on_slice,
)
from segbench.reporting.overlays import overlay as draw_overlay
from segbench.reporting.report import build_site
from segbench.running.execute import execute
from segbench.running.kept_masks import saved_predictions
from segbench.running.plan import RunOptions, make_plan

from .synthetic import SyntheticTask, write_run


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The box and otsu baselines on the phantom task, masks kept by default."""
    plan = make_plan(load_config().suite("quick"), discover_tasks(), RunOptions(adapters=("box", "otsu"), device="cpu"))
    assert plan.save_masks is None and plan.config["save_masks"] is None  # the default: every case
    return execute(plan, tmp_path_factory.mktemp("runs"), progress=False).dir


@pytest.fixture(scope="module")
def phantom_site(phantom_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site([phantom_run], out)
    return out


def test_every_case_keeps_its_masks_by_default(phantom_run: Path) -> None:
    cases = pl.read_parquet(phantom_run / "cases.parquet")
    assert len(saved_predictions(phantom_run)) == cases["unit_id"].n_unique()
    assert len(list((phantom_run / "samples").glob("case-*.npz"))) == cases["case_id"].n_unique()


def test_worst_is_the_runs_minimum_dice_and_every_adapter_shows_the_same_cases(
    phantom_run: Path, phantom_site: Path
) -> None:
    rows = pl.read_parquet(phantom_run / "cases.parquet").filter(pl.col("status") == "ok")
    last = rows.group_by("adapter", "prompt").agg(pl.col("step").max().alias("last"))
    final = rows.join(last, on=["adapter", "prompt"]).filter(pl.col("step") == pl.col("last"))
    (task,) = json.loads((phantom_site / "leaderboard.json").read_text())["tasks"]
    page = (phantom_site / "cases-phantom.html").read_text()
    checked = 0
    for protocol in task["protocols"]:
        drill = protocol["drilldown"]
        for adapter in drill["adapters"]:
            mine = final.filter((pl.col("prompt") == protocol["prompt"]) & (pl.col("adapter") == adapter))
            values = list(zip(mine["dice"], mine["case_id"], mine["label"], strict=True))
            lowest = min(values)  # ties: the smaller case id, then label
            (worst,) = [p for p in drill["picks"] if p["adapter"] == adapter and "worst" in p["picks"]]
            assert (worst["case_id"], worst["label"]) == lowest[1:]
            assert worst["n"] == 1 and worst["of"] == len(values)
            own = next(c for c in worst["cells"] if c["adapter"] == adapter)
            assert own["dice"] == lowest[0]
            assert f"worst of {len(values)} cases for {adapter}" in page
            checked += 1
        for pick in drill["picks"]:
            assert [c["adapter"] for c in pick["cells"]] == drill["adapters"]  # one column per adapter, in order
            for cell in pick["cells"]:
                expected = final.filter(
                    (pl.col("prompt") == protocol["prompt"])
                    & (pl.col("adapter") == cell["adapter"])
                    & (pl.col("case_id") == pick["case_id"])
                    & (pl.col("label") == pick["label"])
                )
                if expected.height:  # the other adapter's own score on the same case, drawn (every mask kept)
                    assert cell["status"] == "ok" and cell["dice"] == expected["dice"][0] and cell["image"]
                else:
                    assert cell["status"] == "not run" and cell["image"] is None
    assert checked >= 2 and any(len(p["drilldown"]["adapters"]) == 2 for p in task["protocols"])


def test_overlays_are_webp_named_by_their_content_and_written_once(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"strong": 0.9, "weak": 0.3}, [SyntheticTask("flat", 5)], samples=5)
    cases = pl.read_parquet(run / "cases.parquet")
    shared = pl.col("case_id") == "case-0002"  # the worst case of both adapters: two rows show the same cells
    cases.with_columns(pl.when(shared).then(0.0).otherwise(pl.col("dice")).alias("dice")).write_parquet(
        run / "cases.parquet"
    )
    site = tmp_path / "site"
    build_site([run], site)
    (task,) = json.loads((site / "leaderboard.json").read_text())["tasks"]
    picks = task["protocols"][0]["drilldown"]["picks"]
    worst = [p["cells"] for p in picks if "worst" in p["picks"]]
    assert len(worst) == 2 and worst[0] == worst[1]  # the same images, not drawn twice
    named = [cell[key] for pick in picks for cell in pick["cells"] for key in ("image", "zoom")]
    files = [f for f in sorted((site / "cases").rglob("*")) if f.is_file()]
    assert files and {str(f.relative_to(site)) for f in files} == set(named)
    assert len(files) < len(named)
    contents = set()
    for path in files:
        data = path.read_bytes()
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert path.name == f"{hashlib.sha256(data).hexdigest()[:20]}.webp"
        contents.add(data)
    assert len(contents) == len(files)
    page = (site / "cases-flat.html").read_text()
    assert "webp" in page and not re.search(r'src="[^"]+\.png"', page)
    build_site([run], tmp_path / "again")  # names follow the bytes: a second build names the same files
    (again,) = json.loads((tmp_path / "again" / "leaderboard.json").read_text())["tasks"]
    assert again["protocols"][0]["drilldown"] == task["protocols"][0]["drilldown"]


def test_true_positives_false_positives_and_false_negatives_have_their_own_colours() -> None:
    image = np.full((64, 64, 3), 100, np.uint8)
    truth = np.zeros((64, 64), bool)
    truth[20:40, 20:40] = True
    prediction = np.zeros((64, 64), bool)
    prediction[20:40, 26:46] = True  # 6 columns of truth missed on the left, 6 predicted beyond it on the right
    drawn = draw_overlay(image, truth, prediction)

    def filled(colour: tuple[int, int, int]) -> np.ndarray:
        return np.round((1 - FILL_OPACITY) * 100 + FILL_OPACITY * np.array(colour))

    assert (drawn[30, 32] == filled(TP_RGB)).all()  # inside prediction and truth
    assert (drawn[30, 43] == filled(FP_RGB)).all()  # predicted only
    assert (drawn[30, 23] == filled(FN_RGB)).all()  # missed
    assert (drawn[20, 32] == TP_RGB).all() and (drawn[20, 43] == FP_RGB).all() and (drawn[20, 23] == FN_RGB).all()
    assert (drawn[5, 5] == 100).all()  # background untouched
    assert len({TP_RGB, FP_RGB, FN_RGB, PROMPT_RGB}) == 4
    page = Path(__file__).parents[1] / "harness" / "reporting" / "templates" / "cases.html"
    legend = page.read_text()
    for colour in (TP_RGB, FP_RGB, FN_RGB):
        assert "#{:02X}{:02X}{:02X}".format(*colour) in legend  # the page's legend shows the colours drawn


def test_the_prompt_is_drawn_by_shape_scaled_to_the_preview() -> None:
    pixels = np.full((100, 100, 3), 128, np.uint8)
    # in the coordinates of a 200 x 200 original, so everything lands at half the value on the preview
    prompts = [{"box": [20.0, 40.0, 161.0, 121.0]}, {"points": [[60.0, 150.0], [150.0, 170.0]], "labels": [1, 0]}]
    drawn = draw_prompts(pixels, prompts, (200, 200))
    x0, y0, x1, y1 = 10, 20, 80, 60  # (v + 0.5) / 2 - 0.5, rounded
    for x, y in [(x0, 40), (x1, 40), (45, y0), (45, y1)]:
        assert (drawn[y, x] == PROMPT_RGB).all(), (x, y)  # the outline
    assert (drawn[y0 - 1, 45] == EDGE_RGB).all()  # edged in black outside
    assert (drawn[40, 45] == 128).all()  # the box is an outline, not a fill
    positive, negative = (30, 75), (75, 85)  # (x, y) on the preview
    assert (drawn[positive[1], positive[0]] == EDGE_RGB).all()  # the plus at the disc's centre
    assert (drawn[positive[1] + 2, positive[0] + 2] == PROMPT_RGB).all()  # the disc around it
    assert (drawn[negative[1], negative[0]] == PROMPT_RGB).all()  # the cross's centre
    assert (drawn[negative[1] + 3, negative[0]] == 128).all()  # a cross, not a disc: nothing straight below
    assert (draw_prompts(pixels, [], (200, 200)) == pixels).all()


def test_a_volume_draws_the_prompts_of_the_shown_slice() -> None:
    given = [
        {
            "key_slice": 4,
            "z_range": [2, 6],
            "slices": {"4": {"box": [1.0, 2.0, 3.0, 4.0]}, "5": {"box": [5.0, 6.0, 7.0, 8.0]}},
        }
    ]
    assert given_on_slice(given, 5) == [{"box": [5.0, 6.0, 7.0, 8.0]}]
    assert given_on_slice(given, 0) == []
    support = [{"support": ["a", "b"], "box": [0.0, 0.0, 1.0, 1.0]}, {"support": ["c"]}]
    assert given_on_slice(support, None) == [{"box": [0.0, 0.0, 1.0, 1.0]}]


def test_failures_are_listed_and_shown_in_the_other_adapters_columns(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"strong": 0.9, "weak": 0.3}, [SyntheticTask("flat", 6)], samples=6)
    cases = pl.read_parquet(run / "cases.parquet")
    broken = (pl.col("adapter") == "weak") & pl.col("case_id").is_in(["case-0001", "case-0004"])
    lowest = (pl.col("adapter") == "strong") & (pl.col("case_id") == "case-0001")  # strong's worst: weak failed it
    cases = cases.with_columns(pl.when(lowest).then(0.01).otherwise(pl.col("dice")).alias("dice")).with_columns(
        pl.when(broken).then(pl.lit("failed")).otherwise(pl.col("status")).alias("status"),
        pl.when(broken).then(float("nan")).otherwise(pl.col("dice")).alias("dice"),
        pl.when(broken)
        .then(pl.lit("RuntimeError: out of memory\nTraceback ..."))
        .otherwise(pl.col("error"))
        .alias("error"),
    )
    cases.write_parquet(run / "cases.parquet")
    build_site([run], tmp_path / "site")
    (task,) = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["tasks"]
    drill = task["protocols"][0]["drilldown"]
    assert drill["failures"] == {
        "weak": [
            {"case_id": c, "label": "organ", "error": "RuntimeError: out of memory"} for c in ("case-0001", "case-0004")
        ]
    }
    weak_ok = cases.filter((pl.col("adapter") == "weak") & (pl.col("status") == "ok"))
    (weak_worst,) = [p for p in drill["picks"] if p["adapter"] == "weak" and "worst" in p["picks"]]
    assert weak_worst["of"] == weak_ok.height == 4  # failed cases are not scored cases
    for pick in drill["picks"]:
        weak = next(c for c in pick["cells"] if c["adapter"] == "weak")
        if pick["case_id"] in ("case-0001", "case-0004"):
            assert weak["status"] == "failed" and weak["image"] is None
            assert weak["error"] == "RuntimeError: out of memory"
        else:
            assert weak["status"] == "ok" and weak["image"]
    (strong_worst,) = [p for p in drill["picks"] if p["adapter"] == "strong" and "worst" in p["picks"]]
    assert strong_worst["case_id"] == "case-0001" and strong_worst["cells"][1]["status"] == "failed"
    page = (tmp_path / "site" / "cases-flat.html").read_text()
    assert "2 failed (case, label)s for weak" in page and "Traceback" not in page


def test_support_protocols_list_the_support_set_with_thumbnails_where_kept(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"strong": 0.9}, [SyntheticTask("in-context", 4, support_sizes=(2,))], samples=4)
    cases = pl.read_parquet(run / "cases.parquet")
    given = json.dumps([{"support": ["case-0003", "pool-9"]}, {"support": ["pool-9"]}])  # two ensemble members
    cases.with_columns(pl.lit(given).alias("prompt_json")).write_parquet(run / "cases.parquet")
    build_site([run], tmp_path / "site")
    (task,) = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["tasks"]
    cells = [c for p in task["protocols"][0]["drilldown"]["picks"] for c in p["cells"]]
    assert cells and all(c["support"] == ["case-0003", "pool-9"] for c in cells)
    page = (tmp_path / "site" / "cases-in-context.html").read_text()
    (thumbnail,) = set(re.findall(r'<img class="thumb" src="([^"]+)" alt="support case case-0003', page))
    assert (tmp_path / "site" / thumbnail).read_bytes()[8:12] == b"WEBP"  # a pool case the run kept: its preview
    assert "pool-9" in page and 'alt="support case pool-9' not in page  # not kept: its id only


def test_save_masks_takes_all_or_a_count(tmp_path: Path) -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "--save-masks", "all"]).save_masks == "all"
    assert parser.parse_args(["run", "--save-masks", "3"]).save_masks == 3
    assert parser.parse_args(["run"]).save_masks is None  # the suite's, which defaults to every case
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--save-masks", "-1"])
    config = tmp_path / "bench.toml"
    config.write_text(
        '[suites.s]\nadapters = ["box"]\ntasks = ["phantom"]\nsave_masks = 2\n'
        '[suites.every]\nadapters = ["box"]\ntasks = ["phantom"]\nsave_masks = "all"\n'
    )
    suites = load_config(config)
    assert suites.suite("every").save_masks is None and suites.suite("s").save_masks == 2
    tasks = discover_tasks()
    assert make_plan(suites.suite("s"), tasks, RunOptions(device="cpu")).save_masks == 2
    assert make_plan(suites.suite("s"), tasks, RunOptions(device="cpu", save_masks="all")).save_masks is None
    assert make_plan(suites.suite("every"), tasks, RunOptions(device="cpu", save_masks=0)).save_masks == 0
