"""Checkpoint registry: safe loading, layout normalisation, sha256 checks, clear messages."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest
import torch

from segbench import checkpoints
from segbench.checkpoints import CheckpointError, CheckpointMissing, CheckpointSpec


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


def test_a_checkpoint_without_a_published_sha256_is_used_but_never_called_official(tmp_path: Path,
                                                                                    cache: Path) -> None:
    source = tmp_path / "tiny.pth"
    torch.save(Tiny().state_dict(), source)
    unpinned = CheckpointSpec("tiny", "tiny.pth", source.resolve().as_uri(), "", source.stat().st_size)
    with pytest.raises(CheckpointMissing, match="no published sha256"):
        checkpoints.resolve(unpinned)
    fetched = checkpoints.fetch(unpinned, progress=False)
    found = checkpoints.resolve(unpinned)
    assert found.path == fetched and not found.official
    assert found.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
