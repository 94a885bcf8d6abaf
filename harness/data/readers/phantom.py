"""Phantom images generated in process: the embedded default task, so `segbench run` needs no files.

Each case is a grey-level "scan" (smooth background, noise) with an elliptical organ and a darker
lesion inside it, at a size that varies per case so adapters' resizing is exercised. Everything is
drawn from the task's seed, so a phantom case is the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from segbench.data.case import Case
from segbench.data.readers.base import Reader
from segbench.data.specs import TaskSpec
from segbench.errors import ConfigError


def _ellipse(
    shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float], angle: float
) -> np.ndarray:
    rows, cols = np.indices(shape, dtype=np.float64)
    dy, dx = rows - center[0], cols - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    return (u / radii[1]) ** 2 + (v / radii[0]) ** 2 <= 1.0


def phantom(seed: int, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One phantom: (H, W, 3) uint8 image and its ``organ`` and ``lesion`` masks."""
    rng = np.random.default_rng([seed, index])
    shape = (int(rng.integers(192, 320)), int(rng.integers(192, 320)))
    height, width = shape
    center = (height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6))
    radii = (height * rng.uniform(0.18, 0.3), width * rng.uniform(0.18, 0.3))
    organ = _ellipse(shape, center, radii, rng.uniform(0, np.pi))
    offset = rng.uniform(-0.35, 0.35, size=2) * np.array(radii)
    lesion_radii = (min(radii) * rng.uniform(0.2, 0.35),) * 2
    lesion = _ellipse(shape, (center[0] + offset[0], center[1] + offset[1]), lesion_radii, 0.0) & organ
    rows, cols = np.indices(shape, dtype=np.float64)
    background = 40 + 30 * (rows / height) + 15 * np.sin(cols / width * np.pi)
    image = background + organ * rng.uniform(70, 110) - lesion * rng.uniform(45, 65)
    image = ndimage.gaussian_filter(image, 1.5) + rng.normal(0, 6, shape)
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), {"organ": organ, "lesion": lesion}


class PhantomCases(Reader):
    """``[data]``: ``cases`` (how many), ``seed``."""

    DATA_KEYS = {"cases": "integer", "seed": "integer"}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        self.count = self.option("cases", int, default=4)
        self.seed = self.option("seed", int, default=0)
        if self.count < 1:
            raise ConfigError(task.source, "[data] cases must be at least 1")

    def case_ids(self) -> list[str]:
        return [f"phantom-{i:03d}" for i in range(self.count)]

    def read(self, case_id: str) -> Case:
        image, masks = phantom(self.seed, int(case_id.rsplit("-", 1)[1]))
        labels = {spec.name: masks[spec.name] for spec in self.task.labels if spec.name in masks}
        if self.task.spacing:  # a phantom has no physical size unless its task gives one
            return Case(case_id, image, labels, self.task.spacing, unit="mm")
        return Case(case_id, image, labels, (1.0, 1.0), unit="px")
