"""Checkpoint registry: safe loading, layout normalisation, sha256 checks, clear messages."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest
import torch

from segbench.interface import CheckpointSpec
from segbench.weights import checkpoints
from segbench.weights.checkpoints import CheckpointError, CheckpointMissing


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 3)
        self.head = torch.nn.Conv2d(3, 1, 1)


def spec_for(path: Path, name: str = "tiny") -> CheckpointSpec:
    data = path.read_bytes()
    return CheckpointSpec(name, "tiny.pth", path.resolve().as_uri(), hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "checkpoints"


@pytest.mark.parametrize("wrap", ["plain", "model", "model_state_sam", "module", "state_dict"])
def test_layouts_normalise_to_the_plain_state_dict(wrap: str, tmp_path: Path) -> None:
    state = Tiny().state_dict()
    saved = {
        "plain": state,
        "model": {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3},
        "model_state_sam": {"model_state": {f"sam.{k}": v for k, v in state.items()}},
        "module": {f"module.{k}": v for k, v in state.items()},
        "state_dict": {"state_dict": state},
    }[wrap]
    torch.save(saved, tmp_path / "c.pth")
    loaded = checkpoints.read_state_dict(tmp_path / "c.pth", strip_prefixes=("sam.",))
    assert loaded.keys() == state.keys()
    model = Tiny()
    checkpoints.apply_state_dict(model, loaded, "c.pth")
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)


def test_pickled_objects_are_refused_not_executed(tmp_path: Path) -> None:
    torch.save({"model": Tiny().state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="refusing to load"):
        checkpoints.read_state_dict(tmp_path / "c.pth")


def test_wrong_layout_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    state["extra.weight"] = state.pop("head.weight")
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): head\.weight; 1 unexpected key\(s\): extra"):
        checkpoints.apply_state_dict(Tiny(), state, "c.pth")


def test_fetch_checks_sha256_and_moves_atomically(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "tiny.pth"
    torch.save(Tiny().state_dict(), source)
    spec = spec_for(source)
    assert checkpoints.fetch(spec, progress=False) == cache / "tiny.pth"
    assert checkpoints.resolve(spec).source == "cache"
    (cache / "tiny.pth").unlink()
    corrupted = CheckpointSpec("tiny", "tiny.pth", spec.url, "0" * 64, spec.size)
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoints.fetch(corrupted, progress=False)
    leftovers = [p.name for p in cache.iterdir() if not p.name.endswith(".sha256.json")]
    assert leftovers == []  # neither the bad file nor a half-written part is left behind


def test_fetch_refuses_a_file_with_no_published_sha256(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "tiny.pth"
    torch.save(Tiny().state_dict(), source)
    xxh_only = CheckpointSpec(
        "tiny", "tiny.pth", source.as_uri(), "", 0, xxh128=checkpoints.file_digest(source, "xxh128")
    )
    with pytest.raises(CheckpointMissing, match="only files with a published sha256") as error:
        checkpoints.fetch(xxh_only, progress=False)
    assert str(cache / "tiny.pth") in str(error.value) and "weights fetch" not in str(error.value)
    assert not cache.exists() or not any(cache.iterdir())  # nothing was downloaded


def test_cached_file_with_a_wrong_hash_is_an_error(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "tiny.pth"
    torch.save(Tiny().state_dict(), source)
    spec = spec_for(source)
    cache.mkdir(parents=True)
    (cache / "tiny.pth").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        checkpoints.resolve(spec)


def test_missing_checkpoint_says_where_to_get_it_and_where_to_put_it(cache: Path) -> None:
    spec = CheckpointSpec("sam-vit-b", "sam_vit_b_01ec64.pth", "https://dl.fbaipublicfiles.com/x.pth", "a" * 64, 10)
    with pytest.raises(CheckpointMissing) as error:
        checkpoints.resolve(spec)
    message = str(error.value)
    assert "https://dl.fbaipublicfiles.com/x.pth" in message and str(cache / "sam_vit_b_01ec64.pth") in message
    assert "--checkpoint sam-vit-b=" in message


def test_override_may_be_another_file_and_is_recorded(tmp_path: Path) -> None:
    source = tmp_path / "tuned.pth"
    torch.save(Tiny().state_dict(), source)
    spec = CheckpointSpec("tiny", "tiny.pth", "https://example.org/tiny.pth", "b" * 64, 1)
    found = checkpoints.resolve(spec, source)
    assert found.source == "override" and not found.official and found.sha256 == spec_for(source).sha256


def test_an_xxh128_pin_is_checked_where_no_sha256_is_published(tmp_path: Path, cache: Path) -> None:
    cache.mkdir(parents=True)
    torch.save(Tiny().state_dict(), cache / "tiny.pth")
    right = CheckpointSpec(
        "tiny", "tiny.pth", "https://example.org/t", "", 0, xxh128=checkpoints.file_digest(cache / "tiny.pth", "xxh128")
    )
    found = checkpoints.resolve(right)
    assert found.official and found.sha256 == checkpoints.sha256_file(cache / "tiny.pth")
    wrong = CheckpointSpec("tiny", "tiny.pth", "https://example.org/t", "", 0, xxh128="0" * 32)
    with pytest.raises(CheckpointError, match="xxh128 .* does not match the pinned 0000"):
        checkpoints.resolve(wrong)


def test_a_file_with_no_published_checksum_is_accepted_unverified(cache: Path) -> None:
    spec = CheckpointSpec("tiny", "tiny.pth", "https://example.org/t", "", 0, manual_download=True)
    with pytest.raises(CheckpointMissing, match=r"\(tiny\.pth, no published checksum\) not found"):
        checkpoints.resolve(spec)
    cache.mkdir(parents=True)
    torch.save(Tiny().state_dict(), cache / "tiny.pth")
    found = checkpoints.resolve(spec)
    assert not found.official and found.sha256 == checkpoints.sha256_file(cache / "tiny.pth")


def test_skip_objects_reads_the_model_and_never_builds_the_pickled_objects(tmp_path: Path) -> None:
    model = Tiny()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": torch.optim.Adam(model.parameters()),
            "args": argparse.Namespace(lr=1),
        },
        tmp_path / "c.pth",
    )
    loaded = checkpoints.read_state_dict(tmp_path / "c.pth", skip_objects=True)
    assert loaded.keys() == model.state_dict().keys()
    torch.save({"model": {"weight": argparse.Namespace(lr=1)}}, tmp_path / "object.pth")
    with pytest.raises(CheckpointError, match="no state dict found"):
        checkpoints.read_state_dict(tmp_path / "object.pth", skip_objects=True)
