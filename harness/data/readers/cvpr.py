"""The CVPR 2024 and 2025 challenge npz files ("Segment Anything in Medical Images on Laptop" and the
CVPR 2025 interactive 3D challenge), with the prompts they ship.

2024: ``imgs`` (H, W, 3) or (D, H, W), ``gts``, ``spacing`` (SimpleITK's x, y, z), ``boxes``: one row
per object, 2D ``[x_min, y_min, x_max, y_max]``, 3D ``[x_min, y_min, z_min, x_max, y_max, z_max]``.
2025 adds ``boxes`` as dicts ``z_min, z_max, z_mid, z_mid_x_min, z_mid_y_min, z_mid_x_max,
z_mid_y_max`` (a 2D box on the middle slice plus the z range), ``clicks`` (per object ``{"fg": [...],
"bg": [...]}``, coordinates as the challenge stores them), ``clicks_order`` and ``prev_pred``. Object
``i`` of the lists is the mask value ``i + 1`` in ``gts``, the challenges' convention.

The prompts go into ``Case.given`` unchanged in meaning (boxes as lists of numbers or dicts, clicks
as lists, ``prev_pred`` as an array), so a protocol can replay the challenge's own prompts. 2025's
dicts are numpy object arrays, which only pickle can load: pickle runs code, so those keys are read
only when the task says ``allow_pickle = true`` (the user vouching for the files); without it such
a file is a failed row whose error names the file and the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.volumes import NpzCases
from segbench.data.specs import TaskSpec
from segbench.errors import DataError

PROMPT_KEYS = ("boxes", "clicks", "clicks_order", "prev_pred")


def _plain(value: np.ndarray) -> Any:
    """An npz array as plain Python (lists, dicts, numbers); ``prev_pred`` stays an array."""
    return _plain_object(value.tolist())  # nested lists keep the array's shape; objects inside are converted


def _plain_object(item: Any) -> Any:
    if isinstance(item, np.ndarray):
        return _plain(item)
    if isinstance(item, dict):
        return {str(k): _plain_object(v) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return [_plain_object(v) for v in item]
    if isinstance(item, np.generic):
        return item.item()
    return item


class CvprNpz(NpzCases):
    """``[data]`` as the ``npz`` reader (``images`` glob, ``spacing_order``, ``axes``) plus
    ``allow_pickle`` (read CVPR 2025's object arrays: boxes as dicts, clicks)."""

    DATA_KEYS = {**NpzCases.DATA_KEYS, "allow_pickle": "boolean"}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        self.allow_pickle = bool(self.option("allow_pickle", bool, default=False))

    def given(self, path: Path) -> dict[str, Any]:
        given: dict[str, Any] = {}
        try:
            with np.load(path, allow_pickle=self.allow_pickle) as npz:
                for key in PROMPT_KEYS:
                    if key not in npz:
                        continue
                    try:
                        value = npz[key]
                    except ValueError:  # an object array without allow_pickle
                        raise DataError(
                            path,
                            f"'{key}' is a pickled object array (CVPR 2025 prompts); "
                            "set [data] allow_pickle = true if you trust these files",
                        ) from None
                    given[key] = value if key == "prev_pred" else _plain(value)
        except (OSError, ValueError) as error:
            raise DataError(path, f"cannot read npz file ({error})") from None
        return given

    def read(self, case_id: str) -> Case:
        case = super().read(case_id)
        case.given = self.given(self.cases.paths[case_id])
        return case
