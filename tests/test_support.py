"""Support protocols: the pool/query split, seeded sets shared by every adapter, ensembling, sizes as
a suite axis, a prompt passed together with a support set, the task-level resize."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from segbench.adapters.baselines import box_mask
from segbench.data.readers.phantom import phantom
from segbench.data.suites import Suite
from segbench.data.support_sets import SupportPool, SupportSplit, ensemble_masks, parse_support_split
from segbench.data.taskspec import TaskSpec, parse_task
from segbench.errors import ConfigError
from segbench.interface import Adapter, AdapterMeta, Capabilities, LoadOptions, Prediction, Prompt, Support
from segbench.protocols.kinds import support_request
from segbench.protocols.prompts import Target, bounding_box, initial_prompt, parse_protocols, target_rng
from segbench.reporting.report import build_site
from segbench.running.execute import execute
from segbench.running.plan import RunOptions, make_plan
from segbench.running.rows import case_schema
from segbench.running.runner import UnitRunner
from segbench.running.store import RunStore, conform

from .conftest import registered_adapters

TASK = {
    "task": {"name": "phantom-ic"},
    "data": {"reader": "phantom", "cases": 10, "seed": 0, "resize": [128, 128]},
    "labels": {"organ": "nonzero", "lesion": "nonzero"},
    "support": {"pool_fraction": 0.5},
}


def task(**overrides: Any) -> TaskSpec:
    document = {key: value for key, value in {**TASK, **overrides}.items() if value is not None}
    return parse_task(document, Path("phantom-ic.toml"))


def suite(adapters: tuple[str, ...], protocols: list[Any], seed: int = 0, name: str = "ic") -> Suite:
    return Suite(name, "", adapters, ("phantom-ic",), parse_protocols(protocols), seed, None, Path("bench.toml"))


def run_rows(
    tmp_path: Path, adapters: tuple[str, ...], protocols: list[Any], seed: int = 0, **plan: Any
) -> pl.DataFrame:
    made = make_plan(suite(adapters, protocols, seed), {"phantom-ic": task()}, RunOptions(device="cpu", **plan))
    store = execute(made, tmp_path / "out", progress=False)
    return store.read_cases()


def test_fraction_split_is_deterministic_disjoint_and_independent_of_order() -> None:
    ids = [f"case-{i:02d}" for i in range(40)]
    split = SupportSplit(fraction=0.25, seed=3)
    pool, queries = split.split(ids, "t.toml")
    assert len(pool) == 10 and len(queries) == 30
    assert not set(pool) & set(queries) and set(pool) | set(queries) == set(ids)
    assert split.split(ids[::-1], "t.toml")[0] == pool[::-1]  # same members whatever the listing order
    assert SupportSplit(fraction=0.25, seed=4).split(ids, "t.toml")[0] != pool  # the seed matters
    grown, _ = split.split([*ids, "case-40", "case-41"], "t.toml")
    assert len(set(pool) - set(grown)) <= 2  # two new cases displace at most two pool members


def test_glob_and_case_list_splits_and_their_errors() -> None:
    ids = ["CHASEDB1/Image_01L", "CHASEDB1/Image_01R", "CHASEDB1/Image_08L", "CHASEDB1/Image_14R"]
    split = parse_support_split({"pool_glob": "CHASEDB1/Image_0[1-7][LR]"}, Path("t.toml"))
    assert split.split(ids, "t.toml") == (ids[:2], ids[2:])
    listed = parse_support_split({"pool_cases": ["CHASEDB1/Image_14R"]}, Path("t.toml"))
    assert listed.split(ids, "t.toml") == (ids[3:], ids[:3])
    with pytest.raises(ConfigError, match="unknown case"):
        parse_support_split({"pool_cases": ["nope"]}, Path("t.toml")).split(ids, "t.toml")
    with pytest.raises(ConfigError, match="both must be non-empty"):
        parse_support_split({"pool_glob": "*"}, Path("t.toml")).split(ids, "t.toml")
    for bad, message in (
        ({}, "exactly one"),
        ({"pool_glob": "a", "pool_fraction": 0.5}, "exactly one"),
        ({"pool_fraction": 1.5}, "between 0 and 1"),
        ({"pool_cases": []}, "non-empty list"),
        ({"pool_fraction": 0.5, "seed": 1}, "unknown key"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_support_split(bad, Path("t.toml"))


def test_support_sizes_are_an_axis_of_named_protocols() -> None:
    specs = parse_protocols(
        [
            "box",
            {"kind": "support", "k": [1, 4, 16]},
            {"kind": "support", "k": 8, "ensemble": 5},
            {"kind": "support", "k": 2, "prompt": "box"},
        ]
    )
    assert [s.name for s in specs] == ["box", "support1", "support4", "support16", "support8x5", "support2+box"]
    assert specs[1].requires == {"support_set"} and specs[-1].requires == {"support_set", "box"}
    for bad in ({"kind": "support", "k": 0}, {"kind": "support", "prompt": "iterative"}, {"kind": "support", "k": []}):
        with pytest.raises(ValueError):
            parse_protocols([bad])


def test_every_adapter_gets_the_same_support_sets_drawn_only_from_the_pool(tmp_path: Path) -> None:
    protocols = [{"kind": "support", "k": [1, 3]}, {"kind": "support", "k": 2, "ensemble": 2}]
    rows = run_rows(tmp_path, ("support-nearest", "support-mean", "universeg"), protocols, weights="random", limit=2)
    assert (rows["status"] == "ok").all()
    assert set(rows["prompt"]) == {"support1", "support3", "support2x2"}
    assert rows.select(
        (pl.col("support_size") == pl.col("prompt").str.extract(r"support(\d+)").cast(pl.Int32)).all()
    ).item()
    pool, queries = task().support.split([f"phantom-{i:03d}" for i in range(10)], "t")
    assert rows["case_id"].unique().sort().to_list() == sorted(queries[:2])
    sets = {}
    for row in rows.iter_rows(named=True):
        given = [entry["support"] for entry in json.loads(row["prompt_json"])]
        assert len(given) == (2 if row["prompt"] == "support2x2" else 1)
        assert all(len(ids) == row["support_size"] and set(ids) <= set(pool) for ids in given)
        sets.setdefault((row["case_id"], row["label"], row["prompt"]), []).append(given)
    assert all(len(drawn) == 3 and drawn[0] == drawn[1] == drawn[2] for drawn in sets.values())
    assert len({json.dumps(drawn[0]) for drawn in sets.values()}) > len(sets) / 2  # sets differ across cases
    # random weights: UniverSeg's accuracy is not reported; the baselines' is
    universeg = rows.filter(pl.col("adapter") == "universeg")
    assert (universeg["weights"] == "random").all()
    assert rows.filter(pl.col("adapter") != "universeg")["weights"].unique().to_list() == ["none"]


def test_another_seed_draws_other_sets(tmp_path: Path) -> None:
    def sets(seed: int) -> list[str]:
        rows = run_rows(tmp_path / str(seed), ("support-mean",), [{"kind": "support", "k": 2}], seed=seed)
        return rows.sort("case_id", "label")["prompt_json"].to_list()

    assert sets(0) != sets(1)


def test_plan_drops_sizes_larger_than_the_pool_and_limits_only_queries() -> None:
    made = make_plan(
        suite(("support-mean",), [{"kind": "support", "k": [2, 6]}]),
        {"phantom-ic": task()},
        RunOptions(device="cpu", limit=2),
    )
    assert made.protocols_for("support-mean", "phantom-ic")[0].name == "support2"
    assert "holds 5 cases" in made.skipped["phantom-ic/support6"]
    assert [u.case_id for u in made.units] == task().support.split([f"phantom-{i:03d}" for i in range(10)], "t")[1][:2]
    no_pool = task(support=None)
    without = make_plan(
        suite(("support-mean",), [{"kind": "support", "k": 1}]), {"phantom-ic": no_pool}, RunOptions(device="cpu")
    )
    assert not without.units and "declares no [support]" in without.skipped["phantom-ic/support1"]


def test_support_request_pairs_each_set_with_its_label(tmp_path: Path) -> None:
    made = make_plan(
        suite(("support-mean",), [{"kind": "support", "k": 2, "ensemble": 2}]),
        {"phantom-ic": task()},
        RunOptions(device="cpu"),
    )
    reader = made.reader("phantom-ic")
    pool_ids = task().support.split(reader.case_ids(), "t")[0]
    pool = SupportPool(reader, pool_ids)
    query = reader.read(made.units[0].case_id)
    spec = made.protocols_for("support-mean", "phantom-ic")[0]
    ask = support_request(pool, spec, 0, "phantom-ic", query.case_id, query.labels)
    assert ask.labels == ["organ", "lesion"] and len(ask.supports) == 4 and ask.prompts is None
    for index, support in enumerate(ask.supports):
        label, member = ask.labels[index // 2], index % 2
        ids = ask.sets[label][member]
        expected = [pool.cases[i].labels[label] for i in ids]
        assert all(np.array_equal(mask, want) for mask, want in zip(support.masks, expected, strict=True))
        assert all(image.shape == (128, 128, 3) for image in support.images)  # the pool is read resized
    assert ask.given("lesion") == [{"support": ids} for ids in ask.sets["lesion"]]
    # a prompt beside the sets is the one its own protocol draws, at every support size
    jitter = parse_protocols(["box_jitter"])[0]
    alone = initial_prompt(
        jitter,
        Target("organ", 0, query.labels["organ"]),
        target_rng(0, "phantom-ic", query.case_id, "organ", 0, jitter.name),
    )
    for k in (1, 3):
        beside = parse_protocols([{"kind": "support", "k": k, "prompt": "box_jitter"}])[0]
        drawn = support_request(pool, beside, 0, "phantom-ic", query.case_id, query.labels)
        assert drawn.prompts is not None and drawn.prompts[0].box.tolist() == alone.box.tolist()


def test_ensembling_averages_probabilities_and_votes_without_them() -> None:
    soft = np.array([0.2, 0.9, 0.6, 0.1, 0.3, 0.8], dtype=np.float32).reshape(6, 1, 1)
    prediction = Prediction(soft > 0.5, probabilities=soft)
    assert ensemble_masks(prediction, 3).ravel().tolist() == [True, False]  # means 0.567 and 0.4
    assert ensemble_masks(Prediction(soft > 0.5), 3).ravel().tolist() == [True, False]  # 2 of 3, then 1 of 3
    assert ensemble_masks(prediction, 1).ravel().tolist() == (soft > 0.5).ravel().tolist()


class BoxAndSupport(Adapter):
    """Takes a prompt and a support set together; predicts the prompt box and records what it got."""

    meta = AdapterMeta(
        name="test-box-and-support",
        family="test",
        description="",
        capabilities=Capabilities(box=True, support_set=True),
    )
    calls: list[tuple[list[Prompt], list[Support]]] = []

    def load(self, options: LoadOptions) -> None:
        pass

    def encode(self, image: np.ndarray) -> tuple[int, int]:
        return image.shape[:2]

    def predict(
        self, state: Any, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        assert prompts is not None and support is not None and len(prompts) == len(support)
        self.calls.append((list(prompts), list(support)))
        return Prediction(np.stack([box_mask(p.box, state) for p in prompts]))


@pytest.fixture
def box_and_support() -> Any:
    with registered_adapters(BoxAndSupport):
        yield BoxAndSupport


def test_a_protocol_can_pass_a_prompt_and_a_support_set_together(box_and_support: type) -> None:
    made = make_plan(
        suite(("test-box-and-support",), [{"kind": "support", "k": 2, "ensemble": 2, "prompt": "box"}]),
        {"phantom-ic": task()},
        RunOptions(device="cpu", limit=2),
    )
    runner = UnitRunner(made, "test-box-and-support")
    box_and_support.calls.clear()  # the untimed warm-up call is not the protocol's
    rows = [row for unit in made.units for row in runner.run(unit).rows]
    assert {row["prompt"] for row in rows} == {"support2x2+box"} and all(r["status"] == "ok" for r in rows)
    assert len(box_and_support.calls) == 2
    for unit, (prompts, supports) in zip(made.units, box_and_support.calls, strict=True):
        query = runner._reader("phantom-ic").read(unit.case_id)
        boxes = [bounding_box(query.labels[label]).tolist() for label in ("organ", "lesion") for _ in range(2)]
        assert [p.box.tolist() for p in prompts] == boxes  # each set beside its own label's box
        assert [len(s) for s in supports] == [2, 2, 2, 2]
    given = json.loads(rows[0]["prompt_json"])
    assert len(given) == 2 and all("box" in entry and len(entry["support"]) == 2 for entry in given)


def test_the_task_level_resize_reads_cases_at_that_size() -> None:
    made = make_plan(
        suite(("support-mean",), [{"kind": "support", "k": 1}]), {"phantom-ic": task()}, RunOptions(device="cpu")
    )
    original, _ = phantom(0, 0)
    case = made.reader("phantom-ic").read("phantom-000")
    assert case.image.shape == (128, 128, 3) and all(
        m.dtype == bool and m.shape == (128, 128) for m in case.labels.values()
    )
    assert case.spacing == pytest.approx((original.shape[0] / 128, original.shape[1] / 128))
    with pytest.raises(ConfigError, match="resize"):
        task(data={**TASK["data"], "resize": [128]})


def test_support_rows_are_stored_and_reported_and_old_rows_still_read(tmp_path: Path) -> None:
    rows = run_rows(tmp_path, ("support-nearest", "box"), ["box", {"kind": "support", "k": [1, 2]}])
    assert rows.schema["support_size"] == case_schema()["support_size"]
    boxes = rows.filter(pl.col("prompt") == "box")
    assert boxes.height and boxes["support_size"].null_count() == boxes.height
    run_dir = next((tmp_path / "out").iterdir())
    index = build_site([run_dir], tmp_path / "site")
    page = (index.parent / "task-phantom-ic.html").read_text()
    assert "support1" in page and "support2" in page and "support-nearest" in page
    old = rows.drop("support_size")
    assert conform(old).columns == list(case_schema()) and conform(old)["support_size"].null_count() == old.height
    assert RunStore(run_dir).read_cases().columns == list(case_schema())
