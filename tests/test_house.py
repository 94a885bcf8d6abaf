"""The house rules, checked: one formatter, the linter, the declared layers, no import circles, types.

The static tools read ``.static/segbench`` (see tests/test_static_view.py), the folder view of the
``segbench`` package whose parts live in harness/, adapters/ and tasks/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["harness", "adapters", "tests", "scripts", "examples"]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is one of segbench's dev dependencies")
    return found


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / ".static")}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)


def test_the_code_is_formatted_by_ruff() -> None:
    result = _run(_tool("ruff"), "format", "--check", *SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    result = _run(_tool("ruff"), "check", *SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_declared_layers_hold() -> None:
    result = _run(_tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_imports_itself_through_others() -> None:
    """No import circle, counting imports inside functions (a lazy import that closes a circle hides
    a layering problem rather than solving it)."""
    code = (
        "import grimp, json, sys; g = grimp.build_graph('segbench');"
        "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    import json

    graph: dict[str, list[str]] = json.loads(result.stdout)
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in graph.get(module, []):
            if imported not in graph:
                continue
            if state.get(imported) == 1:
                circles.append(path[path.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(" -> ".join(circle) for circle in circles)


def test_the_type_checker_finds_nothing() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
