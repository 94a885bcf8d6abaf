"""A task-level resize (``[data] resize = [rows, cols]``), applied around any 2D reader.

The task is then *defined* at that size: adapters receive the resized image, and the metrics compare
masks at that size, with the spacing scaled so that distances stay in the units of the original
pixels (NSD tolerance and HD95 mean the same as for the full-size task). Images are resized with
OpenCV's area interpolation when they shrink and bilinear interpolation when they grow; masks with
nearest neighbour, so labels stay binary (structures thinner than the new pixel may break up).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segbench.data.case import Case
from segbench.data.readers.base import Reader
from segbench.data.readers.decode import resize_nearest


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    shrinks = shape[0] * shape[1] < height * width
    interpolation = cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR
    return cv2.resize(image, (shape[1], shape[0]), interpolation=interpolation)


def resize_case(case: Case, shape: tuple[int, int]) -> Case:
    if case.shape == shape:
        return case
    height, width = case.shape
    spacing = (case.spacing[0] * height / shape[0], case.spacing[1] * width / shape[1])
    labels = {name: resize_nearest(mask, shape) for name, mask in case.labels.items()}
    return Case(case.case_id, resize_image(case.image, shape), labels, spacing, case.sources, case.unit)


class ResizedReader(Reader):
    """Delegates to ``inner`` and resizes every case it reads to the task's ``resize``."""

    def __init__(self, inner: Reader, shape: tuple[int, int]):  # no super().__init__: ``inner`` checked the task
        self.inner = inner
        self.task = inner.task
        self.root = inner.root
        self.shape = shape

    def case_ids(self) -> list[str]:
        return self.inner.case_ids()

    def files(self, case_id: str) -> list[Path]:
        return self.inner.files(case_id)

    def read(self, case_id: str) -> Case:
        return resize_case(self.inner.read(case_id), self.shape)
