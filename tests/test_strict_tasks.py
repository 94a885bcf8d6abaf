"""Strict task and suite files: a typo or a wrong type is an error naming the file and the key,
never ignored (``mask_treshold`` once moved otsu's Kvasir Dice 0.590 → 0.508 without a word) and
never a traceback (``level = "forty"``, a bad ``case_pattern``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from segbench.data.readers import BUILTIN_READERS
from segbench.data.readers.base import GLOB_KEYS, GlobCases, Reader
from segbench.data.suites import default_config, load_config
from segbench.data.taskspec import BUILTIN_TASK_DIR, discover_tasks, load_task, parse_task
from segbench.errors import ConfigError

KVASIR = (BUILTIN_TASK_DIR / "kvasir.toml").read_text()
REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str, name: str = "typo.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# (edit of kvasir.toml, what the message must say): the key named, with the near miss where there is one
TYPOS = {
    "mask_treshold": (
        ("mask_threshold = 127", "mask_treshold = 127"),
        r"\[data\] of reader 'image_mask_pairs': unknown key 'mask_treshold' "
        r"\(did you mean 'mask_threshold'\?\)",
    ),
    "[evalution]": (
        ("[prompts]", "[evalution]\nnsd_tolerance = 1.0\n\n[prompts]"),
        r"top level: unknown table \[evalution\] \(did you mean \[evaluation\]\?\)",
    ),
    "dimm": (('license = "', 'dimm = 3\nlicense = "'), r"\[task\]: unknown key 'dimm' \(did you mean 'dim'\?\)"),
    "[dta]": (("[data]", "[dta]"), r"top level: unknown table \[dta\] \(did you mean \[data\]\?\)"),
    "imges": (("images =", "imges ="), r"unknown key 'imges' \(did you mean 'images'\?\)"),
    "protocol px typo": (
        ('protocols = ["box"]', 'protocols = [{ kind = "box_jitter", pxx = 3 }]'),
        r"\[prompts\] protocol 'box_jitter': unknown key 'pxx' \(did you mean 'px'\?\)",
    ),
    "intensity typo": (
        ("[labels]", '[intensity]\npolicy = "minmax"\nnonzer = true\n\n[labels]'),
        r"\[intensity\]: unknown key 'nonzer' \(did you mean 'nonzero'\?\)",
    ),
    "prompts typo": (
        ('protocols = ["box"]', 'protocols = ["box"]\ninstance = "components"'),
        r"\[prompts\]: unknown key 'instance' \(did you mean 'instances'\?\)",
    ),
    "support typo": (
        ("[prompts]", "[support]\npool_fracton = 0.5\n\n[prompts]"),
        r"\[support\]: unknown key 'pool_fracton' \(did you mean 'pool_fraction'\?\)",
    ),
    "label table typo": (
        ('polyp = "nonzero"', 'polyp = { values = [255], fiel = "x.png" }'),
        r"\[labels\.polyp\]: unknown key 'fiel' \(did you mean 'file'\?\)",
    ),
}

BAD_VALUES = {
    "level forty": (
        ("[labels]", '[intensity]\npolicy = "window"\nlevel = "forty"\n\n[labels]'),
        r"\[intensity\] level must be a finite number, got 'forty'",
    ),
    "bad case_pattern": (
        ("mask_threshold = 127", "mask_threshold = 127\ncase_pattern = '(?P<n>\\d+'"),
        r"\[data\] case_pattern is not a valid regular expression",
    ),
    "threshold string": (
        ("mask_threshold = 127", 'mask_threshold = "high"'),
        r"\[data\] mask_threshold must be a finite number, got 'high'",
    ),
    "threshold nan": (("mask_threshold = 127", "mask_threshold = nan"), r"\[data\] mask_threshold must be a finite"),
    "dim string": (('license = "', 'dim = "3"\nlicense = "'), r"\[task\] dim must be an integer, got '3'"),
    "name number": (('name = "kvasir"', "name = 7"), r"\[task\] name must be a string, got 7"),
    "policy unknown": (
        ("[labels]", '[intensity]\npolicy = "loud"\n\n[labels]'),
        r"\[intensity\] policy must be one of",
    ),
    "nonzero string": (
        ("[labels]", '[intensity]\npolicy = "percentile"\nnonzero = "yes"\n\n[labels]'),
        r"\[intensity\] nonzero must be true or false",
    ),
    "nsd bool": (
        ("[prompts]", "[evaluation]\nnsd_tolerance = true\n\n[prompts]"),
        r"\[evaluation\] nsd_tolerance must be a finite number, got True",
    ),
    "exclude string": (
        ("mask_threshold = 127", 'mask_threshold = 127\nexclude = "Kvasir-SEG/images/x"'),
        r"\[data\] exclude must be a list of strings",
    ),
    "mask_resize choice": (
        ("mask_threshold = 127", 'mask_threshold = 127\nmask_resize = "bilinear"'),
        r"\[data\] mask_resize must be one of \['none', 'nearest'\]",
    ),
    "template unknown field": (("{name}", "{nmae}"), r"\[data\] mask uses unknown field\(s\) \['nmae'\]"),
    "unclosed template": (("{name}", "{name"), r"\[data\] mask is not a valid template"),
    "spacing inf": (
        ("mask_threshold = 127", "mask_threshold = 127\nspacing = [1.0, inf]"),
        r"\[data\] spacing must be 2 positive numbers",
    ),
    "protocol list of kinds": (('protocols = ["box"]', 'protocols = [{ kind = ["box"] }]'), r"\[prompts\]"),
}


def _edited(edit: tuple[str, str]) -> str:
    old, new = edit
    assert old in KVASIR, old  # the test edits the shipped file; it must hold the text edited
    return KVASIR.replace(old, new, 1)


@pytest.mark.parametrize("case", sorted(TYPOS))
def test_typos_are_errors_naming_file_key_and_near_miss(tmp_path: Path, case: str) -> None:
    edit, message = TYPOS[case]
    path = _write(tmp_path, _edited(edit))
    with pytest.raises(ConfigError, match=message) as caught:
        load_task(path)
    assert caught.value.path == str(path)


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_errors_naming_file_and_key(tmp_path: Path, case: str) -> None:
    edit, message = BAD_VALUES[case]
    path = _write(tmp_path, _edited(edit))
    with pytest.raises(ConfigError, match=message) as caught:
        load_task(path)
    assert caught.value.path == str(path)


def test_the_unedited_file_parses() -> None:
    """The control of the two tests above: each failure comes from its edit alone."""
    spec = load_task(BUILTIN_TASK_DIR / "kvasir.toml")
    assert spec.data["mask_threshold"] == 127


def test_every_shipped_task_and_suite_file_parses() -> None:
    tasks = discover_tasks()
    assert len(tasks) == len(list(BUILTIN_TASK_DIR.glob("*.toml")))
    for config in (default_config(), REPO / "benchmark.toml"):
        suites = load_config(config).suites
        assert suites and all(set(s.tasks) <= set(tasks) for s in suites.values())


def test_every_reader_declares_the_keys_its_shipped_tasks_use() -> None:
    for spec in discover_tasks().values():
        declared = set(BUILTIN_READERS[spec.reader].DATA_KEYS) | {"reader", "dataset", "spacing", "resize"}
        assert set(spec.data) <= declared, spec.name


def test_a_plugin_reader_declares_its_own_keys(tmp_path: Path) -> None:
    """A reader not built in is checked when it is made, against its own DATA_KEYS."""

    class Listing(Reader):
        DATA_KEYS = {**GLOB_KEYS, "colour": ("red", "green")}

        def __init__(self, task, data_root):
            super().__init__(task, data_root)
            self.cases = GlobCases(self)

        def case_ids(self) -> list[str]:
            return list(self.cases.paths)

        def read(self, case_id: str):
            raise NotImplementedError

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("x")

    def spec(**data):
        return parse_task(
            {"task": {"name": "p"}, "data": {"reader": "listing", "dataset": "d", **data}, "labels": {"x": "nonzero"}},
            tmp_path / "p.toml",
        )

    assert Listing(spec(images="*.txt", colour="red"), tmp_path).case_ids() == ["a"]  # parse leaves plugin keys
    with pytest.raises(ConfigError, match=r"p\.toml: \[data\] of reader 'listing': unknown key 'colur'"):
        Listing(spec(images="*.txt", colur="red"), tmp_path)
    with pytest.raises(ConfigError, match=r"p\.toml: \[data\] colour must be one of \['red', 'green'\]"):
        Listing(spec(images="*.txt", colour="blue"), tmp_path)
    with pytest.raises(ConfigError, match=r"p\.toml: \[data\] images has a '\.\.' component"):
        Listing(spec(images="../*.txt"), tmp_path)


SUITE = '[suites.mine]\nadapters = ["box"]\ntasks = ["phantom"]\n'
SUITE_ERRORS = {
    "unknown key": (SUITE + "limt = 2\n", r"\[suites\.mine\]: unknown key 'limt' \(did you mean 'limit'\?\)"),
    "unknown top level": (
        "task_dir = ['x']\n" + SUITE,
        r"top level: unknown key 'task_dir' \(did you mean 'task_dirs'\?\)",
    ),
    "seed string": (SUITE + 'seed = "1"\n', r"\[suites\.mine\] seed must be an integer, got '1'"),
    "limit zero": (SUITE + "limit = 0\n", r"\[suites\.mine\] limit must be a positive integer"),
    "protocol typo": (
        SUITE + 'protocols = [{ kind = "iterative", clicks = 2, strat = "box" }]\n',
        r"\[suites\.mine\] protocol 'iterative': unknown key 'strat' \(did you mean 'start'\?\)",
    ),
    "protocols string": (SUITE + 'protocols = "box"\n', r"\[suites\.mine\] protocols must be a non-empty list"),
    "suite not a table": ("[suites]\nmine = 3\n", r"\[suites\.mine\] must be a table"),
    "binary": (None, r"bench\.toml: not UTF-8|bench\.toml: cannot read|bench\.toml: not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(SUITE_ERRORS))
def test_suite_files_are_strict(tmp_path: Path, case: str) -> None:
    text, message = SUITE_ERRORS[case]
    path = tmp_path / "bench.toml"
    if text is None:
        path.write_bytes(b"\xff\xfe\x00bad")
    else:
        path.write_text(text)
        tomllib.loads(text)  # valid TOML: the error is segbench's, not the TOML parser's
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_misspelled_suite_gets_a_near_miss() -> None:
    with pytest.raises(ConfigError, match=r"no suite 'quik' \(did you mean 'quick'\?\)"):
        load_config().suite("quik")
