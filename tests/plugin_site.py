"""A third-party adapter plugin installed for a test without pip: its module and a ``.dist-info`` (with the
``segbench.adapters`` entry point and ``top_level.txt``) in a folder put on PYTHONPATH, which is all
``importlib.metadata`` needs to find the distribution and segbench's plugin manager to load it."""

from __future__ import annotations

import os
from pathlib import Path


def install_plugin(site: Path, module: str, source: str, distribution: str, version: str = "0.0") -> dict[str, str]:
    """Write ``module`` (its ``source``) as distribution ``distribution`` into ``site``; the environment
    (PYTHONPATH) under which a ``segbench`` subprocess sees it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[segbench.adapters]\n{module} = {module}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
