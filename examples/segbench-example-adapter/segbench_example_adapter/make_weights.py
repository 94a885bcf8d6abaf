"""Write the ``tinyseg-v1`` checkpoint: ``python -m segbench_example_adapter.make_weights [PATH]``.

A lab runs its training script here; this example writes its hand-set weights
(:func:`segbench_example_adapter.tinyseg_net.reference_state_dict`) as a plain state dict, the form
segbench loads with ``torch.load(weights_only=True)``. By default the file goes where the package
bundles it (``weights/tinyseg-v1.pt``); its sha256 and size are then pinned in ``tinyseg.TINYSEG_V1``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from segbench_example_adapter.tinyseg_net import reference_state_dict

DEFAULT = Path(__file__).parent / "weights" / "tinyseg-v1.pt"


def write(path: Path = DEFAULT) -> str:
    """Write the checkpoint to ``path`` and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference_state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    digest = write(target)
    print(f"{target}: sha256 {digest}, {target.stat().st_size} bytes")
