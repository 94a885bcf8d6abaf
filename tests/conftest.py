"""Shared fixtures: the real datasets (through SEGBENCH_DATA or ../shared/datasets next to the
repository), a CLI runner, one quick-suite run reused by several tests, and adapters registered in process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "segbench-example-adapter"


def find_data_root() -> Path | None:
    configured = os.environ.get("SEGBENCH_DATA")
    candidate = Path(configured) if configured else REPO.parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = find_data_root()
    if root is None:
        pytest.skip("real datasets not found: set SEGBENCH_DATA (or place them at ../shared/datasets)")
    return root


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``segbench ARGS`` in a fresh interpreter (as a user runs it), output captured."""
    result = subprocess.run(
        [sys.executable, "-m", "segbench.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"segbench {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`segbench run` with no arguments but --out: the embedded default suite, once per session."""
    out = tmp_path_factory.mktemp("quick")
    result = run_cli("run", "--out", str(out), "--no-progress")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PYTHONPATH with the example third-party adapter package (``clicks``: box, point, iterative) installed."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        cwd=build,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    return os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))


@contextmanager
def registered_adapters(*classes: type) -> Iterator[None]:
    """``classes`` registered in this process as a plugin's adapters (through the real hook) for the block,
    and gone after it."""
    from segbench import plugins
    from segbench.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def segbench_register_adapters(self, register: Callable[[type], None]) -> None:
            for cls in classes:
                register(cls)

    manager, plugin = plugins.plugin_manager(), Plugin()
    manager.register(plugin)
    plugins.adapters.cache_clear()
    try:
        yield
    finally:
        manager.unregister(plugin)
        plugins.adapters.cache_clear()
