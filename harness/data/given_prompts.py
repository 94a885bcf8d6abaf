"""The prompts a dataset ships (``Case.given``), as the adapter contract's prompt objects, so a protocol
can replay a challenge's own prompts instead of drawing its own.

CVPR 2024 boxes: 2D rows ``[x_min, y_min, x_max, y_max]`` become a :class:`Prompt`; 3D rows
``[x_min, y_min, z_min, x_max, y_max, z_max]`` a :class:`VolumePrompt` with that box on the middle
slice of the z range (the 2024 challenge's own reading: MedSAM's inference boxes the middle slice and
propagates). CVPR 2025 box dicts carry the middle slice themselves (``z_mid`` and its ``z_mid_*``
box). Object ``i`` is the mask value ``i + 1`` (both challenges).

CVPR 2025 clicks (JunMa11/CVPR-MedSegFMCompetition ``CVPR25_iter_eval.py``): per object ``{"fg": [...],
"bg": [...]}`` of voxel indices ``(z, y, x)`` (the script appends ``list(center)`` of
``np.argwhere``-ordered coordinates), and ``clicks_order`` per object, one entry per click step:
``"fg"``, ``"bg"``, or None where the script placed no click (the object was already perfect). Step
``k`` of the replay takes the ``k``-th entry, drawing the next unused click of that list; a file with
clicks and no ``clicks_order`` is read foreground clicks first (its order is not recorded).

:func:`given_prompts` gives them to the ``given`` protocol kinds (:mod:`segbench.protocols.given_kinds`)
as :class:`segbench.protocols.base.GivenPrompts`, by task label: a label is the object of its single
mask value; a label without one, or whose object has no box in the file, carries the problem instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segbench.data.case import Case
from segbench.errors import DataError
from segbench.interface import Prompt, VolumePrompt
from segbench.protocols.base import Click, GivenPrompts

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


def _clicks(case: Case, index: int) -> tuple[Click | None, ...]:
    """Object ``index``'s recorded clicks, one per step (module docstring)."""
    clicks = case.given.get("clicks") or []
    if index >= len(clicks):
        return ()
    record = clicks[index]
    where = case.sources[-1] if case.sources else case.case_id
    if not isinstance(record, Mapping):
        raise DataError(where, f"clicks of object {index} are {type(record).__name__}, not a dict of fg/bg lists")
    lists = {key: list(record.get(key) or []) for key in ("fg", "bg")}
    orders = case.given.get("clicks_order")
    order = (
        orders[index]
        if orders is not None and index < len(orders)
        else ["fg"] * len(lists["fg"]) + ["bg"] * len(lists["bg"])
    )
    used = {"fg": 0, "bg": 0}
    out: list[Click | None] = []
    for entry in order:
        if entry is None:
            out.append(None)
            continue
        if entry not in used or used[entry] >= len(lists[entry]):
            raise DataError(where, f"clicks_order of object {index} names a {entry!r} click its clicks lack")
        point = tuple(int(v) for v in lists[entry][used[entry]])
        if len(point) != case.ndim:
            raise DataError(where, f"a click of object {index} is {list(point)}, not a {case.ndim}D index")
        used[entry] += 1
        out.append((point, 1 if entry == "fg" else 0))
    return tuple(out)


def given_prompts(case: Case, values: Mapping[str, tuple[int, ...] | None]) -> dict[str, GivenPrompts]:
    """Each label of ``values`` (label name -> its mask values) -> the prompts the case's file ships for
    it, or the problem (naming the file) that it has none."""
    where = case.sources[-1].name if case.sources else case.case_id
    boxes = given_boxes(case)
    out: dict[str, GivenPrompts] = {}
    for name, label_values in values.items():
        if label_values is None or len(label_values) != 1:
            problem = (
                f"{where}: no given box for label {name} (it is not one mask value, and the file boxes each value)"
            )
            out[name] = GivenPrompts(None, problem=problem)
        elif label_values[0] not in boxes:
            out[name] = GivenPrompts(None, problem=f"{where}: no given box for label {name}")
        else:
            value = label_values[0]
            out[name] = GivenPrompts(boxes[value], _clicks(case, value - 1))
    return out
