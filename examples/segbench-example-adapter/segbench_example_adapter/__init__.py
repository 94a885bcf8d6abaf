"""``clicks``: grey-level region growing from positive clicks (and the box centre), cut by negative
clicks and the box. A real, if simple, interactive method that uses every kind of prompt.

The package's second adapter, ``tinyseg`` (:mod:`segbench_example_adapter.tinyseg`), is a small torch
model with a bundled checkpoint: the worked example of docs/adapters.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from segbench import hookimpl
from segbench.interface import Adapter, AdapterMeta, Capabilities, LoadOptions, Prediction, Prompt, Support
from segbench_example_adapter.tinyseg import TinySeg

TOLERANCE = 40  # grey levels around the seeds' mean that still belong to the region
CUT_RADIUS = 6  # pixels removed around a negative click


class ClickRegionGrowing(Adapter):
    meta = AdapterMeta(
        name="clicks",
        family="example",
        description="Region growing from clicks (example third-party adapter)",
        capabilities=Capabilities(box=True, point=True, iterative=True),
        license="Apache-2.0",
    )

    def load(self, options: LoadOptions) -> None:
        self.options = options

    def encode(self, image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image.mean(axis=2), 1.0)

    def _one(self, grey: np.ndarray, prompt: Prompt) -> np.ndarray:
        height, width = grey.shape
        allowed = np.ones((height, width), dtype=bool)
        seeds: list[tuple[int, int]] = []
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
            allowed[:] = False
            allowed[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
            seeds.append(((y0 + y1) // 2, (x0 + x1) // 2))
        points = prompt.points if prompt.points is not None else np.zeros((0, 2))
        labels = prompt.point_labels if prompt.point_labels is not None else np.zeros(0)
        rows, cols = np.indices((height, width))
        for (x, y), label in zip(points, labels, strict=True):
            if label == 1:
                seeds.append((int(y), int(x)))
            else:
                allowed &= (rows - y) ** 2 + (cols - x) ** 2 > CUT_RADIUS**2
        if not seeds:
            return np.zeros((height, width), dtype=bool)
        level = float(np.mean([grey[r, c] for r, c in seeds]))
        similar = (np.abs(grey - level) <= TOLERANCE) & allowed
        components, _ = ndimage.label(similar)
        keep = {components[r, c] for r, c in seeds} - {0}
        return np.isin(components, list(keep))

    def predict(
        self, state: np.ndarray, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        if not prompts:
            raise ValueError("clicks needs prompts")
        masks = np.stack([self._one(state, p) for p in prompts])
        return Prediction(masks, None, [None] * len(prompts))


@hookimpl
def segbench_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    register(ClickRegionGrowing)
    register(TinySeg)
