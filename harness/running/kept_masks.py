"""Predicted masks a run keeps, so a leaderboard can show overlays of any case it picks.

By default every case is kept (``save_masks`` None), so the drill-down's best, median and worst are
chosen from every scored case of the run. ``save_masks`` N keeps a sample of N cases per task: the
same cases for every adapter, chosen by a hash of (seed, task, case id), so a rerun or another
executor picks the same ones; 0 keeps none. For each kept unit the runner keeps the final-step
prediction of every protocol and label and hands it to the store with the unit's rows (its
:class:`~segbench.running.unit_result.UnitResult`, which travels through any executor); the store writes:

* ``samples/case-<key>.npz``: the image preview (RGB uint8, long side at most :data:`PREVIEW_SIZE`
  pixels) and the ground truth of every label, written once per case by the first unit to get there;
* ``samples/<unit_id>.npz``: one adapter's predictions and a JSON record naming adapter, task, case,
  labels and protocols.

Masks are kept at the case's full resolution, bit-packed and compressed, the preview as WebP: on the
smoke data a unit file is 0.8-1.5 kB a case (0.4-1.5 kB a mask) and a case file 7-35 kB (docs/
leaderboard.md has the measured figures). A volume is cut to one representative slice: the one with
the largest ground-truth area over all labels. Scores always come from the full case; the sample is
for looking at.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from segbench.data.case import Case

if TYPE_CHECKING:
    from segbench.running.plan import WorkUnit

PREVIEW_SIZE = 512
PREVIEW_QUALITY = 90  # WebP quality of a kept preview: for looking at, never scored
# WebP effort of a kept preview: written once per case on the run's path, so the cheapest. On a 512² phantom
# preview (dev VM, CPU time) effort 0 takes 8.4 ms and 48.5 kB, the default 4 30.8 ms and 51.4 kB
PREVIEW_METHOD = 0


def sampled_cases(units: Iterable[WorkUnit], count: int | None, seed: int) -> frozenset[tuple[str, str]]:
    """(task, case id) of the ``count`` sampled cases of every task among ``units`` (None: every case)."""
    cases: dict[str, set[str]] = defaultdict(set)
    for unit in units:
        cases[unit.task].add(unit.case_id)
    chosen: set[tuple[str, str]] = set()
    for task, ids in cases.items():
        ranked = sorted(ids, key=lambda case_id: hashlib.sha256(f"{seed}\x1f{task}\x1f{case_id}".encode()).digest())
        chosen.update((task, case_id) for case_id in ranked[:count])
    return frozenset(chosen)


def case_key(task: str, case_id: str) -> str:
    return hashlib.sha256(f"{task}\x1f{case_id}".encode()).hexdigest()[:16]


def representative_slice(labels: Mapping[str, np.ndarray]) -> int:
    """The slice (first axis) of a volume with the largest ground-truth area over all labels."""
    union = np.logical_or.reduce([mask.astype(bool) for mask in labels.values()])
    return int(np.argmax(union.reshape(union.shape[0], -1).sum(axis=1)))


def preview(image: np.ndarray) -> np.ndarray:
    """An (h, w, 3) uint8 copy of a 2D image whose long side is at most PREVIEW_SIZE."""
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
    height, width = rgb.shape[:2]
    scale = PREVIEW_SIZE / max(height, width)
    if scale >= 1:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS))


def webp(pixels: np.ndarray, quality: int, method: int = 4) -> bytes:
    """(h, w, 3) uint8 pixels as lossy WebP of ``quality`` and effort ``method`` (0-6), deterministic
    for a given libwebp."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", quality=quality, method=method)
    return buffer.getvalue()


def _pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool), axis=None)


def _unpack(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)


@dataclass
class MaskSample:
    """One unit's kept predictions (2D: a volume is already cut to its representative slice)."""

    adapter: str
    task: str
    case_id: str
    image: np.ndarray  # preview, (h, w, 3) uint8
    slice_index: int | None  # the volume slice shown, None for 2D cases
    truth: dict[str, np.ndarray]  # label -> (H, W) bool
    predictions: dict[str, dict[str, np.ndarray]]  # protocol -> label -> (H, W) bool

    @classmethod
    def of(cls, unit: WorkUnit, case: Case, predictions: Mapping[str, Mapping[str, np.ndarray]]) -> MaskSample:
        """Cut the ground truth and the final predictions of ``case`` to what an overlay needs."""
        labels = sorted({label for by_label in predictions.values() for label in by_label})
        truth = {label: case.labels[label] for label in labels}
        index = representative_slice(truth) if case.ndim == 3 and truth else None

        def cut(array: np.ndarray) -> np.ndarray:
            return array[index] if index is not None else array

        return cls(
            unit.adapter,
            unit.task,
            unit.case_id,
            preview(cut(case.image)),
            index,
            {label: cut(mask).astype(bool) for label, mask in truth.items()},
            {
                prompt: {label: cut(mask).astype(bool) for label, mask in by_label.items()}
                for prompt, by_label in predictions.items()
            },
        )

    @property
    def case_file(self) -> str:
        return f"case-{case_key(self.task, self.case_id)}.npz"

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.truth.values())).shape if self.truth else self.image.shape[:2]

    def write_case(self, handle: BinaryIO) -> None:
        labels = sorted(self.truth)
        meta = {
            "task": self.task,
            "case_id": self.case_id,
            "shape": list(self.shape),
            "labels": labels,
            "slice": self.slice_index,
        }
        preview_bytes = np.frombuffer(webp(self.image, PREVIEW_QUALITY, PREVIEW_METHOD), dtype=np.uint8)
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta)), "image_webp": preview_bytes}
        arrays |= {f"truth_{i}": _pack(self.truth[label]) for i, label in enumerate(labels)}
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    def write_predictions(self, handle: BinaryIO) -> None:
        keys = sorted((prompt, label) for prompt, by_label in self.predictions.items() for label in by_label)
        meta = {
            "adapter": self.adapter,
            "task": self.task,
            "case_id": self.case_id,
            "case_file": self.case_file,
            "shape": list(self.shape),
            "slice": self.slice_index,
            "masks": [list(key) for key in keys],
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        arrays |= {f"mask_{i}": _pack(self.predictions[p][label]) for i, (p, label) in enumerate(keys)}
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SavedPrediction:
    """A unit's sample file on disk, read lazily: what it holds is in ``meta``."""

    path: Path
    meta: dict[str, Any]

    @property
    def case_path(self) -> Path:
        return self.path.parent / self.meta["case_file"]

    def has(self, prompt: str, label: str) -> bool:
        return [prompt, label] in self.meta["masks"] and self.case_path.is_file()

    def load(self, prompt: str, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image preview, ground truth, prediction) of one protocol and label."""
        image, truth = read_case(self.case_path)
        saved = _arrays(self.path, self.path.stat().st_mtime_ns)
        prediction = _unpack(saved[f"mask_{self.meta['masks'].index([prompt, label])}"], tuple(self.meta["shape"]))
        return image, truth[label], prediction


def read_case(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image preview, label → ground truth) of a ``case-<key>.npz`` file."""
    case = _arrays(path, path.stat().st_mtime_ns)
    meta = json.loads(str(case["meta"]))
    truth = {label: _unpack(case[f"truth_{i}"], tuple(meta["shape"])) for i, label in enumerate(meta["labels"])}
    return case["image"], truth


@lru_cache(maxsize=512)
def _arrays(path: Path, mtime_ns: int) -> dict[str, np.ndarray]:
    """Every array of a sample file, read once per report (a case is drawn for several adapters and
    protocols), the preview decoded (older runs kept it as a raw array); the modification
    time in the key keeps a rewritten file from being served stale."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    if "image_webp" in arrays:
        arrays["image"] = np.asarray(Image.open(io.BytesIO(arrays.pop("image_webp").tobytes())).convert("RGB"))
    return arrays


def saved_predictions(run_dir: Path) -> list[SavedPrediction]:
    """The unit sample files of a run (none when it saved no masks)."""
    found = []
    for path in sorted((Path(run_dir) / "samples").glob("*.npz")):
        if path.name.startswith("case-"):
            continue
        with np.load(path, allow_pickle=False) as saved:
            found.append(SavedPrediction(path, json.loads(str(saved["meta"]))))
    return found
