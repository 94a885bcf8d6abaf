"""One case of a task: an image or a volume, its labels and its spacing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segbench.errors import DataError
from segbench.measuring.metrics import spacing_problem

UNITS = ("mm", "px")


@dataclass
class Case:
    """A case as the harness reads it.

    ``image`` is (H, W, 3) uint8 for 2D tasks and (D, H, W) uint8 for volumes, after the task's
    intensity policy (CT window, percentile clip, ...). ``labels`` maps each label name to a bool mask
    of the spatial shape; a label absent from a case is absent from the dict. ``spacing`` is the size
    of a pixel/voxel in array axis order ((row, col) or (slice, row, col)), in ``unit``: ``"mm"`` when
    the file or the task gave it, ``"px"`` when the reader assumed 1.0 per pixel (then every distance,
    HD95 and the NSD tolerance included, is in pixels, and pages must say so).

    A case is checked when it is made, so every reader (plugins' too) gets the same guard: a spacing
    the metrics cannot use (not finite, not positive, or beyond their voxel budget:
    :func:`segbench.measuring.metrics.spacing_problem`) and non-finite pixels are a :class:`DataError` naming the
    case's file, which the runner records as a failed row.

    Three optional extras travel with a case: ``raw``, the pixels before the intensity policy in the
    file's own dtype (HU after DICOM rescale), in ``image``'s axis order, which is what an adapter
    declaring ``AdapterMeta(input="raw")`` receives instead of ``image`` (as a
    :class:`segbench.interface.RawImage`, with the spacing and the task's modality); ``affine``, the
    4x4 matrix from array index (in ``image``'s axis order) to RAS+ world millimetres, for writing
    predictions back in the source geometry (running/prediction_writers.py);
    and ``given``, prompts the dataset itself ships (CVPR npz ``boxes``, ``clicks``, ``clicks_order``,
    ``prev_pred``), so a protocol can replay a challenge's own prompts.
    """

    case_id: str
    image: np.ndarray
    labels: dict[str, np.ndarray]
    spacing: tuple[float, ...]
    sources: tuple[Path, ...] = field(default_factory=tuple)
    unit: str = "mm"
    raw: np.ndarray | None = None
    affine: np.ndarray | None = None
    given: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[: self.ndim])

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"a case's unit is one of {UNITS}, got {self.unit!r}")
        where = self.sources[0] if self.sources else self.case_id
        problem = spacing_problem(self.shape, self.spacing)
        if problem:
            raise DataError(where, problem)
        if self.image.dtype.kind in "fc" and not np.isfinite(self.image).all():
            bad = int(np.count_nonzero(~np.isfinite(self.image)))
            raise DataError(where, f"image holds {bad} non-finite pixel(s) (NaN or inf)")
        if self.raw is not None and tuple(self.raw.shape[: self.ndim]) != self.shape:
            raise DataError(where, f"raw pixels have shape {self.raw.shape}, image has {self.shape}")
        if self.affine is not None and np.shape(self.affine) != (4, 4):
            raise DataError(where, f"affine must be 4x4, got shape {np.shape(self.affine)}")
        for name, mask in self.labels.items():
            if mask.shape != self.shape:
                raise DataError(where, f"label '{name}' has shape {mask.shape}, image has {self.shape}")
