"""Checkpoint provenance under attack: a forged sidecar, a sidecar next to a user's file, random bytes and
key names carrying terminal escape codes. Small files and specs built here; nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from segbench.interface import CheckpointSpec
from segbench.weights import checkpoints
from segbench.weights.checkpoints import CheckpointError


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 2)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(Tiny().state_dict(), path)
    return path


def official_pair(tmp_path: Path, cache: Path) -> tuple[CheckpointSpec, Path, Path]:
    """A pinned official file resolved once from the cache (so its sidecar exists) and a different file of
    the same size (same architecture, other random weights)."""
    official = saved(cache / "tiny.pth", seed=1)
    (tmp_path / "elsewhere").mkdir()
    other = saved(tmp_path / "elsewhere" / "tiny.pth", seed=2)  # same name: torch.save's archive names it
    assert official.stat().st_size == other.stat().st_size and sha256_of(official) != sha256_of(other)
    spec = CheckpointSpec(
        "tiny", "tiny.pth", "https://example.org/tiny.pth", sha256_of(official), official.stat().st_size
    )
    found = checkpoints.resolve(spec)
    assert found.official and found.sha256 == spec.sha256
    return spec, official, other


def test_a_forged_sidecar_with_matching_size_and_mtime_does_not_make_a_file_official(
    tmp_path: Path, cache: Path
) -> None:
    spec, official, other = official_pair(tmp_path, cache)
    sidecar = cache / "tiny.pth.sha256.json"
    memo = json.loads(sidecar.read_text())
    assert memo["sha256"] == spec.sha256
    stat = official.stat()
    time.sleep(0.05)  # a forgery comes later than the memo: past the kernel's coarse timestamp tick (<= 10 ms)
    shutil.copyfile(other, official)  # another file in the cache path...
    os.utime(official, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...with the original's mtime
    assert official.stat().st_size == stat.st_size and official.stat().st_mtime_ns == stat.st_mtime_ns
    # the forger's sidecar: the key fields the file now shows a user (size, mtime) and the pinned sha
    forged = dict(memo, sha256=spec.sha256)
    forged["key"] = dict(memo["key"], size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    sidecar.write_text(json.dumps(forged))

    real = sha256_of(other)
    with pytest.raises(CheckpointError, match="does not match the pinned") as error:
        checkpoints.resolve(spec)
    assert real in str(error.value)  # the file's real sha256 is what is reported...
    assert json.loads(sidecar.read_text())["sha256"] == real  # ...and what the memo now remembers
    unpinned = CheckpointSpec("tiny", "tiny.pth", spec.url, "", 0)  # where nothing is pinned, it is recorded
    found = checkpoints.resolve(unpinned)
    assert not found.official and found.sha256 == real


def test_an_official_flag_in_a_sidecar_is_ignored(tmp_path: Path, cache: Path) -> None:
    """A memo cannot assert ``official``: only its digest, compared with the pin, is read from it."""
    spec, official, _ = official_pair(tmp_path, cache)
    sidecar = cache / "tiny.pth.sha256.json"
    memo = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(dict(memo, sha256="f" * 64, official=True)))
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        checkpoints.resolve(spec)


def test_an_override_is_hashed_from_its_bytes_even_with_a_sidecar_next_to_it(tmp_path: Path, cache: Path) -> None:
    spec, official, other = official_pair(tmp_path, cache)
    stat = other.stat()
    key = {"inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
    lie = json.dumps({"key": key, "sha256": spec.sha256, "official": True})
    (tmp_path / "elsewhere" / "tiny.pth.sha256.json").write_text(lie)  # a perfect memo, lying about the bytes
    found = checkpoints.resolve(spec, other)
    assert found.source == "override" and not found.official and found.sha256 == sha256_of(other)
    assert (tmp_path / "elsewhere" / "tiny.pth.sha256.json").read_text() == lie  # nothing written next to a user's file
    same = tmp_path / "copy_of_official.pth"
    shutil.copyfile(official, same)
    found = checkpoints.resolve(spec, same)  # the official bytes given by hand are the official file
    assert found.official and found.sha256 == spec.sha256
    assert not (tmp_path / "copy_of_official.pth.sha256.json").exists()


def test_random_bytes_are_unreadable_not_a_pickle(tmp_path: Path) -> None:
    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(4096))
    for skip_objects in (False, True):
        with pytest.raises(CheckpointError) as error:
            checkpoints.read_state_dict(noise, skip_objects=skip_objects)
        message = str(error.value)
        assert str(noise) in message
        assert "unreadable: not a PyTorch checkpoint (zip or legacy format expected)" in message
        assert "pickle" not in message.lower()


def test_a_truncated_zip_checkpoint_is_named_and_not_called_a_pickle(tmp_path: Path) -> None:
    whole = saved(tmp_path / "whole.pth", seed=3)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint") as error:
        checkpoints.read_state_dict(cut)
    assert str(cut) in str(error.value)


def test_escape_codes_in_key_names_never_reach_the_error_text(tmp_path: Path) -> None:
    state = Tiny().state_dict()
    state["\x1b[31mhead.evil\x1b[0m\x1b]0;owned\x07\n\r"] = state.pop("head.bias")
    path = tmp_path / "escapes.pth"
    torch.save(state, path)
    loaded = checkpoints.read_state_dict(path)
    with pytest.raises(CheckpointError) as error:
        checkpoints.apply_state_dict(Tiny(), loaded, path)
    message = str(error.value)
    assert str(path) in message and "head.evil" in message and "head.bias" in message
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in message), repr(message)
    assert "owned" not in message  # an OSC (window title) sequence is removed whole


def test_clean_text_keeps_printable_text_and_removes_every_control() -> None:
    assert checkpoints.clean_text("plain ü 日本 key.weight") == "plain ü 日本 key.weight"
    assert checkpoints.clean_text("a\x1b[1;31mb\x1b[0mc\x1bMd\x9b2Je\x00") == "abcd?2Je?"
