"""2D images with mask files beside them (WBC, Kvasir, CVC, DRIVE, CHASE, chest X-ray, OCT layers).

Per-image pixel sizes kept apart in a CSV (ultrasound sets such as HC18: ``filename,pixel size(mm)``)
come in through ``spacing_csv`` and ``spacing_columns``: the first column names the image (its case
id, file name or stem), the others hold one (square pixels) or two (row, column) spacings in mm.
"""

from __future__ import annotations

import csv
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
    (``"nearest"`` resizes masks stored at another size than the image), ``case_pattern``, ``exclude``,
    ``spacing_csv`` / ``spacing_columns`` (per-image spacing, see the module's note).
    """

    DATA_KEYS = {
        **GLOB_KEYS,
        **MASK_VALUE_KEYS,
        "mask": "template",
        "mask_resize": RESIZE_MODES,
        "spacing_csv": "path",
        "spacing_columns": "strings",
    }

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
        self.spacing_table = self._spacing_table()

    def _spacing_table(self) -> dict[str, tuple[float, float]] | None:
        """Image name -> (row, col) spacing from ``spacing_csv``, or None when the task names none."""
        name = self.option("spacing_csv", str)
        columns = self.option("spacing_columns", list)
        if name is None:
            if columns is not None:
                raise ConfigError(self.task.source, "[data] spacing_columns needs spacing_csv")
            return None
        if columns is None or len(columns) not in (2, 3):
            raise ConfigError(
                self.task.source, "[data] spacing_columns must name the image column and 1 or 2 spacing columns"
            )
        path = self.confined(name, "[data] spacing_csv")
        table: dict[str, tuple[float, float]] = {}
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                for line, row in enumerate(csv.DictReader(handle), start=2):
                    try:
                        values = [float(row[column]) for column in columns[1:]]
                        table[str(row[columns[0]]).strip()] = (values[0], values[-1])
                    except KeyError as error:
                        raise ConfigError(self.task.source, f"{path}: no column {error}") from None
                    except (TypeError, ValueError):
                        raise ConfigError(self.task.source, f"{path} line {line}: spacing is not a number") from None
        except OSError as error:
            raise ConfigError(self.task.source, f"[data] spacing_csv {path}: {error.strerror}") from None
        return table

    def _spacing(self, case_id: str) -> tuple[tuple[float, ...], str]:
        if self.spacing_table is None:
            return (self.task.spacing, "mm") if self.task.spacing else ((1.0, 1.0), "px")
        path = self.cases.paths[case_id]
        for key in (case_id, path.name, path.stem):
            if key in self.spacing_table:
                return self.spacing_table[key], "mm"
        raise DataError(path, f"no row for this image in [data] spacing_csv {self.task.data['spacing_csv']!r}")

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
        if self.spacing_table is not None:  # the spacings are data too: the CSV is checksummed with the case
            files.append(self.confined(self.task.data["spacing_csv"], "[data] spacing_csv"))
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
        spacing, unit = self._spacing(case_id)
        return Case(case_id, image, labels, spacing, tuple(self.files(case_id)), unit)
