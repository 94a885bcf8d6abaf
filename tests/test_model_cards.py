"""Model cards (issue 18): every adapter's published facts, the measured parameters and FLOPs checked
against the architectures and against the committed file, the tasks' origin, and the leaderboard's
zero-shot marks on a task whose dataset a model's card lists."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import numpy as np
import pytest

from segbench import plugins
from segbench.data.specs import ORIGIN_ID
from segbench.data.taskspec import BUILTIN_TASK_DIR, discover_tasks, parse_task, resolve_includes
from segbench.errors import ConfigError
from segbench.interface import (
    Adapter,
    AdapterMeta,
    Capabilities,
    LoadOptions,
    ModelCard,
    Prediction,
    Prompt,
    Support,
)
from segbench.plugins import ADAPTER_MODULES
from segbench.reporting.cards import zero_shot
from segbench.reporting.leaderboard_json import schema
from segbench.reporting.report import build_site
from segbench.running.execute import adapter_facts, task_facts
from segbench.running.manifest import RunManifest
from segbench.running.model_cards import CARDS_FILE, measure, parameter_count, read_cards
from segbench.running.plan import AdapterSetup
from segbench.running.store import RunStore

from .synthetic import SyntheticTask, write_run

README = Path(__file__).resolve().parents[1] / "tasks" / "README.md"
BUILTIN = [name for name, cls in plugins.adapters().items() if cls.__module__ in ADAPTER_MODULES]
# adapters whose figures the tests measure again (seconds on a CPU); the others are checked on parameters
# built on the meta device, or only by `segbench cards`
CHEAP = ("box", "otsu", "support-mean", "support-nearest", "universeg")
META_BUILDABLE = ("sam-vit-b", "sam-vit-l", "sam-vit-h", "medsam", "medicosam", "sam-med2d")


def vocabulary() -> set[str]:
    """The ids of the table in tasks/README.md, "Origin"."""
    section = README.read_text().split("## Origin", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.M))


# --- tasks ----------------------------------------------------------------------------------------


def test_every_task_names_its_origin_from_the_vocabulary() -> None:
    known = vocabulary()
    tasks = discover_tasks()
    for path in sorted(BUILTIN_TASK_DIR.glob("*.toml")):
        import tomllib

        document = resolve_includes(tomllib.loads(path.read_text()), path)
        assert "origin" in document["task"], f"{path.name} has no [task] origin"
    for task in tasks.values():
        assert set(task.origin) <= known, f"{task.name}: {set(task.origin) - known} not in tasks/README.md"
    assert tasks["kvasir-incontext"].origin == tasks["kvasir"].origin == ("kvasir-seg",)  # included
    assert set(tasks["ct-slices"].origin) == {"amos22", "totalsegmentator"}
    assert tasks["la-heart"].origin == ("la-2018",) and tasks["oct-layers"].origin == ()


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("kvasir-seg", "must be a list"),
        (["Kvasir-SEG"], "lowercase"),
        (["a b"], "lowercase"),
        (["x", "x"], "more than once"),
    ],
)
def test_origin_is_validated(origin: Any, problem: str, tmp_path: Path) -> None:
    document = {
        "task": {"name": "t", "origin": origin},
        "data": {"reader": "phantom"},
        "labels": {"organ": 1},
    }
    with pytest.raises(ConfigError, match=problem):
        parse_task(document, tmp_path / "t.toml")
    document["task"]["origin"] = ["kvasir-seg", "msd-task02-heart", "brats2021"]
    assert parse_task(document, tmp_path / "t.toml").origin == ("kvasir-seg", "msd-task02-heart", "brats2021")


# --- cards ----------------------------------------------------------------------------------------


def test_every_adapter_has_a_card_with_its_source() -> None:
    known = vocabulary()
    for name in BUILTIN:
        meta = plugins.adapter_class(name).meta
        card = meta.card
        assert card.code and card.trained_on_source, f"{name}: card without code link or training source"
        assert all(ORIGIN_ID.match(i) for i in card.trained_on) and set(card.trained_on) <= known, name
        if meta.family == "baseline":
            assert card.trained_on == () and card.trained_on_complete, name
        else:
            assert card.paper.startswith("https://") and card.code.startswith("https://"), name
            assert card.trained_on, f"{name}: a learned model trained on nothing?"
    # fine-tuned from SAM: SA-1B is in their training data too; the SAM2 family starts from SA-1B and SA-V
    for name in ("medsam", "medicosam", "sam-med2d", "litemedsam"):
        assert "sa-1b" in plugins.adapter_class(name).meta.card.trained_on
    for name in ("medsam2", "medical-sam2", "sam2.1-hiera-t"):
        assert {"sa-1b", "sa-v"} <= set(plugins.adapter_class(name).meta.card.trained_on)


def test_zero_shot_rule() -> None:
    complete = {"trained_on": ["sa-1b"], "trained_on_complete": True}
    partial = {"trained_on": ["sa-med2d-20m", "amos22"], "trained_on_complete": False}
    assert zero_shot(["kvasir-seg"], complete) is True
    assert zero_shot(["amos22", "totalsegmentator"], partial) is False  # one of the task's sets is enough
    assert zero_shot(["kvasir-seg"], partial) is None  # not on a list that is not complete: unknown
    assert zero_shot([], complete) is None and zero_shot(["x"], None) is None and zero_shot(None, complete) is None


def test_nninteractive_marks_on_the_3d_tasks_follow_its_card() -> None:
    """nnInteractive's card names its collection of 120+ sets (arXiv 2503.08373) but none of its members, so on
    segbench's 3D tasks (BraTS; the 2018 left atrium) the pair is unknown, never zero-shot; a task's set once
    on the card makes that pair seen although the list is still incomplete, and leaves the other unknown."""
    card = plugins.adapter_class("nninteractive").meta.card
    record = card.describe()
    tasks = discover_tasks()
    brats, atrium = list(tasks["brats"].origin), list(tasks["la-heart"].origin)
    assert not card.trained_on_complete and "2503.08373" in card.trained_on_source
    for origin in (brats, atrium):
        assert not set(origin) & set(card.trained_on)  # no member of a segbench task is transcribed
        assert zero_shot(origin, record) is None
    listed = {**record, "trained_on": [*record["trained_on"], "brats2021"]}
    assert zero_shot(brats, listed) is False and zero_shot(atrium, listed) is None


# --- measured figures -----------------------------------------------------------------------------


class TinyNet(Adapter):
    """A test-only adapter whose counts are computed by hand: a 3x3 convolution (3 -> 8 channels, padded)
    over the 32x32 input in ``encode``, global mean, a linear layer 8 -> 2 in ``predict``."""

    meta: ClassVar[AdapterMeta] = AdapterMeta(
        "tiny-net", "test", "conv + linear", Capabilities(box=True), input_size=32, card=ModelCard(code="here")
    )

    def load(self, options: LoadOptions) -> None:
        import torch

        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 2)

    def encode(self, image: np.ndarray) -> Any:
        import torch

        return self.conv(torch.from_numpy(image).float().permute(2, 0, 1)[None])

    def predict(
        self, state: Any, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        self.head(state.mean(dim=(2, 3)))
        return Prediction(np.zeros((len(prompts or []), 32, 32), bool))


def test_counts_equal_the_layers_computed_by_hand() -> None:
    figures = measure(TinyNet)
    assert figures.params == (8 * 3 * 3 * 3 + 8) + (8 * 2 + 2)
    assert figures.encode_flops == 2 * (8 * 3 * 3 * 3) * (32 * 32)  # 2 FLOPs a multiply-add, one per output value
    assert figures.predict_flops == 2 * 8 * 2
    assert figures.sample.shape == (32, 32, 3) and figures.record()["per"] == "per 32x32 image, one box"


def sam_vit_b_encoder_parameters() -> int:
    """SAM's ViT-B image encoder from the published architecture (Kirillov et al. 2023, segment_anything's
    image_encoder.py): 16x16 patches to 768 channels, a 64x64 positional embedding, 12 blocks (12 heads,
    MLP 3072, relative positions: windows of 14 except the global blocks 2, 5, 8, 11 over 64), a neck to 256."""
    width, depth, mlp, head_dim, grid, window = 768, 12, 3072, 64, 64, 14
    patch = 16 * 16 * 3 * width + width
    position = grid * grid * width
    block = 2 * width + (width * 3 * width + 3 * width) + (width * width + width) + 2 * width
    block += width * mlp + mlp + mlp * width + width
    relative = sum(2 * (2 * (grid if i in (2, 5, 8, 11) else window) - 1) * head_dim for i in range(depth))
    neck = width * 256 + 2 * 256 + 256 * 256 * 9 + 2 * 256
    return patch + position + depth * block + relative + neck


def universeg_parameters() -> int:
    """UniverSeg (Butoi et al. 2023): 4 encoder and 3 decoder CrossBlocks of 64 features (a 3x3 CrossConv over
    [query, support] channels, then a 3x3 conv each for query and support), a 1x1 output conv."""

    def conv(cin: int, cout: int, k: int = 3) -> int:
        return cin * cout * k * k + cout

    def block(query: int, support: int) -> int:
        return conv(query + support, 64) + 2 * conv(64, 64)

    encoder = block(1, 2) + 3 * block(64, 64)
    decoder = 3 * block(128, 128)  # upsampled features and the skip, for query and support alike
    return encoder + decoder + conv(64, 1, 1)


def test_parameter_counts_match_the_published_architectures() -> None:
    import torch

    with torch.device("meta"):  # the layout alone: no weights computed
        sam = plugins.adapter_class("sam-vit-b")().build()  # type: ignore[attr-defined]
    assert parameter_count([sam.image_encoder]) == sam_vit_b_encoder_parameters() == 89_670_912
    assert measure("universeg", device="meta").params == universeg_parameters() == 1_182_785


def test_the_committed_figures_are_what_the_code_measures_now() -> None:
    import torch

    committed = read_cards(CARDS_FILE)
    document = json.loads(CARDS_FILE.read_text())
    missing = [n for n in BUILTIN if n not in committed and n not in document["not_measured"]]
    assert not missing, f"run `segbench cards --adapters {','.join(missing)}`"
    for name in CHEAP:
        now = measure(name).record()
        was = {key: committed[name][key] for key in now}
        assert now == was, (
            f"{name}: results/reference/model_cards.json is stale; run `segbench cards --adapters {name}`"
        )
    # the meta device (how `segbench cards --device meta` counts the big models) dispatches the same operators
    computed, shapes_only = committed["universeg"], measure("universeg", device="meta").record()
    assert shapes_only["counted_on"] == "meta" and shapes_only["flops"] == computed["flops"] > 0
    assert committed["medsam"]["counted_on"] == "cpu" and committed["sam-vit-b"]["counted_on"] == "meta"
    assert committed["medsam"]["flops"] == committed["sam-vit-b"]["flops"]  # one ViT-B at 1024, counted both ways
    for name in META_BUILDABLE:  # architectures that build on the meta device: their parameters, at no cost
        if name not in committed:
            continue
        with torch.device("meta"):
            model = plugins.adapter_class(name)().build()  # type: ignore[attr-defined]
        assert parameter_count([model]) == committed[name]["params"], f"{name}: stale parameter count"


def test_a_run_records_the_card_and_the_origin() -> None:
    facts = adapter_facts(AdapterSetup("sam-med2d", LoadOptions(), "random")).to_dict()
    assert facts["card"]["trained_on"] == list(plugins.adapter_class("sam-med2d").meta.card.trained_on)
    assert {"kvasir-seg", "cvc-clinicdb", "amos22"} <= set(facts["card"]["trained_on"])  # its authors' issue 43
    assert facts["measured"] == read_cards().get("sam-med2d")
    assert task_facts(discover_tasks()["ct-slices"]).origin == ["amos22", "totalsegmentator"]


# --- the leaderboard's marks ----------------------------------------------------------------------


CARDS = {
    # trained on the kvasir task's dataset, with a complete list: not zero-shot there, zero-shot on drive
    "seen": {"trained_on": ["kvasir-seg"], "trained_on_complete": True, "code": "https://x.example", "paper": ""},
    "clean": {"trained_on": [], "trained_on_complete": True, "code": "segbench", "paper": ""},
    "vague": {"trained_on": ["megamedical"], "trained_on_complete": False, "code": "https://y.example", "paper": ""},
}


def marked_run(tmp_path: Path) -> Path:
    run = write_run(
        tmp_path / "run",
        {"seen": 0.95, "clean": 0.6, "vague": 0.3},
        [SyntheticTask("kvasir", 12), SyntheticTask("drive", 12)],
    )
    store = RunStore(run)
    data = store.manifest().to_dict()
    data["tasks"]["kvasir"]["origin"] = ["kvasir-seg"]
    data["tasks"]["drive"]["origin"] = ["drive"]
    for name, card in CARDS.items():
        data["adapters"][name]["card"] = card
        data["adapters"][name]["measured"] = {"params": 1000, "flops": 2_000_000_000, "per": "per 8x8 image, one box"}
    store.write_manifest(RunManifest.from_json(data))
    return run


def test_leaderboard_marks_pairs_whose_dataset_a_card_lists(tmp_path: Path) -> None:
    build_site([marked_run(tmp_path)], tmp_path / "site")
    site = tmp_path / "site"
    document = json.loads((site / "leaderboard.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(document)

    def cells(overview: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any] | None]:
        tasks = [c["task"] for c in overview["columns"]]
        return {(r["adapter"], t): cell for r in overview["rows"] for t, cell in zip(tasks, r["cells"], strict=True)}

    full, zero = cells(document["overview"]), cells(document["zero_shot_overview"])
    assert {key: cell["zero_shot"] for key, cell in full.items() if cell} == {
        ("seen", "kvasir"): False,
        ("seen", "drive"): True,
        ("clean", "kvasir"): True,
        ("clean", "drive"): True,
        ("vague", "kvasir"): None,
        ("vague", "drive"): None,
    }
    # the zero-shot view drops the one marked pair and ranks kvasir again without it; drive is unchanged
    assert full[("seen", "kvasir")]["rank"] == 1 and full[("clean", "kvasir")]["rank"] == 2
    assert zero[("seen", "kvasir")] is None and zero[("clean", "kvasir")]["rank"] == 1
    assert zero[("vague", "kvasir")]["rank"] == 2 and full[("vague", "kvasir")]["rank"] == 3
    assert {k: c["rank"] for k, c in zero.items() if k[1] == "drive" and c} == {
        k: c["rank"] for k, c in full.items() if k[1] == "drive" and c
    }
    rows = {r["adapter"]: r for r in document["zero_shot_overview"]["rows"]}
    assert rows["seen"]["mean_rank"] == full[("seen", "drive")]["rank"] and rows["seen"]["mean_rank_over"] == ["drive"]
    card = next(a for a in document["adapters"] if a["name"] == "seen")["card"]
    assert card["trained_on"] == ["kvasir-seg"] and card["params"] == 1000 and card["flops_per"].startswith("per 8x8")
    # the pages: a mark and the legend in the overview, the zero-shot page, the card on the adapter's page
    index = (site / "index.html").read_text()
    assert index.count('class="seen"') == 1 and "dataset in this model&#39;s training data" in index
    assert 'href="zero-shot.html"' in index and (site / "zero-shot.html").is_file()
    assert 'class="seen"' not in (site / "zero-shot.html").read_text()
    page = (site / "adapter-seen.html").read_text()
    assert "<code>kvasir-seg</code>" in page and "2.0 GFLOPs per 8x8 image, one box" in page
    assert "no: kvasir-seg in its training data" in page
