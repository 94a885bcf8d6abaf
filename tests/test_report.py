"""The leaderboard site, end to end: a real multi-adapter, multi-task run (the example point adapter
included, so an iterative protocol runs) is published; every page is parsed, every link and image
resolves inside the site, every table has one row per adapter, a hostile task name stays escaped,
and labs can override templates through the plugin hook."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import integrate

from segbench import hookimpl, plugins
from segbench.reporting.aggregate import bootstrap_ci, final_steps, leaderboard
from segbench.reporting.pages import display_names, load_runs
from segbench.reporting.report import build_site
from segbench.running.kept_masks import saved_predictions

from .conftest import run_cli
from .synthetic import SyntheticTask, peak_slice, write_run
from .test_runner import write_phantom_dataset

HOSTILE = "<script>alert(1)</script>"
BASE_URL = "https://lab.example.org/leaderboard"


@dataclass
class Table:
    caption: str = ""
    classes: str = ""
    body_rows: int = 0


class Page(HTMLParser):
    """What the tests look at in one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, rel, target)
        self.ids: set[str] = set()
        self.tables: list[Table] = []
        self.images: list[tuple[str, str | None]] = []  # (src, alt)
        self.scripts: list[str | None] = []
        self._in = {"caption": False, "tbody": False}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        target = values.get("href") if tag in ("a", "link") else values.get("src")
        if target:
            self.refs.append((tag, values.get("rel") or "", target))
        if tag == "img":
            self.images.append((values.get("src") or "", values.get("alt")))
        if tag == "script":
            self.scripts.append(values.get("src"))
        if tag == "table":
            self.tables.append(Table(classes=values.get("class") or ""))
        if tag in self._in:
            self._in[tag] = True
        if tag == "tr" and self._in["tbody"]:
            self.tables[-1].body_rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            self._in[tag] = False

    def handle_data(self, data: str) -> None:
        if self._in["caption"]:
            self.tables[-1].caption += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


@pytest.fixture(scope="module")
def site_run(plugin_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: the clicks (example plugin), box and otsu adapters on phantoms and on a PNG task
    named like an XSS attack, keeping the masks of two cases per task."""
    folder = tmp_path_factory.mktemp("site-run")
    (folder / "tasks").mkdir()
    (folder / "tasks" / "hostile.toml").write_text(
        f'[task]\nname = "{HOSTILE}"\ndescription = "{HOSTILE} in the description too"\n'
        '[data]\nreader = "image_mask_pairs"\ndataset = "pngs"\nimages = "images/*.png"\nmask = "masks/{name}"\n'
        '[labels]\norgan = "nonzero"\nlesion = [255]\n'
    )
    (folder / "bench.toml").write_text(
        f'task_dirs = ["tasks"]\n[suites.site]\nadapters = ["clicks", "box", "otsu"]\n'
        f'tasks = ["phantom", "{HOSTILE}"]\nsave_masks = 2\n'
    )
    write_phantom_dataset(folder / "data" / "pngs", 3)
    result = run_cli(
        "run",
        "--config",
        str(folder / "bench.toml"),
        "--suite",
        "site",
        "--data-root",
        str(folder / "data"),
        "--out",
        str(folder / "out"),
        "--no-progress",
        env={"PYTHONPATH": plugin_path},
    )
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def site(site_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site([site_run], out, title="Lab leaderboard", base_url=BASE_URL + "/")
    return out


def expected_rows(cases: pl.DataFrame) -> dict[str, int]:
    """Table caption → adapters that ran it (one row each), for every leaderboard table of the site."""
    ran = cases.filter(pl.col("prompt") != "*").group_by("task", "prompt").agg(pl.col("adapter").n_unique())
    expected = {}
    for task, prompt, adapters in ran.iter_rows():
        expected[f"{task} — prompt: {prompt}"] = adapters
        expected[f"{task} — prompt: {prompt} — all labels"] = adapters
        for label in cases.filter((pl.col("task") == task) & (pl.col("label") != "*"))["label"].unique():
            expected[f"{task} — prompt: {prompt} — label: {label}"] = adapters
    return expected


def test_every_link_and_image_resolves_inside_the_site(site: Path) -> None:
    pages = {path.name: parse(path) for path in site.glob("*.html")}
    assert {"index.html", "runs.html"} <= set(pages)
    assert sum(name.startswith("task-") for name in pages) == 2
    assert sum(name.startswith("cases-") for name in pages) == 2
    assert sum(name.startswith("adapter-") for name in pages) == 3
    for name, page in pages.items():
        assert page.scripts == ["sort.js"], name
        for tag, rel, target in page.refs:
            if rel == "canonical":
                assert target == f"{BASE_URL}/{name}"
                continue
            if tag == "a" and re.match(r"https?://", target):
                continue  # a link out (an official checkpoint URL), never a resource the page loads
            assert not re.match(r"[a-z]+:|//", target), f"{name} loads {target} from outside the site"
            file, _, fragment = target.partition("#")
            assert (site / file).is_file() if file else True, f"{name} links to missing {target}"
            if fragment:
                assert fragment in pages[file or name].ids, f"{name} links to missing anchor {target}"
        for src, alt in page.images:
            assert alt and len(alt) > 20, f"{name}: image {src} without alt text"


def test_every_table_has_one_row_per_adapter(site: Path, site_run: Path) -> None:
    cases = pl.read_parquet(site_run / "cases.parquet")
    expected = expected_rows(cases)
    seen = set()
    for path in [site / "index.html", *site.glob("task-*.html")]:
        for table in parse(path).tables:
            if "leaderboard" in table.classes:
                caption = " ".join(table.caption.split())
                assert table.body_rows == expected[caption], f"{path.name}: {caption}"
                seen.add(caption)
    assert seen == set(expected)
    # one adapter page row per (task, prompt) the adapter ran
    for adapter, group in cases.group_by("adapter"):
        page = parse(site / f"adapter-{adapter[0]}.html")
        assert page.tables[0].body_rows == group.select("task", "prompt").unique().height
    # the iterative protocol (only clicks answers points) gets its step table
    iterative = [t for t in parse(site / "task-phantom.html").tables if "DSC AUC" in t.caption]
    assert len(iterative) == 1 and iterative[0].body_rows == 1


def test_hostile_task_name_is_escaped_everywhere(site: Path) -> None:
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in [*site.glob("*.html"), *site.glob("figures/*.svg")]:
        text = path.read_text(encoding="utf-8")
        assert HOSTILE not in text, f"{path.name} carries the task name unescaped"
    task_pages = [p for p in site.glob("task-*.html") if p.name != "task-phantom.html"]
    assert len(task_pages) == 1 and escaped in task_pages[0].read_text()
    assert escaped in (site / "index.html").read_text()
    assert [t["name"] for t in json.loads((site / "leaderboard.json").read_text())["tasks"]] == [HOSTILE, "phantom"]


def test_drilldown_shows_best_median_and_worst_of_all_scored_cases(site: Path, site_run: Path) -> None:
    """Picks come from every scored case, not only those whose masks were kept (the suite keeps two)."""
    document = json.loads((site / "leaderboard.json").read_text())
    cases = final_steps(pl.read_parquet(site_run / "cases.parquet").filter(pl.col("status") == "ok"))
    saved = {sample.meta["case_id"] for sample in saved_predictions(site_run)}
    assert len(saved) == 4  # two per task, the same cases for every adapter
    for task in document["tasks"]:
        for protocol in task["protocols"]:
            drill = protocol["drilldown"]
            assert set(drill["adapters"]) == {row["adapter"] for row in protocol["rows"]}
            for adapter in drill["adapters"]:
                shown = [p for p in drill["picks"] if p["adapter"] == adapter]
                scores = cases.filter(
                    (pl.col("task") == task["name"])
                    & (pl.col("prompt") == protocol["prompt"])
                    & (pl.col("adapter") == adapter)
                )
                best = next(p for p in shown if "best" in p["picks"])
                worst = next(p for p in shown if "worst" in p["picks"])
                own = {p["picks"][0]: next(c for c in p["cells"] if c["adapter"] == adapter)["dice"] for p in shown}
                assert own[best["picks"][0]] == scores["dice"].max() and own[worst["picks"][0]] == scores["dice"].min()
                assert best["n"] == best["of"] == scores.height and worst["n"] == 1
                assert {name for p in shown for name in p["picks"]} == {"best", "median", "worst"}
            for pick in drill["picks"]:
                assert [cell["adapter"] for cell in pick["cells"]] == drill["adapters"]
                for cell in pick["cells"]:
                    assert (cell["image"] is not None) == (pick["case_id"] in saved and cell["status"] == "ok")
                    assert cell["image"] is None or (site / cell["image"]).is_file()


def test_iterative_auc_is_the_cvpr25_cumulative_trapezoid(site: Path, site_run: Path) -> None:
    document = json.loads((site / "leaderboard.json").read_text())
    phantom = next(t for t in document["tasks"] if t["name"] == "phantom")
    (section,) = phantom["iterative"]
    (curve,) = section["curves"]
    assert curve["adapter"] == "clicks" and curve["steps"] == [0, 1, 2, 3]
    rows = pl.read_parquet(site_run / "cases.parquet").filter(
        (pl.col("adapter") == "clicks") & (pl.col("prompt") == section["prompt"])
    )
    aucs = []
    for _, group in rows.group_by("case_id", "label"):
        dscs = group.sort("step")["dice"].to_numpy()
        n_clicks = len(dscs) - 1  # as CVPR25_iter_eval.py: the AUC over the click steps only
        aucs.append(integrate.cumulative_trapezoid(dscs[-n_clicks:], np.arange(n_clicks))[-1])
    assert curve["dsc_auc"]["mean"] == pytest.approx(np.mean(aucs))
    final = rows.filter(pl.col("step") == 3)["dice"].mean()
    assert curve["dice"][-1]["mean"] == pytest.approx(final)


def test_leaderboard_json_ranks_and_urls(site: Path) -> None:
    document = json.loads((site / "leaderboard.json").read_text(), parse_constant=pytest.fail)
    assert document["base_url"] == BASE_URL
    for task in document["tasks"]:
        assert task["url"] == f"{BASE_URL}/{task['page']}" and (site / task["page"]).is_file()
        for protocol in task["protocols"]:
            ranked = [row for row in protocol["rows"] if row["rank"] is not None]
            assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1))
            means = [row["dice"]["mean"] for row in ranked]
            assert means == sorted(means, reverse=True)
            assert all(row["vs_next"] is not None for row in ranked[:-1]) and ranked[-1]["vs_next"] is None


class BrandPlugin:
    def __init__(self, directory: Path):
        self.directory = directory

    @hookimpl
    def segbench_report_template_dirs(self) -> list[str]:
        return [str(self.directory)]


def test_a_plugin_brands_the_pages(site_run: Path, tmp_path: Path) -> None:
    brand = tmp_path / "brand"
    (brand / "static").mkdir(parents=True)
    (brand / "base.html").write_text(
        '{% extends "segbench/base.html" %}'
        '{% block brand %}<img class="logo" src="static/logo.svg" alt="Lab X logo, '
        'a blue square">{% endblock %}'
    )
    (brand / "style.css").write_text("body { font-family: serif; }")
    (brand / "static" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    plugin = BrandPlugin(brand)
    plugins.report_plugin_manager().register(plugin)
    try:
        build_site([site_run], tmp_path / "site")
    finally:
        plugins.report_plugin_manager().unregister(plugin)
    for page in (tmp_path / "site").glob("*.html"):
        assert 'src="static/logo.svg"' in page.read_text() and "Provenance" in page.read_text()
    assert (tmp_path / "site" / "style.css").read_text() == "body { font-family: serif; }"
    assert (tmp_path / "site" / "static" / "logo.svg").is_file()


def test_cli_report_takes_title_base_url_and_template_dir(site_run: Path, tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "base.html").write_text(
        '{% extends "segbench/base.html" %}{% block footer %}Published by Lab Y{% endblock %}'
    )
    result = run_cli(
        "report",
        str(site_run),
        "--out",
        str(tmp_path / "site"),
        "--title",
        "Lab Y & friends",
        "--base-url",
        "https://y.example",
        "--template-dir",
        str(tmp_path / "templates"),
    )
    index = Path(result.stdout.strip()).read_text()
    assert "<title>Lab Y &amp; friends</title>" in index and "Published by Lab Y" in index
    assert '<link rel="canonical" href="https://y.example/index.html">' in index
    bad = run_cli(
        "report", str(site_run), "--out", str(tmp_path / "x"), "--base-url", "javascript:alert(1)", check=False
    )
    assert bad.returncode == 2 and "--base-url" in bad.stderr


def test_3d_in_context_and_random_weight_rows_from_other_producers(tmp_path: Path) -> None:
    """Rows the 3D, in-context and SAM-family producers write (support_size, dim 3, random weights)."""
    run = write_run(
        tmp_path / "synthetic",
        {"strong": 0.9, "weak": 0.3, "untrained": 0.5},
        [
            SyntheticTask("volumes", 6, dim=3, shape=(9, 48, 48)),
            SyntheticTask("in-context", 6, support_sizes=(1, 2, 4, 8)),
        ],
        random_weights=("untrained",),
        samples=2,
    )
    build_site([run], tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "3D volumes" in index and "In-context (support sets)" in index
    support_page = parse(tmp_path / "site" / "task-in-context.html")
    (support_table,) = [t for t in support_page.tables if "support set size" in t.caption]
    assert support_table.body_rows == 2 * 4  # every measured adapter at every size (random weights: no Dice)
    assert (tmp_path / "site" / "figures" / "in-context-support.svg").is_file()
    document = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    volumes = next(t for t in document["tasks"] if t["name"] == "volumes")
    rows = volumes["protocols"][0]["rows"]
    assert [r["adapter"] for r in rows if r["rank"]] == ["strong", "weak"]
    assert next(r for r in rows if r["adapter"] == "untrained")["dice"]["mean"] is None
    shown = [c for p in volumes["protocols"][0]["drilldown"]["picks"] for c in p["cells"] if c["image"]]
    assert shown and {c["slice"] for c in shown} == {peak_slice((9, 48, 48))}
    curves = next(t for t in document["tasks"] if t["name"] == "in-context")["support"]
    assert {(c["adapter"], c["protocol"], tuple(c["sizes"])) for c in curves} == {
        ("strong", "support", (1, 2, 4, 8)),
        ("weak", "support", (1, 2, 4, 8)),
    }


def test_runs_keep_the_masks_of_the_sampled_cases(quick_run: Path) -> None:
    samples = quick_run / "samples"
    cases = pl.read_parquet(quick_run / "cases.parquet")
    units = cases["unit_id"].n_unique()  # by default every case's masks are kept
    assert len(list(samples.glob("case-*.npz"))) == 4 and len(saved_predictions(quick_run)) == units


def test_leaderboard_figures(quick_run: Path) -> None:
    frame = pl.read_parquet(quick_run / "cases.parquet")
    rows = {(r.prompt, r.adapter): r for r in leaderboard(frame)}
    box = rows[("box", "litemedsam")]
    subset = frame.filter((pl.col("adapter") == "litemedsam") & (pl.col("prompt") == "box"))
    macro = subset.group_by("label").agg(pl.col("dice").mean())["dice"].mean()  # issue 13: the macro mean over labels
    assert box.dice.mean == pytest.approx(macro) and box.cases == 4 and box.failures == 0
    assert box.dice.low <= box.dice.mean <= box.dice.high
    per_case = subset.unique("case_id")
    assert box.throughput == 4 / (per_case["total_ms"].sum() / 1000)


def test_protocols_an_adapter_did_not_run_are_not_rows() -> None:
    frame = pl.DataFrame(
        {
            "task": ["t"] * 3,
            "prompt": ["box", "box", "iterative_box3"],
            "adapter": ["a", "b", "b"],
            "case_id": ["c"] * 3,
            "label": ["x"] * 3,
            "step": [0, 0, 0],
            "status": ["ok"] * 3,
            "weights": ["none"] * 3,
            "dice": [0.5, 0.6, 0.7],
            "nsd": [0.5] * 3,
            "hd95": [1.0] * 3,
            "total_ms": [1.0] * 3,
            "peak_mem_mb": [1.0] * 3,
        }
    )
    assert {(r.prompt, r.adapter) for r in leaderboard(frame)} == {("box", "a"), ("box", "b"), ("iterative_box3", "b")}


def test_bootstrap_ci_is_seeded_and_covers_the_mean() -> None:
    values = np.random.default_rng(0).normal(0.8, 0.05, 50)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and (low, high) == bootstrap_ci(values)
    assert bootstrap_ci(np.array([0.5])) == (0.5, 0.5)


def test_report_of_nothing_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("report", str(tmp_path), "--out", str(tmp_path / "site"), check=False)
    assert result.returncode == 2 and "not a segbench run" in result.stderr


def test_an_adapter_of_several_runs_is_one_adapter_unless_its_results_could_mix(tmp_path: Path) -> None:
    first = write_run(tmp_path / "first", {"m": 0.8, "n": 0.5}, [SyntheticTask("t1", 5)])
    second = write_run(tmp_path / "second", {"m": 0.8}, [SyntheticTask("t2", 5)])
    again = write_run(tmp_path / "again", {"m": 0.7}, [SyntheticTask("t1", 5)])
    assert set(display_names(load_runs([first, second])).values()) == {"m", "n"}
    names = display_names(load_runs([first, second, again]))  # t1 twice: m's results would mix
    assert {names[("first", "m")], names[("second", "m")], names[("again", "m")]} == {"m@first", "m@second", "m@again"}
    build_site([first, second], tmp_path / "site")
    page = (tmp_path / "site" / "adapter-m.html").read_text()
    assert 'href="runs.html#run-1">first' in page and 'href="runs.html#run-2">second' in page
    assert parse(tmp_path / "site" / "adapter-m.html").tables[0].body_rows == 2
