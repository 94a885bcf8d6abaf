"""Confinement: a task file reads only inside the data root.

Each attack of issue 14 is replayed on a small generated dataset with an ``outside`` folder beside the
data root holding files a task must never read: paths that leave the root as text (``..``, absolute)
are refused when the task file is parsed, naming the file and the key; symlinks that lead out are
refused when the files are listed or read. A run of such a task scores nothing and hashes nothing
outside. Names that become folder names (suite names, run ids, the compare page) cannot leave ``--out``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.data.readers import BUILTIN_READERS
from segbench.data.readers.base import confined
from segbench.data.suites import Suite, load_config
from segbench.data.taskspec import load_task
from segbench.errors import ConfigError, SegbenchError
from segbench.names import check_name, name_problem, slug
from segbench.protocols.prompts import parse_protocols
from segbench.running.execute import dataset_checksums, execute
from segbench.running.plan import RunOptions, make_plan

HEAD = '[task]\nname = "t"\n[data]\nreader = "image_mask_pairs"\n'


def _png(path: Path, value: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (24, 32), dtype=np.uint8)
    image[6:18, 8:24] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _mask(path: Path) -> None:
    mask = np.zeros((24, 32), np.uint8)
    mask[6:18, 8:24] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """tmp/data/pngs/{images,masks}/00{0,1}.png inside the root; tmp/outside/ with a secret image and mask."""
    for index in range(2):
        _png(tmp_path / "data" / "pngs" / "images" / f"00{index}.png", 200, index)
        _mask(tmp_path / "data" / "pngs" / "masks" / f"00{index}.png")
    _png(tmp_path / "outside" / "secret.png", 250, 9)
    _mask(tmp_path / "outside" / "secret_mask.png")
    (tmp_path / "outside" / "hosts").write_text("127.0.0.1 localhost\n")
    (tmp_path / "tasks").mkdir()
    return tmp_path


def _task(world: Path, body: str, name: str = "attack.toml") -> Path:
    path = world / "tasks" / name
    path.write_text(HEAD + body + '[labels]\nthing = "nonzero"\n')
    return path


def _reader(path: Path, world: Path):
    spec = load_task(path)
    return BUILTIN_READERS[spec.reader](spec, world / "data")  # no plugin loading: these tests stay fast


def _outside_paths(world: Path) -> set[Path]:
    return {p.resolve() for p in (world / "outside").iterdir()}


# Parse time: text that leaves the root, in every key that names a path.
PARSE_ATTACKS = {
    "relative glob": (
        'dataset = "pngs"\nimages = "../../../outside/*.png"\nmask = "masks/{name}"\n',
        r"\[data\] images",
    ),
    "dataset ..": ('dataset = "../../outside"\nimages = "*.png"\nmask = "{stem}_mask.png"\n', r"\[data\] dataset"),
    "absolute dataset": ('dataset = "{outside}"\nimages = "*.png"\nmask = "{{stem}}_mask.png"\n', r"\[data\] dataset"),
    "absolute glob": ('dataset = "pngs"\nimages = "{outside}/*.png"\nmask = "masks/{{name}}"\n', r"\[data\] images"),
    ".. in mask template": (
        'dataset = "pngs"\nimages = "images/*.png"\nmask = "../../outside/secret_mask.png"\n',
        r"\[data\] mask",
    ),
    "etc hosts": ('dataset = "pngs"\nimages = "../../../../../etc/host*"\nmask = "masks/{name}"\n', r"\[data\] images"),
    "home dir": ('dataset = "~"\nimages = "*.png"\nmask = "{name}"\n', r"\[data\] dataset"),
    "attribute in template": ('dataset = "pngs"\nimages = "images/*.png"\nmask = "{id.__class__}"\n', r"\[data\] mask"),
}


@pytest.mark.parametrize("attack", sorted(PARSE_ATTACKS))
def test_paths_that_leave_the_root_are_refused_when_the_task_is_parsed(world: Path, attack: str) -> None:
    body, key = PARSE_ATTACKS[attack]
    if "{outside}" in body:
        body = body.format(outside=(world / "outside").as_posix())
    path = _task(world, body)
    with pytest.raises(ConfigError, match=rf"attack\.toml: {key}") as caught:
        load_task(path)
    assert caught.value.path == str(path)


def test_a_dotdot_label_file_template_is_refused_naming_the_label(world: Path) -> None:
    path = world / "tasks" / "labels.toml"
    path.write_text(
        HEAD + 'dataset = "pngs"\nimages = "images/*.png"\n'
        '[labels]\nthing = { file = "../../outside/secret_mask.png" }\n'
    )
    with pytest.raises(ConfigError, match=r"labels\.toml: \[labels\.thing\] file .*'\.\.'"):
        load_task(path)


def test_a_dotdot_index_file_is_refused(world: Path) -> None:
    path = world / "tasks" / "index.toml"
    path.write_text(
        '[task]\nname = "t"\n[data]\nreader = "samed2d_index"\ndataset = "pngs"\n'
        'index = ["../../outside/index.json"]\n[labels]\n"*" = "nonzero"\n'
    )
    with pytest.raises(ConfigError, match=r"index\.toml: \[data\] index .*'\.\.'"):
        load_task(path)


def test_index_entries_that_leave_the_root_are_refused(world: Path) -> None:
    """The JSON index is data, but its entries are paths: confined like the task's own."""
    root = world / "data" / "pngs"
    (root / "index.json").write_text(json.dumps({"images/000.png": ["../../outside/secret_mask.png"]}))
    path = world / "tasks" / "index.toml"
    path.write_text(
        '[task]\nname = "t"\n[data]\nreader = "samed2d_index"\ndataset = "pngs"\n'
        'index = ["index.json"]\n[labels]\n"*" = "nonzero"\n'
    )
    with pytest.raises(ConfigError, match=r"index\.toml: \[data\] index 'index\.json' entry"):
        _reader(path, world)


def test_a_file_symlink_leading_out_is_refused_when_listed(world: Path) -> None:
    os.symlink(world / "outside" / "secret.png", world / "data" / "pngs" / "images" / "002.png")
    path = _task(world, 'dataset = "pngs"\nimages = "images/*.png"\nmask = "masks/{name}"\n')
    load_task(path)  # the text is fine: only the file system says where 002.png leads
    with pytest.raises(ConfigError, match=r"attack\.toml: \[data\] images .*'images/002\.png' leads outside"):
        _reader(path, world)


def test_a_directory_symlink_leading_out_is_refused_when_listed(world: Path) -> None:
    os.symlink(world / "outside", world / "data" / "pngs" / "linked")
    path = _task(world, 'dataset = "pngs"\nimages = "linked/*.png"\nmask = "{stem}_mask.png"\n')
    with pytest.raises(ConfigError, match=r"attack\.toml: \[data\] images .*leads outside"):
        _reader(path, world)


def test_a_dataset_folder_symlinked_out_is_refused(world: Path) -> None:
    os.symlink(world / "outside", world / "data" / "elsewhere")
    path = _task(world, 'dataset = "elsewhere"\nimages = "*.png"\nmask = "{stem}_mask.png"\n')
    with pytest.raises(ConfigError, match=r"attack\.toml: \[data\] dataset.*leads outside"):
        _reader(path, world)


def test_a_mask_symlink_leading_out_is_refused_when_read(world: Path) -> None:
    mask = world / "data" / "pngs" / "masks" / "001.png"
    mask.unlink()
    os.symlink(world / "outside" / "secret_mask.png", mask)
    path = _task(world, 'dataset = "pngs"\nimages = "images/*.png"\nmask = "masks/{name}"\n')
    reader = _reader(path, world)
    assert reader.read("images/000").labels["thing"].any()  # the case whose files stay inside is read
    with pytest.raises(ConfigError, match=r"attack\.toml: \[data\] mask: 'masks/001\.png' leads outside"):
        reader.read("images/001")
    with pytest.raises(ConfigError, match=r"\[data\] mask"):
        reader.files("images/001")


def test_symlinks_that_stay_inside_the_root_are_read(world: Path) -> None:
    """Confinement is about where a path leads, not about symlinks: one to another dataset of the root is fine."""
    _png(world / "data" / "other" / "x.png", 120, 5)
    os.symlink(world / "data" / "other" / "x.png", world / "data" / "pngs" / "images" / "002.png")
    os.symlink(world / "data" / "pngs" / "masks" / "000.png", world / "data" / "pngs" / "masks" / "002.png")
    reader = _reader(_task(world, 'dataset = "pngs"\nimages = "images/*.png"\nmask = "masks/{name}"\n'), world)
    assert reader.case_ids() == ["images/000", "images/001", "images/002"]
    assert reader.read("images/002").image[..., 0][10, 10] == 120


def _plan(world: Path, task_path: Path):
    spec = load_task(task_path)
    suite = Suite("attack", "", ("box",), (spec.name,), parse_protocols(["box"]), 0, None, world / "bench.toml")
    return make_plan(suite, {spec.name: spec}, RunOptions(device="cpu", data_root=world / "data", warmup=False))


def test_a_run_scores_and_hashes_nothing_outside_the_root(world: Path) -> None:
    """End to end: with a mask symlinked out, the run stops before any unit with the task file and key
    named; without it, every row and every hashed file is inside the root."""
    path = _task(world, 'dataset = "pngs"\nimages = "images/*.png"\nmask = "masks/{name}"\n')
    store = execute(_plan(world, path), world / "out", progress=False)
    rows = store.read_cases()
    assert sorted(rows["case_id"].unique().to_list()) == ["images/000", "images/001"]
    manifest = store.read_manifest()
    assert manifest["datasets"]["t"]["files"] == 4  # two images and two masks, all inside
    mask = world / "data" / "pngs" / "masks" / "001.png"
    mask.unlink()
    os.symlink(world / "outside" / "secret_mask.png", mask)
    plan = _plan(world, path)
    reader = plan.reader("t")
    every = [p.resolve() for case in reader.case_ids()[:1] for p in reader.files(case)]
    assert not set(every) & _outside_paths(world)
    with pytest.raises(ConfigError, match=r"attack\.toml: \[data\] mask"):
        dataset_checksums(plan)
    with pytest.raises(ConfigError, match=r"attack\.toml: \[data\] mask"):
        execute(plan, world / "out2", progress=False)
    assert not list((world / "out2").rglob("*.parquet"))


def test_confined_is_the_gate(tmp_path: Path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    assert confined(tmp_path / "root", "a/b.png", "t.toml", "[data] k") == tmp_path / "root" / "a" / "b.png"
    for bad in ("../x", "a/../../x", "/etc/hosts", "a\0b", "~/x", "C:/x", "..\\x"):
        with pytest.raises(ConfigError, match=r"t\.toml: \[data\] k"):
            confined(tmp_path / "root", bad, "t.toml", "[data] k")


# Names that become folder and file names


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "", "x" * 101, "a..b", "tab\tname"])
def test_bad_names_are_refused(name: str) -> None:
    assert name_problem(name)
    with pytest.raises(ValueError, match="not a valid name"):
        check_name(name, "run id")
    safe = slug(name)
    assert not name_problem(safe) and "/" not in safe


def test_good_names_pass_and_slug_unchanged() -> None:
    for name in ("quick", "smoke3d", "sam2.1-hiera-t", "quick-0123456789", "A_b.c-9"):
        assert check_name(name, "suite") == name and slug(name) == name


def test_a_suite_name_that_leaves_out_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bench.toml"
    config.write_text('[suites."../../escape"]\nadapters = ["box"]\ntasks = ["phantom"]\n')
    with pytest.raises(ConfigError, match=r"bench\.toml: \[suites\.\.\./\.\./escape\] suite name"):
        load_config(config)


def test_a_run_id_that_leaves_out_is_refused(tmp_path: Path) -> None:
    from segbench.data.taskspec import discover_tasks

    suite = Suite("quick", "", ("box",), ("phantom",), None, 0, 1, tmp_path / "bench.toml")
    plan = make_plan(suite, discover_tasks(), RunOptions(device="cpu", run_id="../../escape", warmup=False))
    with pytest.raises(SegbenchError, match="run id '../../escape' is not a valid name"):
        execute(plan, tmp_path / "out", progress=False)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_the_cli_refuses_a_run_id_that_leaves_out(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("run", "--run-id", "../escape", "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 2 and "--run-id" in result.stderr and "not a valid name" in result.stderr
    assert not (tmp_path / "escape").exists()
