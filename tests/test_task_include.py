"""Task files that include another (``include = "kvasir.toml"``), merged table by table, and the
``[evaluation] metrics`` key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from segbench.data.taskspec import BUILTIN_TASK_DIR, discover_tasks, load_task, parse_task
from segbench.errors import ConfigError

BASE = """\
[task]
name = "base"
description = "the base task"
modality = "synthetic"

[data]
reader = "phantom"
cases = 3
seed = 1

[labels]
organ = "nonzero"
lesion = "nonzero"

[evaluation]
nsd_tolerance = 1.5
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_included_table_is_overridden_key_by_key(tmp_path: Path) -> None:
    _write(tmp_path, "base.toml", BASE)
    path = _write(
        tmp_path,
        "derived.toml",
        'include = "base.toml"\n[task]\nname = "derived"\n[data]\nseed = 7\n[evaluation]\nmetrics = ["dice"]\n',
    )
    spec = load_task(path)
    assert spec.name == "derived" and spec.description == "the base task" and spec.modality == "synthetic"
    assert dict(spec.data) == {"reader": "phantom", "cases": 3, "seed": 7}  # cases kept, seed replaced
    assert [label.name for label in spec.labels] == ["organ", "lesion"]  # not restated: inherited
    assert spec.nsd_tolerance == 1.5 and spec.metrics == ("dice",)  # [evaluation] merged key by key
    assert spec.source == path


def test_labels_are_replaced_whole(tmp_path: Path) -> None:
    _write(tmp_path, "base.toml", BASE)
    path = _write(tmp_path, "one.toml", 'include = "base.toml"\n[task]\nname = "one"\n[labels]\nlesion = "nonzero"\n')
    assert [label.name for label in load_task(path).labels] == ["lesion"]


def test_includes_nest_and_are_relative_to_the_including_file(tmp_path: Path) -> None:
    _write(tmp_path, "shared/base.toml", BASE)
    _write(tmp_path, "shared/middle.toml", 'include = "base.toml"\n[data]\ncases = 2\n')
    path = _write(tmp_path, "tasks/top.toml", 'include = "../shared/middle.toml"\n[task]\nname = "top"\n')
    spec = load_task(path)
    assert spec.name == "top" and spec.data["cases"] == 2 and spec.data["seed"] == 1


def test_a_cycle_is_refused_naming_the_chain(tmp_path: Path) -> None:
    _write(tmp_path, "a.toml", 'include = "b.toml"\n' + BASE)
    _write(tmp_path, "b.toml", 'include = "c.toml"\n')
    path = _write(tmp_path, "c.toml", 'include = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"include cycle: a\.toml -> b\.toml -> c\.toml -> a\.toml"):
        load_task(tmp_path / "a.toml")
    with pytest.raises(ConfigError, match=r"include cycle: c\.toml -> a\.toml -> b\.toml -> c\.toml"):
        load_task(path)


@pytest.mark.parametrize(
    ("include", "message"),
    [
        ('"missing.toml"', r"missing\.toml: cannot read"),
        ("3", r"include must be a task file's path relative to this file, got 3"),
        ('"/etc/base.toml"', r"include must be a task file's path relative to this file"),
        ('"a\\u0000b.toml"', r"include must be a task file's path relative to this file"),
    ],
)
def test_a_bad_include_is_an_error_naming_the_file(tmp_path: Path, include: str, message: str) -> None:
    path = _write(tmp_path, "t.toml", f"include = {include}\n" + BASE)
    with pytest.raises(ConfigError, match=message):
        load_task(path)


def test_keys_of_the_merged_task_are_checked_strictly(tmp_path: Path) -> None:
    _write(tmp_path, "base.toml", BASE)
    path = _write(tmp_path, "typo.toml", 'include = "base.toml"\n[data]\nseeed = 2\n')
    with pytest.raises(ConfigError, match=r"unknown key 'seeed' \(did you mean 'seed'\?\)"):
        load_task(path)


def test_every_builtin_incontext_task_includes_its_base_and_differs_only_where_it_says() -> None:
    tasks = discover_tasks()
    derived = sorted(BUILTIN_TASK_DIR.glob("*-incontext.toml"))
    assert len(derived) == 6
    for path in derived:
        document = tomllib.loads(path.read_text())
        base_path = BUILTIN_TASK_DIR / document["include"]
        spec, base = tasks[path.stem], load_task(base_path)
        assert base_path.name == path.name.replace("-incontext", "")
        # every key the file does not state is the base task's
        assert {k: v for k, v in base.data.items()} == {k: v for k, v in spec.data.items() if k != "resize"}
        assert spec.intensity == base.intensity and spec.reader == base.reader and spec.dim == base.dim
        assert spec.labels == base.labels or "labels" in document
        assert spec.support is not None and base.support is None


def test_metrics_are_a_non_empty_list_of_distinct_names(tmp_path: Path) -> None:
    document = tomllib.loads(BASE)
    assert parse_task(document, tmp_path / "t.toml").metrics is None  # the default Dice / NSD / HD95
    for value, message in [
        ("dice", r"\[evaluation\] metrics must be a list of strings"),
        ([1], r"\[evaluation\] metrics must be a list of strings"),
        ([], r"\[evaluation\] metrics must name at least one metric"),
        (["dice", "nsd", "dice"], r"\[evaluation\] metrics names \['dice'\] more than once"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_task({**document, "evaluation": {"metrics": value}}, tmp_path / "t.toml")
    spec = parse_task({**document, "evaluation": {"metrics": ["hd95", "dice"]}}, tmp_path / "t.toml")
    assert spec.metrics == ("hd95", "dice") and spec.nsd_tolerance == 2.0
