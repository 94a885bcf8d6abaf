"""Publishing a site safely and reproducibly: no machine path or host name leaves the build machine,
a site folder is cleaned of what the last build wrote (and only that), an incomplete run is flagged on
every page, two builds of the same runs are byte-identical, ``leaderboard.json`` follows the schema
the package ships, and the pages hold up on a phone (figure text, contrast, navigation)."""

from __future__ import annotations

import json
import platform
import re
import shutil
import socket
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import polars as pl
import pytest

from segbench.errors import SegbenchError
from segbench.reporting.aggregate import natural_key
from segbench.reporting.leaderboard_json import SCHEMA, schema
from segbench.reporting.pages import load_runs
from segbench.reporting.publishing import publishable, scrub_text
from segbench.reporting.report import SITE_MANIFEST, build_site, publishable_runs

from .conftest import REPO, run_cli
from .synthetic import SyntheticTask, write_run
from .test_runner import write_config

TEMPLATES = REPO / "harness" / "reporting" / "templates"
PHONE_CONTENT_PX = 390 - 2 * 12  # a 390 px phone less main's side padding (.75rem each) below 40rem


@pytest.fixture(scope="module")
def made_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run dir, the tmp folder it was made in): a real `segbench run` of box and otsu on PNG files under a
    data root in tmp (one of them corrupt), keeping two cases' masks. Its manifest then gets what a checkpointed
    adapter and a cluster executor would add: a checkpoint path, the command line, executor paths under tmp and ~."""
    folder = tmp_path_factory.mktemp("publish-run")
    config = write_config(folder, ["box", "otsu"], 4)
    (folder / "data" / "pngs" / "images" / "003.png").write_bytes(b"not an image")  # a failed case, its error text
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--suite",
        "files",
        "--data-root",
        str(folder / "data"),
        "--out",
        str(folder / "out"),
        "--save-masks",
        "2",
        "--no-progress",
    )
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    manifest_path = run_dir / "run.json"
    manifest = json.loads(manifest_path.read_text())
    checkpoint = folder / "weights" / "model-v1.pth"
    manifest["adapters"]["box"]["checkpoint"] = {
        "name": "box-weights",
        "path": str(checkpoint),
        "sha256": "ab" * 32,
        "source": "override",
        "official": False,
    }
    manifest["adapters"]["box"]["checkpoint_spec"] = {
        "name": "box-weights",
        "filename": "model-v1.pth",
        "url": None,
        "sha256": None,
        "size": None,
    }
    # the runner records argv[0] as "segbench"; a hand-made or older manifest may hold the full path
    manifest["command"] = [
        str(REPO / ".venv" / "bin" / "segbench"),
        "run",
        "--config",
        str(config),
        "--data-root",
        str(folder / "data"),
        f"--checkpoint=box={checkpoint}",
    ]
    manifest["sessions"][-1]["executor_options"] = {
        "folder": str(folder / "slurm-logs"),
        "log": "~/jobs/x.log",
        "note": f"wrote {folder}/out/log.txt",
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return run_dir, folder


def text_files(site: Path) -> dict[str, str]:
    return {
        p.relative_to(site).as_posix(): p.read_text(encoding="utf-8")
        for p in site.rglob("*")
        if p.is_file() and p.suffix in (".html", ".json", ".svg", ".css", ".js")
    }


def test_no_machine_path_or_host_name_is_published(made_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, folder = made_run
    raw = (run_dir / "run.json").read_text()
    hosts = {socket.gethostname(), platform.node()} - {""}
    paths = {str(folder), str(folder / "data"), str(REPO), str(Path.home()) + "/", "~/jobs"}
    # the manifest does hold them: what the site must leave out
    assert all(path in raw for path in paths - {str(Path.home()) + "/"}) and all(host in raw for host in hosts)
    assert pl.read_parquet(run_dir / "cases.parquet")["status"].to_list().count("failed") >= 2
    site = tmp_path / "site"
    build_site([run_dir], site)
    texts = text_files(site)
    assert {"index.html", "runs.html", "leaderboard.json", "adapter-box.html"} <= set(texts)
    assert any(name.endswith(".svg") for name in texts)
    for name, text in texts.items():
        for path in paths:
            assert path not in text, f"{name} shows the machine path {path}"
        for host in hosts:
            assert not re.search(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", text), f"{name} names the host {host}"
    for path in site.rglob("*"):  # images too, byte for byte
        if path.is_file():
            data = path.read_bytes()
            assert not any(p.encode() in data for p in paths), f"{path.name} holds a machine path"
    # the facts stay, by name: the checkpoint's file name and sha256, the data root's folder name
    runs = texts["runs.html"]
    assert "model-v1.pth" in runs and "ab" * 32 in runs and "<code>data</code>" in runs
    published = publishable_runs(load_runs([run_dir]))[0][0].cases  # what every page is built from
    assert published["host"].null_count() == published.height
    errors = published.filter(pl.col("status") == "failed")["error"].to_list()
    assert errors and all(error.startswith("003.png: ") and str(folder) not in error for error in errors)
    document = json.loads(texts["leaderboard.json"])
    box = next(a for a in document["adapters"] if a["name"] == "box")
    assert box["facts"]["checkpoint"]["path"] == "model-v1.pth"


def test_publishable_reduces_paths_wherever_they_stand() -> None:
    manifest = {
        "data_root": "/srv/data/medical",
        "machine": {"host": "node-17", "cpu": "Xeon"},
        "sessions": [{"host": "node-17", "started": "2025-01-01T00:00:00+00:00"}],
        "command": ["/opt/venv/bin/segbench", "run", "--out=/scratch/u/out", "~/runs/x", "relative/dir"],
        "git": {"remote": "https://github.com/org/segbench.git", "commit": "a" * 40},
        "error": "cannot read /srv/data/medical/case 1.png: truncated",
        "windows": r"C:\Users\me\model.pth",
        "link": "file:///home/me/site/index.html",
        "ratio": "n/a and 1/2",
    }
    published = publishable(manifest)
    assert published["data_root"] == "medical" and published["machine"] == {"cpu": "Xeon"}
    assert published["sessions"] == [{"started": "2025-01-01T00:00:00+00:00"}]
    assert published["command"] == ["segbench", "run", "--out=out", "x", "relative/dir"]
    assert published["git"] == manifest["git"]  # a URL is not a machine path
    assert published["error"] == "cannot read case 1.png: truncated"  # a path ends at a space: the folders go
    assert published["windows"] == "model.pth" and published["link"] == "index.html"
    assert published["ratio"] == "n/a and 1/2"
    assert scrub_text("see /a/b/c.txt, then /d/e") == "see c.txt, then e"


def site_files(site: Path) -> set[str]:
    return {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}


def test_a_rebuild_removes_stale_pages_and_keeps_the_users_files(tmp_path: Path) -> None:
    two = write_run(tmp_path / "two", {"m": 0.8, "n": 0.4}, [SyntheticTask("t1", 4), SyntheticTask("t2", 4)], samples=2)
    one = write_run(tmp_path / "one", {"m": 0.8}, [SyntheticTask("t1", 4)], samples=2)
    site = tmp_path / "site"
    build_site([two], site)
    first = site_files(site)
    assert {"task-t2.html", "cases-t2.html", "adapter-n.html", "figures/t2-box-dice.svg"} <= first
    assert any(name.startswith("cases/t2/") for name in first)
    listed = json.loads((site / SITE_MANIFEST).read_text())["files"]
    assert set(listed) == first - {SITE_MANIFEST}
    (site / "notes.txt").write_text("mine")
    (site / "figures" / "my-plot.svg").write_text("<svg/>")
    (site / "cases" / "t2" / "keep.txt").write_text("mine too")
    build_site([one], site)
    second = site_files(site)
    mine = {"notes.txt", "figures/my-plot.svg", "cases/t2/keep.txt"}
    assert mine <= second, "a file the build did not write was deleted"
    assert not {"task-t2.html", "cases-t2.html", "adapter-n.html", "figures/t2-box-dice.svg"} & second
    assert not [name for name in second - mine if "t2" in name], "a page of the first build was left behind"
    assert set(json.loads((site / SITE_MANIFEST).read_text())["files"]) == second - mine - {SITE_MANIFEST}
    assert not list(site.glob(".segbench-build-*"))


def test_a_folder_that_is_not_a_site_is_refused(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"m": 0.8}, [SyntheticTask("t1", 3)])
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("mine")
    with pytest.raises(SegbenchError, match=r"not empty and is not a segbench site"):
        build_site([run], folder)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
    empty = tmp_path / "empty"
    empty.mkdir()
    build_site([run], empty)  # an empty folder (or a new one) is fine
    assert (empty / "index.html").is_file() and (empty / SITE_MANIFEST).is_file()


def test_an_interrupted_run_shows_the_banner(made_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = made_run
    interrupted = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, interrupted)
    manifest = json.loads((interrupted / "run.json").read_text())
    cases = pl.read_parquet(interrupted / "cases.parquet")
    pairs = cases.select("adapter", "task").unique().rows()
    ran = cases.select("adapter", "task", "case_id").unique().height
    # the plan held one more case per pair than ran, and the last session was killed before its end
    ran_cases = cases.group_by("adapter", "task").agg(pl.col("case_id").unique().sort())
    manifest["planned"] = {f"{adapter}/{task}": [*ids, "never-ran"] for adapter, task, ids in ran_cases.rows()}
    manifest["status"] = "interrupted"
    manifest["sessions"][-1].pop("ended", None)
    (interrupted / "run.json").write_text(json.dumps(manifest))
    site = tmp_path / "site"
    build_site([interrupted], site)
    banner = f"incomplete: {ran} of {ran + len(pairs)} units"
    for name, text in text_files(site).items():
        if name.endswith(".html"):
            assert banner in text and run_dir.name in text, f"{name} has no banner"
    document = json.loads((site / "leaderboard.json").read_text())
    (record,) = document["runs"]
    assert document["complete"] is False and record["complete"] is False
    assert (record["units_done"], record["units_planned"]) == (ran, ran + len(pairs))
    assert len(record["reasons"]) == 3  # status, the session without an end, the units without a result
    complete = tmp_path / "complete"
    build_site([run_dir], complete)
    assert all("incomplete:" not in text for text in text_files(complete).values())
    assert json.loads((complete / "leaderboard.json").read_text())["complete"] is True


def test_two_builds_are_byte_identical_and_follow_the_schema(made_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = made_run
    synthetic = write_run(
        tmp_path / "synthetic",
        {"strong": 0.9, "weak": 0.3},
        [
            SyntheticTask("steps", 5, prompts={"box": 1, "clicks": 3}),
            SyntheticTask("ic", 4, support_sizes=(2, 16, 4)),
        ],
        samples=2,
    )
    first, second = tmp_path / "a", tmp_path / "b"
    build_site([run_dir, synthetic], first, base_url="https://lab.example/board")
    build_site([run_dir, synthetic], second, base_url="https://lab.example/board")
    files = site_files(first)
    assert files == site_files(second) and len(files) > 20
    assert any(name.endswith(".svg") for name in files) and any(name.startswith("cases/") for name in files)
    for name in sorted(files):
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between builds"
    document = json.loads((first / "leaderboard.json").read_text())
    assert document["schema"] == SCHEMA
    validator = jsonschema.Draft202012Validator(schema())
    validator.check_schema(schema())
    validator.validate(document)
    assert not validator.is_valid({**document, "surprise": 1})  # strict at the top level
    assert not validator.is_valid({**document, "runs": [{**document["runs"][0], "host": "x"}]})
    ic = next(task for task in document["tasks"] if task["name"] == "ic")
    assert all(curve["sizes"] == [2, 4, 16] for curve in ic["support"])


def test_names_with_numbers_sort_numerically() -> None:
    names = ["support16", "support2", "Support4", "support", "iterative_box10", "iterative_box3", "support2x5"]
    assert sorted(names, key=natural_key) == [
        "iterative_box3",
        "iterative_box10",
        "support",
        "support2",
        "support2x5",
        "Support4",
        "support16",
    ]


class Styles(HTMLParser):
    """The <style> text and the header navigation of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.css = ""
        self.viewport = False
        self.menus = 0
        self.menu_links: list[str] = []
        self._tag: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self._tag.append(tag)
        if tag == "meta" and values.get("name") == "viewport":
            self.viewport = "width=device-width" in (values.get("content") or "")
        if tag == "details" and "menu" in (values.get("class") or ""):
            self.menus += 1
        if tag == "a" and self.menus and "details" in self._tag:
            self.menu_links.append(values.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        while self._tag and self._tag.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self._tag and self._tag[-1] == "style":
            self.css += data


def luminance(colour: str) -> float:
    digits = colour.lstrip("#")
    digits = "".join(c * 2 for c in digits) if len(digits) == 3 else digits
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


DECORATIVE = re.compile(r"(^|[\s>])(img|\.swatch|\.key-fill|\.key-line)\b")


def colour_pairs(css: str) -> tuple[set[str], set[str]]:
    """(text colours, backgrounds text may sit on) of a stylesheet, ``var(--x)`` resolved; backgrounds of
    decorative elements (images, swatches, legend keys) hold no text and are left out."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    variables = dict(re.findall(r"(--[\w-]+)\s*:\s*(#[0-9a-fA-F]{3,6})\b", css))
    resolve = lambda value: variables.get(m.group(1), "") if (m := re.match(r"var\((--[\w-]+)\)", value)) else value  # noqa: E731
    texts, backgrounds = set(), {"#ffffff"}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        for prop, value in re.findall(r"(?:^|;)\s*([\w-]+)\s*:\s*([^;]+)", body):
            colour = resolve(value.strip().split()[0])
            if not re.fullmatch(r"#[0-9a-fA-F]{3,6}", colour):
                continue
            if prop == "color":
                texts.add(colour.lower())
            elif prop in ("background", "background-color") and not all(
                DECORATIVE.search(s.strip()) for s in selectors.split(",")
            ):
                backgrounds.add(colour.lower())
    return texts, backgrounds


@pytest.mark.parametrize("name", ["style.css", "compare.html"])
def test_every_text_colour_reaches_aa_contrast_on_every_background(name: str) -> None:
    text = (TEMPLATES / name).read_text()
    if name.endswith(".html"):
        page = Styles()
        page.feed(text)
        text = page.css
    texts, backgrounds = colour_pairs(text)
    assert len(texts) >= 2 and len(backgrounds) >= 2, "the stylesheet's colours were not found"
    for fg in texts:
        for bg in backgrounds:
            assert contrast(fg, bg) >= 4.5, f"{name}: text {fg} on {bg} is {contrast(fg, bg):.2f}:1 (AA needs 4.5)"


def test_pages_work_on_a_phone(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "run",
        {"litemedsam": 0.9, "sam-med2d-vit-b": 0.7, "box": 0.3},
        [
            SyntheticTask("kvasir-polyp", 6, prompts={"box": 1, "iterative_box3": 4}),
            SyntheticTask("ic", 4, support_sizes=(1, 2, 4)),
        ],
    )
    site = tmp_path / "site"
    build_site([run], site)
    svgs = list(site.glob("figures/*.svg"))
    assert len(svgs) >= 4
    for svg in svgs:
        text = svg.read_text()
        width = float(re.search(r'<svg[^>]*viewBox="0 0 ([\d.]+) [\d.]+"', text).group(1))
        sizes = [float(size) for size in re.findall(r"font-size: ?([\d.]+)px", text)]
        assert sizes, svg.name
        smallest = min(sizes) * PHONE_CONTENT_PX / width  # what a phone shows once the SVG fills its width
        assert smallest >= 10, f"{svg.name}: text of {smallest:.1f} px at 390 px"
    pages = sorted(site.glob("*.html"))
    tasks = {p.name for p in pages if p.name.startswith("task-")}
    adapters = {p.name for p in pages if p.name.startswith("adapter-")}
    for page in pages:
        parsed = Styles()
        parsed.feed(page.read_text())
        assert parsed.viewport and parsed.menus == 2, page.name
        assert set(parsed.menu_links) == tasks | adapters, page.name
    compare = Styles()
    compare.feed((TEMPLATES / "compare.html").read_text())
    assert compare.viewport
    css = (site / "style.css").read_text()
    assert "position: sticky" in css and "@media (max-width: 40rem)" in css and "flex-wrap: wrap" in css
