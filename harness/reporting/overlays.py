"""The case drill-down of one (task, protocol): for each adapter, its best, median and worst
(case, label) of the run, each shown for every adapter side by side, and the cases it failed.

Picks. An adapter's ok final-step rows are ordered by the headline metric (Dice), ties broken by case id then label; the
worst is the first, the median the lower middle, the best the last, and a pick says where it stands
("worst of 40 cases for A", "20 of 40"). Every picked (case, label) gets one cell per adapter, in the
table's order, so a column always holds one adapter and a row one case: drawn when the adapter
scored the case and its masks were kept (``segbench run`` keeps every case's by default), its scores
alone when they were not, "failed" with the error's first line when it failed, "not run" otherwise.

Colours. Each pixel is a true positive (prediction and truth), a false positive (prediction only) or
a false negative (truth only), filled at :data:`FILL_OPACITY` and edged solid in Okabe–Ito bluish
green, vermillion and yellow. Of the Okabe–Ito triples this one keeps the three farthest apart under
simulated protanopia, deuteranopia and tritanopia (Machado et al. 2009, severity 1: CIELAB distance
at least 33 for every pair and every deficiency; bluish green / vermillion / blue, the usual choice,
falls to 17 under tritanopia). The prompt is drawn in white edged in black, by shape: a box as a
rectangle, a positive click as a filled disc with a plus, a negative click as a cross; a volume shows
what was given on the shown slice. Support protocols list the support set's case ids, with a
thumbnail where the run kept the pool case's preview.

Files. Every image is WebP at quality :data:`OVERLAY_QUALITY` (a tenth of a PNG's size or of a lossless
WebP's on the smoke data, the colours and lines still plain at the shown size; docs/leaderboard.md has
the figures), named by the hash of its bytes, so a picture shown in several rows, protocols or builds
is one file, and two builds of the same runs name the same files.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image, ImageDraw
from scipy import ndimage

from segbench.measuring.metric_table import BUILTIN_METRICS, HEADLINE, MetricSpec
from segbench.running.kept_masks import SavedPrediction, case_key, read_case, webp

TP_RGB = (0x00, 0x9E, 0x73)  # Okabe–Ito bluish green: true positive
FP_RGB = (0xD5, 0x5E, 0x00)  # Okabe–Ito vermillion: false positive
FN_RGB = (0xF0, 0xE4, 0x42)  # Okabe–Ito yellow: false negative
PROMPT_RGB = (0xFF, 0xFF, 0xFF)  # the prompt, edged in EDGE_RGB
EDGE_RGB = (0x00, 0x00, 0x00)
FILL_OPACITY = 0.45
CROP_MIN = 48  # pixels: the smallest object extent a thumbnail zooms to
THUMBNAIL_SIZE = 96  # pixels: the long side of a support case's thumbnail
OVERLAY_QUALITY = 80  # WebP quality of the drawn overlays (docs/leaderboard.md: sizes against PNG)
OVERLAY_METHOD = 2  # WebP effort: a third of the time of the default 4 for 5% more bytes (a report draws hundreds)
PICKS = ("best", "median", "worst")
LEGEND = (
    "true positive bluish green, false positive vermillion, false negative yellow; "
    "prompt in white: box as a rectangle, positive click as a disc with a plus, negative click as a cross"
)


def _content_name(folder: str, data: bytes) -> str:
    return f"{folder}/{hashlib.sha256(data).hexdigest()[:20]}.webp"


def _write_once(out: Path, name: str, data: bytes) -> None:
    path = out / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` resized (nearest) to ``size`` = (width, height)."""
    if mask.shape[::-1] == size:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127


def overlay(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The (h, w, 3) uint8 overlay at the image's (preview) size: true positives, false positives and
    false negatives each filled and edged in their colour."""
    height, width = image.shape[:2]
    truth, prediction = _fit(truth, (width, height)), _fit(prediction, (width, height))
    thickness = max(1, round(max(height, width) / 256))
    out = image[..., :3].astype(np.float32)
    for region, colour in ((truth & prediction, TP_RGB), (prediction & ~truth, FP_RGB), (truth & ~prediction, FN_RGB)):
        rgb = np.array(colour, dtype=np.float32)
        out[region] = (1 - FILL_OPACITY) * out[region] + FILL_OPACITY * rgb
        out[region & ~ndimage.binary_erosion(region, iterations=thickness)] = rgb
    return out.round().astype(np.uint8)


def given_on_slice(prompts: Sequence[dict[str, Any]], slice_index: int | None) -> list[dict[str, Any]]:
    """The 2D prompts (``box``, ``points``, ``labels`` in original pixels) of a row's ``prompt_json``
    that lie on the shown image: a volume's prompts on ``slice_index``, support entries' prompts."""
    shown = []
    for entry in prompts:
        if "slices" in entry:
            entry = entry["slices"].get(str(slice_index), {}) if slice_index is not None else {}
        shown.append({str(key): entry[key] for key in ("box", "points", "labels") if key in entry})
    return [entry for entry in shown if entry]


def draw_prompts(pixels: np.ndarray, prompts: Sequence[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """``pixels`` with ``prompts`` (2D, in the coordinates of an image of ``shape`` = (H, W)) drawn on
    it, scaled to its size."""
    height, width = pixels.shape[:2]
    scale_y, scale_x = height / shape[0], width / shape[1]

    def at(x: float, y: float) -> tuple[float, float]:  # pixel centres map to pixel centres
        return (x + 0.5) * scale_x - 0.5, (y + 0.5) * scale_y - 0.5

    thickness = max(1, round(max(height, width) / 256))
    radius = max(4, round(max(height, width) / 50))  # a click stays visible on a zoomed-out card
    picture = Image.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    for prompt in prompts:
        if "box" in prompt:
            (x0, y0), (x1, y1) = at(*prompt["box"][:2]), at(*prompt["box"][2:])
            box = [round(x0), round(y0), round(x1), round(y1)]
            draw.rectangle([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], outline=EDGE_RGB, width=thickness + 2)
            draw.rectangle(box, outline=PROMPT_RGB, width=thickness)
        for (x, y), sign in zip(prompt.get("points", []), prompt.get("labels", []), strict=False):
            cx, cy = (round(v) for v in at(x, y))
            if sign:
                draw.ellipse(
                    [cx - radius, cy - radius, cx + radius, cy + radius],
                    fill=PROMPT_RGB,
                    outline=EDGE_RGB,
                    width=max(1, thickness // 2 + 1),
                )
                arm = radius - 1 - thickness
                draw.line([cx - arm, cy, cx + arm, cy], fill=EDGE_RGB, width=thickness)
                draw.line([cx, cy - arm, cx, cy + arm], fill=EDGE_RGB, width=thickness)
            else:
                for dx in (radius, -radius):
                    draw.line([cx - dx, cy - radius, cx + dx, cy + radius], fill=EDGE_RGB, width=thickness + 2)
                for dx in (radius, -radius):
                    draw.line([cx - dx, cy - radius, cx + dx, cy + radius], fill=PROMPT_RGB, width=thickness)
    return np.asarray(picture)


def box_masks(prompts: Sequence[dict[str, Any]], shape: tuple[int, int]) -> list[np.ndarray]:
    """The prompts' boxes as filled masks of ``shape``, so a zoomed window keeps them in view."""
    masks = []
    for prompt in prompts:
        if "box" in prompt:
            x0, y0, x1, y1 = (max(0, int(round(v))) for v in prompt["box"])
            mask = np.zeros(shape, bool)
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
            masks.append(mask)
    return masks


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


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "no error recorded"


def _finite(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else float("nan")


def _json_number(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class SupportCase:
    case_id: str
    thumbnail: str | None  # the pool case's preview with its truth, when the run kept it
    data: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(eq=False)
class Overlay:
    """One adapter's prediction of one (case, label) under one protocol, drawn once however often it
    is shown: the whole image and a window zoomed on the structure, the prompt on both."""

    adapter: str
    prompt: str  # the protocol
    case_id: str
    label: str
    dice: float
    sample: SavedPrediction
    protocol_key: str  # the protocol's name in the sample file
    given: list[dict[str, Any]]  # the row's prompt_json at the final step
    folder: str

    @property
    def slice_index(self) -> int | None:
        return self.sample.meta.get("slice")

    @property
    def elsewhere(self) -> str | None:
        """Where a volume's prompts were given when none lies on the shown slice ("slice 77")."""
        slices = sorted({int(z) for entry in self.given for z, given in entry.get("slices", {}).items() if given})
        if not slices or self.slice_index in slices:
            return None
        return f"slice {slices[0]}" if len(slices) == 1 else f"{len(slices)} slices, {slices[0]}–{slices[-1]}"

    @cached_property
    def _drawn(self) -> tuple[bytes, bytes]:
        image, truth, prediction = self.sample.load(self.protocol_key, self.label)
        shape = tuple(self.sample.meta["shape"])[-2:]
        prompts = given_on_slice(self.given, self.slice_index)
        drawn = draw_prompts(overlay(image, truth, prediction), prompts, shape)
        top, left, bottom, right = crop_box([truth, prediction, *box_masks(prompts, shape)], drawn.shape[:2])
        full = webp(drawn, OVERLAY_QUALITY, OVERLAY_METHOD)
        if (top, left, bottom, right) == (0, 0, *drawn.shape[:2]):
            return full, full  # the window is the whole image: one file
        return full, webp(drawn[top:bottom, left:right], OVERLAY_QUALITY, OVERLAY_METHOD)

    @property
    def file(self) -> str:
        """The whole image, relative to the site folder (named by its content)."""
        return _content_name(self.folder, self._drawn[0])

    @property
    def zoom(self) -> str:
        return _content_name(self.folder, self._drawn[1])

    @cached_property
    def support(self) -> list[SupportCase]:
        """The support set's pool cases (every ensemble member's, in order, once each)."""
        ids = list(dict.fromkeys(case_id for entry in self.given for case_id in entry.get("support", [])))
        return [self._support_case(case_id) for case_id in ids]

    def _support_case(self, case_id: str) -> SupportCase:
        path = self.sample.path.parent / f"case-{case_key(self.sample.meta['task'], case_id)}.npz"
        if not path.is_file():
            return SupportCase(case_id, None)
        image, truth = read_case(path)
        if self.label in truth:
            image = overlay(image, truth[self.label], truth[self.label])
        picture = Image.fromarray(image)
        picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
        data = webp(np.asarray(picture), OVERLAY_QUALITY, OVERLAY_METHOD)
        return SupportCase(case_id, _content_name(self.folder, data), data)

    @property
    def alt(self) -> str:
        where = f", slice {self.slice_index}" if self.slice_index is not None else ""
        return f"{self.adapter} on case {self.case_id}{where}, label {self.label}, Dice {self.dice:.3f}: {LEGEND}."

    def write(self, out: Path) -> None:
        """Write the overlay, its zoomed window and the support thumbnails under the site folder ``out``
        (a file already there has the same bytes: its name is their hash)."""
        full, zoom = self._drawn
        _write_once(out, self.file, full)
        _write_once(out, self.zoom, zoom)
        for case in self.support:
            if case.thumbnail and case.data:
                _write_once(out, case.thumbnail, case.data)


@dataclass(frozen=True)
class Cell:
    """One adapter's result on a picked (case, label)."""

    adapter: str
    status: str  # "ok", "failed" or "not run"
    scores: Mapping[str, float] = field(default_factory=dict)  # by metric name (NaN where not finite)
    unit: str | None = None  # of distances: "mm" or "px"; None when the run did not say
    error: str | None = None  # the error's first line, failed cells
    overlay: Overlay | None = None  # None: failed, not run, or its masks were not kept
    metrics: tuple[MetricSpec, ...] = BUILTIN_METRICS  # the task's metric table, in the caption's order

    def score(self, name: str) -> float:
        return self.scores.get(name, float("nan"))

    @property
    def dice(self) -> float:
        return self.score(HEADLINE)

    @property
    def nsd(self) -> float:
        return self.score("nsd")

    @property
    def hd95(self) -> float:
        return self.score("hd95")


@dataclass(frozen=True)
class Pick:
    """One row of the drill-down: the (case, label) that is ``names`` of ``adapter``'s cases, position
    ``position`` of ``total`` by Dice (1: the lowest), shown for every adapter."""

    names: tuple[str, ...]
    adapter: str
    case_id: str
    label: str
    position: int
    total: int
    cells: tuple[Cell, ...]

    @property
    def title(self) -> str:
        return f"{' = '.join(self.names)} of {self.total} cases for {self.adapter}"


@dataclass(frozen=True)
class Failure:
    case_id: str
    label: str  # "*": the case could not be read or encoded
    error: str  # the first line


@dataclass
class Drilldown:
    """A protocol's drill-down. Iterating it gives its overlays, each once, for :meth:`Overlay.write`;
    it is true when it has anything to show (a pick or a failure)."""

    adapters: list[str]  # the columns
    picks: list[Pick]
    failures: dict[str, list[Failure]]  # adapter -> its failed (case, label)s

    def __iter__(self) -> Iterator[Overlay]:
        seen: set[int] = set()
        for pick in self.picks:
            for cell in pick.cells:
                if cell.overlay is not None and id(cell.overlay) not in seen:
                    seen.add(id(cell.overlay))
                    yield cell.overlay

    def __bool__(self) -> bool:
        return bool(self.picks) or any(self.failures.values())

    def picks_of(self, adapter: str) -> list[Pick]:
        return [pick for pick in self.picks if pick.adapter == adapter]

    def record(self) -> dict[str, Any]:
        """What ``leaderboard.json`` holds of it."""
        return {
            "adapters": self.adapters,
            "picks": [
                {
                    "picks": list(p.names),
                    "adapter": p.adapter,
                    "case_id": p.case_id,
                    "label": p.label,
                    "n": p.position,
                    "of": p.total,
                    "cells": [
                        {
                            "adapter": c.adapter,
                            "status": c.status,
                            **{spec.name: _json_number(c.score(spec.name)) for spec in c.metrics},
                            "unit": c.unit,
                            "error": c.error,
                            "slice": c.overlay.slice_index if c.overlay else None,
                            "image": c.overlay.file if c.overlay else None,
                            "zoom": c.overlay.zoom if c.overlay else None,
                            "support": [s.case_id for s in c.overlay.support] if c.overlay else [],
                        }
                        for c in p.cells
                    ],
                }
                for p in self.picks
            ],
            "failures": {
                adapter: [{"case_id": f.case_id, "label": f.label, "error": f.error} for f in failures]
                for adapter, failures in self.failures.items()
            },
        }


def pick_cases(rows: pl.DataFrame) -> list[tuple[tuple[str, ...], int, dict]]:
    """Best, median (lower) and worst rows by the headline (Dice), ties broken by case and label, as (names,
    1-based position from the lowest Dice, row); a row that is several picks at once is listed once."""
    ordered = rows.filter(pl.col(HEADLINE).is_not_nan()).sort(HEADLINE, "case_id", "label")
    if not ordered.height:
        return []
    positions = {"best": ordered.height - 1, "median": (ordered.height - 1) // 2, "worst": 0}
    picked: dict[int, list[str]] = {}
    for name in PICKS:
        picked.setdefault(positions[name], []).append(name)
    return [
        (tuple(names), position + 1, ordered.row(position, named=True))
        for position, names in sorted(picked.items(), reverse=True)
    ]


def _sample_protocol(prompt: str) -> str:
    """The protocol's name in the sample files: a support-size sweep's table ``name (k=N)`` is ``name``."""
    return re.sub(r" \(k=\d+\)$", "", prompt)


def drilldown(
    final: pl.DataFrame,
    failed: pl.DataFrame,
    saved: dict[tuple[str, str], SavedPrediction],
    prompt: str,
    adapters: Sequence[str],
    folder: str = "cases",
    metrics: Sequence[MetricSpec] = BUILTIN_METRICS,
) -> Drilldown:
    """The drill-down of ``adapters`` (the columns, in that order) from ``final`` (one task and protocol,
    final step, status ok) and ``failed`` (the same task's failed rows of this protocol or of no protocol,
    ``*``), drawing from the kept masks in ``saved`` ((adapter, case id) → its sample); images are named
    under ``folder`` and drawn by :meth:`Overlay.write`; each cell shows the task's ``metrics``."""
    metrics = tuple(metrics)
    columns = [a for a in adapters if (final["adapter"] == a).any() or (failed["adapter"] == a).any()]
    by_adapter = final.partition_by("adapter", as_dict=True) if final.height else {}
    chosen = {adapter: pick_cases(by_adapter[(adapter,)]) for adapter in columns if (adapter,) in by_adapter}
    # the rows a cell shows: every adapter's at each picked (case, label), not the whole task's
    shown = pl.DataFrame(
        [(row["case_id"], row["label"]) for picked in chosen.values() for _, _, row in picked],
        schema={"case_id": final.schema["case_id"], "label": final.schema["label"]},
        orient="row",
    ).unique()
    ok = {
        (row["adapter"], row["case_id"], row["label"]): row
        for row in final.join(shown, on=["case_id", "label"], how="semi", maintain_order="left").to_dicts()
    }
    failures: dict[str, list[Failure]] = {}
    failed_at: dict[tuple[str, str, str], str] = {}
    for row in (
        failed.sort("adapter", "case_id", "label")
        .unique(["adapter", "case_id", "label"], maintain_order=True)
        .to_dicts()
    ):
        failure = Failure(row["case_id"], row["label"], _first_line(row["error"]))
        failures.setdefault(row["adapter"], []).append(failure)
        failed_at[(row["adapter"], row["case_id"], row["label"])] = failure.error
    protocol_key = _sample_protocol(prompt)
    drawn: dict[tuple[str, str, str], Overlay | None] = {}

    def overlay_of(adapter: str, case_id: str, label: str, row: dict[str, Any]) -> Overlay | None:
        key = (adapter, case_id, label)
        if key not in drawn:
            sample = saved.get((adapter, case_id))
            drawn[key] = (
                Overlay(
                    adapter,
                    prompt,
                    case_id,
                    label,
                    row[HEADLINE],
                    sample,
                    protocol_key,
                    json.loads(row.get("prompt_json") or "[]"),
                    folder,
                )
                if sample is not None and sample.has(protocol_key, label)
                else None
            )
        return drawn[key]

    def cell(adapter: str, case_id: str, label: str) -> Cell:
        row = ok.get((adapter, case_id, label))
        if row is not None:
            return Cell(
                adapter,
                "ok",
                {spec.name: _finite(row.get(spec.name)) for spec in metrics},
                row.get("unit"),
                overlay=overlay_of(adapter, case_id, label, row),
                metrics=metrics,
            )
        error = failed_at.get((adapter, case_id, label)) or failed_at.get((adapter, case_id, "*"))
        if error is not None:
            return Cell(adapter, "failed", error=error, metrics=metrics)
        return Cell(adapter, "not run", metrics=metrics)

    picks = []
    for adapter in columns:
        for names, position, row in chosen.get(adapter, []):
            total = int(by_adapter[(adapter,)].filter(pl.col(HEADLINE).is_not_nan()).height)
            picks.append(
                Pick(
                    names,
                    adapter,
                    row["case_id"],
                    row["label"],
                    position,
                    total,
                    tuple(cell(other, row["case_id"], row["label"]) for other in columns),
                )
            )
    return Drilldown(columns, picks, {a: failures[a] for a in columns if a in failures})
