"""The static view: ``.static/segbench`` links every entry of ``harness/`` plus ``adapters`` and ``tasks``.

The package-dir mapping (``segbench`` = harness/, ``segbench.adapters`` = adapters/) is resolved by the
import system at run time; static tools (import-linter, mypy, pyright) read folders whose names are the
module names. ``.static/segbench`` is that folder, made of links, so a tool given ``.static`` on its path
sees the installed layout. A new top-level module of harness/ needs its link; this test says which.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIEW = REPO / ".static" / "segbench"


def test_the_static_view_links_every_entry_of_the_package() -> None:
    wanted = {entry.name for entry in (REPO / "harness").iterdir() if entry.name != "__pycache__"}
    wanted |= {"adapters", "tasks"}
    present = {entry.name for entry in VIEW.iterdir()}
    missing = sorted(wanted - present)
    assert not missing, f"link them: cd .static/segbench && ln -s ../../harness/NAME NAME  ({missing})"
    for entry in VIEW.iterdir():
        assert entry.is_symlink(), f"{entry} must be a link"
        target = entry.resolve()
        expected = REPO / (
            "adapters" if entry.name == "adapters" else "tasks" if entry.name == "tasks" else f"harness/{entry.name}"
        )
        assert target == expected.resolve(), f"{entry} points at {target}, not {expected}"
