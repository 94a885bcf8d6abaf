"""Non-learned in-context baselines: what a support set alone gives, so an in-context model's Dice has a
reference on every in-context task.

``support-nearest`` (single-atlas label transfer): the mask of the support example whose image is most
similar to the query, the similarity being the normalised cross-correlation of 64x64 grey thumbnails.
``support-mean`` (a spatial prior): the mean of the support masks, resized to the query, > 0.5.

Both return their soft output as ``probabilities``, so ensembling over support sets averages it like
any model's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from segbench.adapters.baselines import baseline_card
from segbench.hookspecs import hookimpl
from segbench.interface import (
    Adapter,
    AdapterMeta,
    Capabilities,
    LoadOptions,
    Prediction,
    Prompt,
    Support,
)
from segbench.lazy import lazy_import

cv2 = lazy_import("cv2")

THUMBNAIL = 64


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Grey (mean of RGB) 64x64 area-resized thumbnail, standardised to zero mean and unit variance."""
    grey = cv2.resize(image.mean(axis=2, dtype=np.float32), (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def resize_soft(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A mask as float32 in [0, 1], bilinearly resized to ``shape``."""
    soft = mask.astype(np.float32)
    if soft.shape == shape:
        return soft
    return cv2.resize(soft, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


@dataclass
class Query:
    shape: tuple[int, int]
    thumbnail: np.ndarray


class _SupportBaseline(Adapter):
    def load(self, options: LoadOptions) -> None:
        self.options = options

    def encode(self, image: np.ndarray) -> Query:
        return Query(image.shape[:2], thumbnail(image))

    def _probability(self, query: Query, support: Support) -> np.ndarray:
        raise NotImplementedError

    def predict(
        self, state: Query, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        if prompts:
            raise ValueError(f"{self.meta.name} takes no prompts, only support sets")
        if not support or any(len(s) == 0 for s in support):
            raise ValueError(f"{self.meta.name} needs a non-empty support set per target")
        probabilities = np.stack([self._probability(state, s) for s in support])
        return Prediction(probabilities > 0.5, None, [None] * len(support), probabilities)


class NearestSupport(_SupportBaseline):
    meta = AdapterMeta(
        name="support-nearest",
        family="baseline",
        description="Label transfer: the mask of the most similar support image (in-context reference)",
        capabilities=Capabilities(support_set=True),
        license="Apache-2.0",
        preprocessing="64x64 grey thumbnails, normalised cross-correlation; the chosen mask resized bilinearly, > 0.5",
        card=baseline_card("incontext_baselines"),
    )

    def _probability(self, query: Query, support: Support) -> np.ndarray:
        similarity = [float((query.thumbnail * thumbnail(image)).mean()) for image in support.images]
        return resize_soft(support.masks[int(np.argmax(similarity))], query.shape)


class MeanSupport(_SupportBaseline):
    meta = AdapterMeta(
        name="support-mean",
        family="baseline",
        description="Spatial prior: the mean of the support masks, > 0.5 (in-context reference)",
        capabilities=Capabilities(support_set=True),
        license="Apache-2.0",
        preprocessing="support masks resized bilinearly to the query, averaged, > 0.5",
        card=baseline_card("incontext_baselines"),
    )

    def _probability(self, query: Query, support: Support) -> np.ndarray:
        return np.mean([resize_soft(mask, query.shape) for mask in support.masks], axis=0)


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(NearestSupport)
    register(MeanSupport)
