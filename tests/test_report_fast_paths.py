"""The report's fast paths write what the plain ones write: figures drawn in worker processes
(``segbench.reporting.figures.start_writing``) are byte-identical to figures drawn in the building process.
(The bootstrap's fast paths are checked against the plain resampling loop in tests/test_aggregation.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segbench.errors import SegbenchError
from segbench.reporting import figures


def _figures() -> list[figures.Figure]:
    rng = np.random.default_rng(3)
    palette = figures.styles(["a", "b"])
    return [
        figures.dice_distribution(f"dice-{n}", {"a": rng.uniform(0, 1, n), "b": rng.uniform(0, 1, n)}, palette, "t")
        for n in (5, 80)
    ]


def test_figures_drawn_by_workers_are_the_bytes_drawn_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    for figure in _figures():
        figure.write(here)
    monkeypatch.setattr(figures, "_cores", lambda: 2)  # the pool even on a one-core runner
    drawing = figures.start_writing(_figures(), there, least=1)
    assert len(drawing._workers) == 2  # they did go to workers
    drawing.wait()
    names = sorted(path.name for path in here.iterdir())
    assert names == ["dice-5.svg", "dice-80.svg"] == sorted(path.name for path in there.iterdir())
    for name in names:
        assert (here / name).read_bytes() == (there / name).read_bytes()


def test_a_figure_that_cannot_go_to_a_worker_is_drawn_here(tmp_path: Path) -> None:
    (plain,) = _figures()[:1]
    local = figures.Figure("closure", plain.alt, plain.caption, lambda: plain.draw())  # a lambda does not pickle
    drawing = figures.start_writing([local], tmp_path, least=1)
    drawing.wait()
    assert (tmp_path / "closure.svg").read_text(encoding="utf-8").startswith("<?xml")


def _broken() -> figures.MplFigure:
    raise ValueError("no such figure")


def test_a_worker_that_fails_stops_the_build_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(figures, "_cores", lambda: 2)
    (plain,) = _figures()[:1]
    broken = [figures.Figure(f"broken-{i}", plain.alt, plain.caption, _broken) for i in range(2)]
    drawing = figures.start_writing(broken, tmp_path, least=1)
    with pytest.raises(SegbenchError, match="no such figure"):
        drawing.wait()
