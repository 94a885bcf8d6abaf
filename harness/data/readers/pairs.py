"""2D images with mask files beside them (WBC, Kvasir, CVC, DRIVE, CHASE, chest X-ray, OCT layers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.base import GLOB_KEYS, MASK_VALUE_KEYS, GlobCases, Reader
from segbench.data.readers.decode import (
    apply_intensity,
    decode_mask,
    read_image_file,
    resize_nearest,
    select_labels,
)
from segbench.data.specs import TaskSpec
from segbench.errors import ConfigError, DataError

RESIZE_MODES = ("none", "nearest")


class ImageMaskPairs(Reader):
    """``[data]``: ``images`` (glob), ``mask`` (template of the label mask file), optional per-label
    ``file`` templates (one file per label), ``mask_levels`` / ``mask_threshold``, ``mask_resize``
    (``"nearest"`` resizes masks stored at another size than the image), ``case_pattern``, ``exclude``.
    """

    DATA_KEYS = {**GLOB_KEYS, **MASK_VALUE_KEYS, "mask": "template", "mask_resize": RESIZE_MODES}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        self.cases = GlobCases(self)
        self.mask_template = self.option("mask", str)
        if self.mask_template is None and any(label.file is None for label in task.labels):
            raise ConfigError(task.source, "[data] needs 'mask' unless every label has its own 'file'")
        self.resize = self.option("mask_resize", str, default="none")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(task.source, f"[data] mask_resize must be one of {RESIZE_MODES}")
        if not self.cases.paths:
            raise ConfigError(task.source, f"no image matches {self.cases.glob!r} under {self.root}")

    def case_ids(self) -> list[str]:
        return list(self.cases.paths)

    def files(self, case_id: str) -> list[Path]:
        files = [self.cases.paths[case_id]]
        if self.mask_template is not None:
            files.append(self.cases.resolve(self.mask_template, case_id, "[data] mask"))
        files += [
            self.cases.resolve(label.file, case_id, f"[labels.{label.name}] file")
            for label in self.task.labels
            if label.file
        ]
        return files

    def _mask(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        mask = decode_mask(read_image_file(path), self.task.data, path, planar=True)
        if mask.shape != shape:
            if self.resize == "none":
                raise DataError(
                    path,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                    f'{shape[1]}x{shape[0]} (set mask_resize = "nearest" if intended)',
                )
            mask = resize_nearest(mask, shape)
        return mask

    def read(self, case_id: str) -> Case:
        image_path = self.cases.paths[case_id]
        image = apply_intensity(read_image_file(image_path), self.task.intensity, image_path, channels=True)
        shape = image.shape[:2]
        labels: dict[str, np.ndarray] = {}
        shared = [label for label in self.task.labels if label.file is None]
        if shared:
            mask_path = self.cases.resolve(self.mask_template, case_id, "[data] mask")
            labels.update(select_labels(self._mask(mask_path, shape), shared, mask_path))
        for label in self.task.labels:
            if label.file is not None:
                path = self.cases.resolve(label.file, case_id, f"[labels.{label.name}] file")
                labels.update(select_labels(self._mask(path, shape), [label], path))
        spacing, unit = (self.task.spacing, "mm") if self.task.spacing else ((1.0, 1.0), "px")
        return Case(case_id, image, labels, spacing, tuple(self.files(case_id)), unit)
