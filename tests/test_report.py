"""The leaderboard site: every page parses, every link resolves, tables hold the expected rows."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl

from segbench.aggregate import bootstrap_ci, leaderboard
from segbench.report import build_site


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tables = 0
        self.body_rows = 0
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("a", "link", "script") and (values.get("href") or values.get("src")):
            self.links.append(values.get("href") or values.get("src") or "")
        self.tables += tag == "table"
        self._in_body = self._in_body or tag == "tbody"
        self.body_rows += tag == "tr" and self._in_body

    def handle_endtag(self, tag: str) -> None:
        self._in_body = self._in_body and tag != "tbody"


def test_site_pages_parse_and_links_resolve(quick_run: Path, tmp_path: Path) -> None:
    index = build_site([quick_run], tmp_path / "site")
    pages = list((tmp_path / "site").glob("*.html"))
    assert {p.name for p in pages} == {"index.html", "task-phantom.html", "runs.html"}
    for page in pages:
        parser = PageParser()
        parser.feed(page.read_text())
        for link in parser.links:
            target = link.split("#")[0]
            assert not target or (page.parent / target).is_file(), f"{page.name} links to missing {link}"
    parser = PageParser()
    parser.feed(index.read_text())
    # phantom: 3 adapters x 2 box protocols
    assert parser.tables == 2 and parser.body_rows == 6


def test_leaderboard_figures(quick_run: Path) -> None:
    frame = pl.read_parquet(quick_run / "cases.parquet")
    rows = {(r.prompt, r.adapter): r for r in leaderboard(frame)}
    box = rows[("box", "litemedsam")]
    subset = frame.filter((pl.col("adapter") == "litemedsam") & (pl.col("prompt") == "box"))
    assert box.dice.mean == subset["dice"].mean() and box.cases == 4 and box.failures == 0
    assert box.dice.low <= box.dice.mean <= box.dice.high
    per_case = subset.unique("case_id")
    assert box.throughput == 4 / (per_case["total_ms"].sum() / 1000)


def test_bootstrap_ci_is_seeded_and_covers_the_mean() -> None:
    values = np.random.default_rng(0).normal(0.8, 0.05, 50)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and (low, high) == bootstrap_ci(values)
    assert bootstrap_ci(np.array([0.5])) == (0.5, 0.5)
