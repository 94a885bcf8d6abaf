"""The prompts a dataset ships (``Case.given``), as the adapter contract's prompt objects, so a protocol
can replay a challenge's own prompts instead of drawing its own.

CVPR 2024 boxes: 2D rows ``[x_min, y_min, x_max, y_max]`` become a :class:`Prompt`; 3D rows
``[x_min, y_min, z_min, x_max, y_max, z_max]`` a :class:`VolumePrompt` with that box on the middle
slice of the z range (the 2024 challenge's own reading: MedSAM's inference boxes the middle slice and
propagates). CVPR 2025 box dicts carry the middle slice themselves (``z_mid`` and its ``z_mid_*``
box). Object ``i`` is the mask value ``i + 1`` (both challenges). Clicks stay in ``Case.given`` as the
files store them: their replay belongs to the iterative protocol that consumes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segbench.data.case import Case
from segbench.interface import Prompt, VolumePrompt

BOX_DICT_KEYS = ("z_min", "z_max", "z_mid", "z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.asarray([x0, y0, x1, y1], dtype=np.float64)


def _volume_prompt(box: Sequence[float] | Mapping[str, Any]) -> VolumePrompt:
    if isinstance(box, Mapping):
        missing = [key for key in BOX_DICT_KEYS if key not in box]
        if missing:
            raise ValueError(f"a CVPR 2025 box lacks {missing}")
        z = int(box["z_mid"])
        flat = _box(box["z_mid_x_min"], box["z_mid_y_min"], box["z_mid_x_max"], box["z_mid_y_max"])
        return VolumePrompt({z: Prompt(box=flat)}, z, (int(box["z_min"]), int(box["z_max"])))
    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    z = int((z0 + z1) // 2)
    return VolumePrompt({z: Prompt(box=_box(x0, y0, x1, y1))}, z, (int(z0), int(z1)))


def given_boxes(case: Case) -> dict[int, Prompt | VolumePrompt]:
    """Mask value -> the dataset's box prompt for that object; empty when the case ships none."""
    boxes = case.given.get("boxes")
    if not boxes:
        return {}
    out: dict[int, Prompt | VolumePrompt] = {}
    for index, box in enumerate(boxes):
        if case.ndim == 2:
            out[index + 1] = Prompt(box=_box(*(float(v) for v in box)))
        else:
            out[index + 1] = _volume_prompt(box)
    return out
