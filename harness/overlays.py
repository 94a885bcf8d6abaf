"""The case drill-down: for each adapter and protocol, its best, median and worst (case, label) among
the cases whose masks the run kept, drawn as overlays on the image.

An overlay fills the prediction in orange (outlined inside its edge) and outlines the ground truth
in sky blue just outside its edge, so a perfect prediction shows both lines side by side; the two
Okabe–Ito colours stay apart for the common colour-vision deficiencies.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from scipy import ndimage

from segbench.samples import SavedPrediction

PREDICTION_RGB = np.array([0xE6, 0x9F, 0x00], dtype=np.float32)  # Okabe–Ito orange
TRUTH_RGB = np.array([0x56, 0xB4, 0xE9], dtype=np.float32)  # Okabe–Ito sky blue
FILL_OPACITY = 0.4
CROP_MIN = 48  # pixels: the smallest object extent a thumbnail zooms to
PICKS = ("best", "median", "worst")


@dataclass(frozen=True)
class Overlay:
    picks: tuple[str, ...]  # which of best / median / worst this case is (one case can be several)
    adapter: str
    prompt: str
    case_id: str
    label: str
    dice: float
    nsd: float
    hd95: float
    sample: SavedPrediction
    file: str  # the whole image, relative to the site folder
    zoom: str  # a window around the ground truth and the prediction

    @property
    def slice_index(self) -> int | None:
        return self.sample.meta.get("slice")

    @property
    def alt(self) -> str:
        where = f", slice {self.slice_index}" if self.slice_index is not None else ""
        return (f"{self.adapter} on case {self.case_id}{where}, label {self.label}: predicted mask filled in orange, "
                f"ground truth outlined in blue; Dice {self.dice:.3f}.")

    def write(self, out: Path) -> None:
        """Draw the overlay and its zoomed window as PNG files under the site folder ``out``."""
        image, truth, prediction = self.sample.load(self.prompt, self.label)
        drawn = overlay(image, truth, prediction)
        top, left, bottom, right = crop_box([truth, prediction], drawn.shape[:2])
        (out / self.file).parent.mkdir(parents=True, exist_ok=True)
        (out / self.file).write_bytes(png(drawn))
        (out / self.zoom).write_bytes(png(drawn[top:bottom, left:right]))


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` resized (nearest) to ``size`` = (width, height)."""
    if mask.shape[::-1] == size:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127


def overlay(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The (h, w, 3) uint8 overlay at the image's (preview) size."""
    height, width = image.shape[:2]
    truth, prediction = _fit(truth, (width, height)), _fit(prediction, (width, height))
    thickness = max(1, round(max(height, width) / 256))
    out = image[..., :3].astype(np.float32)
    out[prediction] = (1 - FILL_OPACITY) * out[prediction] + FILL_OPACITY * PREDICTION_RGB
    out[prediction & ~ndimage.binary_erosion(prediction, iterations=thickness)] = PREDICTION_RGB
    out[ndimage.binary_dilation(truth, iterations=thickness) & ~truth] = TRUTH_RGB
    return out.round().astype(np.uint8)


def crop_box(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a square-ish window around every mask, with a margin of half the
    objects' extent (at least CROP_MIN pixels wide); the whole image when nothing is drawn."""
    union = np.logical_or.reduce([_fit(m, shape[::-1]) for m in masks])
    if not union.any():
        return 0, 0, shape[0], shape[1]
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0], CROP_MIN) * 2
    centre = ((rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2)
    top, left = (max(0, min(c - side // 2, size - side)) for c, size in zip(centre, shape, strict=True))
    return top, left, min(shape[0], top + side), min(shape[1], left + side)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pick_cases(rows: pl.DataFrame) -> list[tuple[tuple[str, ...], dict]]:
    """Best, median (lower) and worst rows by Dice, ties broken by case and label; a row that is
    several picks at once is listed once with all its names."""
    ordered = rows.filter(pl.col("dice").is_not_nan()).sort("dice", "case_id", "label").to_dicts()
    if not ordered:
        return []
    positions = {"best": len(ordered) - 1, "median": (len(ordered) - 1) // 2, "worst": 0}
    picked: dict[int, list[str]] = {}
    for name in PICKS:
        picked.setdefault(positions[name], []).append(name)
    return [(tuple(names), ordered[position]) for position, names in sorted(picked.items(), reverse=True)]


def drilldown(final: pl.DataFrame, saved: dict[tuple[str, str], SavedPrediction], prompt: str,
              adapters: Sequence[str], folder: str = "cases") -> list[Overlay]:
    """The overlays to draw for ``adapters`` (in that order) from ``final`` (one task and protocol, final
    step, status ok), among the cases in ``saved`` ((adapter, case id) → its kept masks); their PNGs
    are named under ``folder`` and drawn by :meth:`Overlay.write`."""
    overlays = []
    for adapter in adapters:
        rows = final.filter(pl.col("adapter") == adapter)
        available = [(case_id, label) for case_id, label in rows.select("case_id", "label").iter_rows()
                     if (adapter, case_id) in saved and saved[(adapter, case_id)].has(prompt, label)]
        keep = pl.DataFrame(available, schema={"case_id": pl.String, "label": pl.String}, orient="row")
        rows = rows.join(keep, on=["case_id", "label"])
        for picks, row in pick_cases(rows):
            sample = saved[(adapter, row["case_id"])]
            key = "\x1f".join([sample.path.name, prompt, row["label"]])
            name = f"{folder}/{hashlib.sha256(key.encode()).hexdigest()[:20]}"
            overlays.append(Overlay(picks, adapter, prompt, row["case_id"], row["label"], row["dice"],
                                    _finite(row["nsd"]), _finite(row["hd95"]), sample, f"{name}.png",
                                    f"{name}-zoom.png"))
    return overlays


def _finite(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else float("nan")
