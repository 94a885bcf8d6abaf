"""Any 2D adapter on a volume: the two standard strategies, implemented once for every adapter.

* **Slice by slice** (the MedSAM paper's protocol): every slice that has a prompt is decoded on its own
  (``slice_boxes``: the ground-truth box of each slice of the target).
* **Propagation** (LiteMedSAM's ``MedSAM_infer_npz_3D`` in ``CVPR24_LiteMedSAM_infer.py``): the key
  slice is decoded with its box, then the prediction is carried slice by slice up to the top of the
  target's extent and down to its bottom; each next slice gets the box of the previous slice's
  prediction widened by 3 px at LiteMedSAM's 256-pixel scale (``3 * max(H, W) / 256`` original
  pixels), or the key slice's box again where the previous prediction is empty. The extent
  (``VolumePrompt.z_range``, the 3D box's z range) is the stop rule. One deliberate difference: the
  official script's ``range(z_middle, z_max)`` and ``range(z_middle - 1, z_min, -1)`` never segment
  the first and last slice of the box; here both are segmented.

Iterative protocols on volumes (``iterative_3d``) start with a propagation; each later correction
click re-decodes only the slice it falls on, with that slice's box and all its clicks (a 2D model
has no way to carry a click to other slices).

Encoder passes are shared through :class:`~segbench.protocols.slice_cache.SliceEncodings`, and all targets of
a volume move through the slices together, so each slice is encoded once and its prompts decoded in
one batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from segbench.interface import Adapter, Prediction, Prompt, VolumePrompt, check_masks
from segbench.protocols.prompts import bounding_box
from segbench.protocols.slice_cache import SliceEncodings

# LiteMedSAM widens the previous slice's box by 3 px in its 256-pixel input frame.
MARGIN_AT_256 = 3


def widened_box(mask: np.ndarray, margin: float) -> np.ndarray:
    """Tight box of a 2D mask widened by ``margin`` pixels on every side, clipped to the image."""
    x0, y0, x1, y1 = bounding_box(mask)
    height, width = mask.shape
    return np.array(
        [max(0.0, x0 - margin), max(0.0, y0 - margin), min(width - 1.0, x1 + margin), min(height - 1.0, y1 + margin)]
    )


def _clicks(prompt: Prompt | None) -> int:
    return 0 if prompt is None or prompt.points is None else len(prompt.points)


class SliceStrategy:
    """One protocol run of a 2D adapter on one volume; ``predict`` has the shape of ``predict_volume``.

    The first call decodes (``propagate=False``) or propagates (``propagate=True``) the prompts; later
    calls of an iterative protocol re-decode only the slices whose prompt gained clicks."""

    def __init__(self, adapter: Adapter, encodings: SliceEncodings, propagate: bool):
        self.adapter = adapter
        self.encodings = encodings
        self.propagate = propagate
        depth, height, width = encodings.volume.shape
        self.shape = (depth, height, width)
        self.margin = MARGIN_AT_256 * max(height, width) / 256
        self.touched: set[int] = set()  # slices decoded
        self.boxes: list[dict[int, np.ndarray]] = []  # per target: the box each slice was decoded with
        self._masks: np.ndarray | None = None
        self._feedback: list[dict[int, Any]] = []
        self._clicks: list[dict[int, int]] = []

    def predict(self, prompts: Sequence[VolumePrompt]) -> Prediction:
        if self._masks is None:
            count = len(prompts)
            self._masks = np.zeros((count, *self.shape), dtype=bool)
            self.boxes = [{} for _ in range(count)]
            self._feedback = [{} for _ in range(count)]
            self._clicks = [{} for _ in range(count)]
            if self.propagate:
                self._sweep(prompts, +1)
                self._sweep(prompts, -1)
            else:
                self._decode(prompts, {i: list(p.slices) for i, p in enumerate(prompts)})
        else:
            changed = {
                i: [z for z, prompt in p.slices.items() if _clicks(prompt) != self._clicks[i].get(z, 0)]
                for i, p in enumerate(prompts)
            }
            self._decode(prompts, changed)
        return Prediction(self._masks.copy(), None, [None] * len(prompts))

    def _decode_slice(self, z: int, batch: list[tuple[int, Prompt]]) -> None:
        """Decode the prompts of several targets on slice ``z`` in one batch and keep the results."""
        assert self._masks is not None
        self.touched.add(z)
        prediction = self.adapter.predict(self.encodings.get(z), [prompt for _, prompt in batch])
        masks = check_masks(prediction.masks, (len(batch), *self.shape[1:]), f" for slice {z}")
        feedback = prediction.feedback or [None] * len(batch)
        for (i, prompt), mask, back in zip(batch, masks, feedback, strict=True):
            self._masks[i, z] = mask
            self._feedback[i][z] = back
            self._clicks[i][z] = _clicks(prompt)
            if prompt.box is not None:
                self.boxes[i][z] = prompt.box

    def _decode(self, prompts: Sequence[VolumePrompt], which: dict[int, list[int]]) -> None:
        """Decode the given slices of each target, grouped by slice; a slice's own box wins, else the
        box it was propagated with, and its previous feedback comes along."""
        by_slice: dict[int, list[tuple[int, Prompt]]] = defaultdict(list)
        for i, slices in which.items():
            for z in slices:
                given = prompts[i].slices[z]
                box = given.box if given.box is not None else self.boxes[i].get(z)
                by_slice[z].append(
                    (
                        i,
                        Prompt(
                            box=box,
                            points=given.points,
                            point_labels=given.point_labels,
                            previous=self._feedback[i].get(z),
                        ),
                    )
                )
        for z in sorted(by_slice):
            self._decode_slice(z, by_slice[z])

    def _sweep(self, prompts: Sequence[VolumePrompt], direction: int) -> None:
        """Propagate every target from its key slice towards one end of its extent, all targets in step."""
        assert self._masks is not None
        spans: dict[int, tuple[int, int]] = {}
        for i, prompt in enumerate(prompts):
            low, high = prompt.z_range
            start = prompt.key_slice if direction > 0 else prompt.key_slice - 1
            stop = high if direction > 0 else low
            if (stop - start) * direction >= 0:
                spans[i] = (start, stop)
        if not spans:
            return
        if direction > 0:
            order = range(min(a for a, _ in spans.values()), max(b for _, b in spans.values()) + 1)
        else:
            order = range(max(a for a, _ in spans.values()), min(b for _, b in spans.values()) - 1, -1)
        for z in order:
            batch = []
            for i, (start, stop) in spans.items():
                if not (min(start, stop) <= z <= max(start, stop)):
                    continue
                key = prompts[i].key_slice
                key_prompt = prompts[i].slices[key]
                if z == key:
                    batch.append((i, key_prompt))
                    continue
                previous = self._masks[i, z - direction]
                box = widened_box(previous, self.margin) if previous.any() else key_prompt.box
                batch.append((i, Prompt(box=box)))
            if batch:
                self._decode_slice(z, batch)
