"""Write the ``tinyseg-v1`` checkpoint: ``python -m segbench_example_adapter.make_weights [PATH]``.

A lab runs its training script here; this example writes its hand-set weights
(:func:`segbench_example_adapter.tinyseg_net.reference_state_dict`) as the JSON text of
:func:`segbench_example_adapter.tinyseg_net.weights_text`. By default the file goes where the package
bundles it (``weights/tinyseg-v1.json``); its sha256 and size are pinned in ``tinyseg.TINYSEG_V1``. The
text is the same bytes on every run and every torch version, so rerunning this script reproduces the
pinned file exactly (the tests check that it does).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from segbench_example_adapter.tinyseg_net import reference_state_dict, weights_text

DEFAULT = Path(__file__).parent / "weights" / "tinyseg-v1.json"


def write(path: Path = DEFAULT) -> str:
    """Write the checkpoint to ``path`` and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = weights_text(reference_state_dict()).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    digest = write(target)
    print(f"{target}: sha256 {digest}, {target.stat().st_size} bytes")
