"""Reference baselines every leaderboard needs, so a model's Dice has something to be above.

``box``: the prompt box itself, filled: what a model adds over the box it was given.
``otsu``: a classical method inside the box: Otsu's threshold on the grey levels inside the box; the
class covering less of the box's border is the object (objects sit inside their box, background
touches its edges); holes are filled and the largest connected component is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.interface import (
    Adapter,
    AdapterMeta,
    Capabilities,
    LoadOptions,
    ModelCard,
    Prediction,
    Prompt,
    Support,
)
from segbench.lazy import lazy_import

ndimage = lazy_import("scipy.ndimage")  # imported on first use: declaring and planning need no scipy


def box_mask(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return mask


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values (maximises the between-class variance)."""
    histogram = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    weights = np.cumsum(histogram)
    means = np.cumsum(histogram * np.arange(256))
    total_weight, total_mean = weights[-1], means[-1]
    background = weights[:-1]
    foreground = total_weight - background
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * background - means[:-1] * total_weight) ** 2 / (background * foreground)
    return float(np.nanargmax(np.where(np.isfinite(between), between, np.nan)))


def otsu_in_box(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    height, width = grey.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    crop = grey[y0 : y1 + 1, x0 : x1 + 1]
    mask = np.zeros((height, width), dtype=bool)
    if crop.size == 0 or crop.min() == crop.max():
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return mask
    above = crop > otsu_threshold(crop)
    border = np.concatenate([above[0], above[-1], above[:, 0], above[:, -1]])
    inside = above if border.mean() <= 0.5 else ~above
    inside = ndimage.binary_fill_holes(inside)
    components, count = ndimage.label(inside)
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        inside = components == int(np.argmax(sizes))
    mask[y0 : y1 + 1, x0 : x1 + 1] = inside
    return mask


class _BoxBaseline(Adapter):
    def load(self, options: LoadOptions) -> None:
        self.options = options

    def encode(self, image: np.ndarray) -> np.ndarray:
        return image

    def _masks(self, image: np.ndarray, prompts: Sequence[Prompt]) -> np.ndarray:
        raise NotImplementedError

    def predict(
        self, state: np.ndarray, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        if not prompts or any(p.box is None for p in prompts):
            raise ValueError(f"{self.meta.name} needs box prompts")
        masks = self._masks(state, prompts)
        return Prediction(masks, None, [None] * len(prompts))


def baseline_card(module: str, paper: str = "") -> ModelCard:
    """A classical method's card: segbench's own code, trained on nothing (every pair is zero-shot)."""
    return ModelCard(
        paper=paper,
        code=f"segbench: adapters/{module}.py (this repository)",
        trained_on=(),
        trained_on_complete=True,
        trained_on_source="none: a classical method with no learned weights",
    )


class BoxBaseline(_BoxBaseline):
    meta = AdapterMeta(
        name="box",
        family="baseline",
        description="The prompt box, filled (reference lower bound)",
        capabilities=Capabilities(box=True),
        license="Apache-2.0",
        preprocessing="none",
        card=baseline_card("baselines"),
    )

    def _masks(self, image: np.ndarray, prompts: Sequence[Prompt]) -> np.ndarray:
        return np.stack([box_mask(p.box, image.shape[:2]) for p in prompts])  # type: ignore[arg-type]


class OtsuBaseline(_BoxBaseline):
    meta = AdapterMeta(
        name="otsu",
        family="baseline",
        description="Otsu threshold inside the prompt box, hole filling, largest component (classical)",
        capabilities=Capabilities(box=True),
        license="Apache-2.0",
        preprocessing="grey = mean of RGB; Otsu threshold inside the box; polarity from the box border",
        card=baseline_card("baselines", paper="https://doi.org/10.1109/TSMC.1979.4310076"),
    )

    def _masks(self, image: np.ndarray, prompts: Sequence[Prompt]) -> np.ndarray:
        grey = image.mean(axis=2).round().astype(np.uint8)
        return np.stack([otsu_in_box(grey, p.box) for p in prompts])  # type: ignore[arg-type]


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(BoxBaseline)
    register(OtsuBaseline)
