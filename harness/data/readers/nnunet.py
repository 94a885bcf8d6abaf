"""The two ``dataset.json`` layouts of the field: nnU-Net v2's raw dataset and the Medical Segmentation
Decathlon's.

nnU-Net v2 (documentation/dataset_format.md): ``imagesTr/{case}_{XXXX}{file_ending}`` one file per
channel (``channel_names`` in dataset.json), ``labelsTr/{case}{file_ending}``, optional ``imagesTs``
(and ``labelsTs``); ``labels`` maps a name to a value or, for regions, to a list of values (one task
label that is the union of those values: ``whole_tumour = [1, 2, 3]``). A ``splits_final.json``
(nnU-Net's list of folds, each ``{"train": [...], "val": [...]}``) picks the validation cases of a fold.
The Decathlon: ``training`` is a list of ``{"image", "label"}`` paths, ``test`` a list of image paths,
``labels`` maps value -> name, ``modality`` index -> name; multi-modal images are 4D (x, y, z, c).

Cases are listed from the folders or dataset.json alone, never by opening a volume (a task of
thousands of cases starts at once); each ``read`` opens one case's files. Spacing and affine come
from every file (volume_files.py), so per-case spacing needs no task setting; the task's labels come
from ``segbench tasks init`` (data/layouts.py), which writes dataset.json's labels and regions into the
task file for the user to review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.base import MASK_VALUE_KEYS, Reader
from segbench.data.readers.decode import apply_intensity, decode_mask, select_labels
from segbench.data.readers.volume_files import load_image
from segbench.data.specs import TaskSpec
from segbench.errors import ConfigError, DataError
from segbench.strict import Kind

SPLITS = ("train", "test")
DATASET_KEYS: dict[str, Kind] = {
    "split": SPLITS,
    "fold": "integer",
    "splits": "path",
    "channel": "integer",
    "exclude": "strings",
}


def read_dataset_json(reader: Reader) -> dict[str, Any]:
    path = reader.confined("dataset.json", "dataset.json")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(reader.task.source, f"{path} not found (the layout's dataset.json)") from None
    except (OSError, ValueError) as error:
        raise ConfigError(reader.task.source, f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(reader.task.source, f"{path}: expected a JSON object")
    return document


class _DatasetJsonReader(Reader):
    """Common part: one image (a channel of it) and one label file per case, listed by the subclass."""

    DATA_KEYS = {**DATASET_KEYS, **MASK_VALUE_KEYS}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        self.dataset = read_dataset_json(self)
        self.split = self.option("split", str, default="train")
        self.channel = self.option("channel", int, default=0)
        self.cases: dict[str, tuple[list[Path], Path | None]] = self.list_cases()
        fold = self.option("fold", int)
        if fold is not None:
            wanted = self._fold_cases(fold)
            self.cases = {case_id: files for case_id, files in self.cases.items() if case_id in wanted}
        for case_id in self.option("exclude", list, default=[]):
            self.cases.pop(case_id, None)
        if not self.cases:
            raise ConfigError(task.source, f"no {self.split} case found under {self.root}")

    def list_cases(self) -> dict[str, tuple[list[Path], Path | None]]:
        """Case id -> (image files by channel, label file or None), from names alone."""
        raise NotImplementedError

    def _fold_cases(self, fold: int) -> set[str]:
        path = self.confined(self.option("splits", str, default="splits_final.json"), "[data] splits")
        try:
            folds = json.loads(path.read_text(encoding="utf-8"))
            return set(folds[fold]["val"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            raise ConfigError(
                self.task.source, f"[data] fold {fold}: cannot read its cases from {path} ({error})"
            ) from None

    def case_ids(self) -> list[str]:
        return list(self.cases)

    def files(self, case_id: str) -> list[Path]:
        images, label = self.cases[case_id]
        return [*images, *([label] if label is not None else [])]

    def _channels(self, images: list[Path]) -> tuple[np.ndarray, tuple[float, ...], np.ndarray | None, Path]:
        """The task's channel of the case (a 4D Decathlon volume's channel axis, or nnU-Net's file)."""
        path = images[min(self.channel, len(images) - 1)]
        array, spacing, affine = load_image(path)
        if (
            len(images) == 1
            and array.ndim == self.task.dim + 1
            and not (self.task.dim == 2 and array.shape[-1] in (3, 4))
        ):
            if not 0 <= self.channel < array.shape[-1]:
                raise DataError(path, f"[data] channel {self.channel} but the image has {array.shape[-1]} channel(s)")
            array = np.ascontiguousarray(array[..., self.channel])
        elif len(images) == 3 and self.task.dim == 2 and array.ndim == 2:  # nnU-Net 2D RGB: R, G, B files
            array = np.stack([array, *(load_image(p)[0] for p in images[1:])], axis=-1)
        return array, spacing, affine, path

    def read(self, case_id: str) -> Case:
        images, label_path = self.cases[case_id]
        raw, spacing, affine, image_path = self._channels(images)
        if label_path is None:
            raise DataError(image_path, f"case '{case_id}' has no label file in this split")
        mask_array, _, _ = load_image(label_path)
        planar = self.task.dim == 2
        mask = decode_mask(mask_array, self.task.data, label_path, planar=planar)
        shape = raw.shape[:2] if planar else raw.shape
        if mask.shape != shape:
            raise DataError(label_path, f"label {mask.shape} differs from image {shape} ({image_path.name})")
        unit = "mm"
        if not spacing:  # a picture format (nnU-Net 2D .png): no spacing in the file
            spacing, unit = (self.task.spacing, "mm") if self.task.spacing else ((1.0,) * self.task.dim, "px")
        elif planar and len(spacing) == 3:
            spacing = spacing[1:]
        pixels = apply_intensity(raw, self.task.intensity, image_path, channels=planar)
        labels = select_labels(mask, self.task.labels, label_path)
        return Case(case_id, pixels, labels, tuple(spacing), tuple(self.files(case_id)), unit, raw=raw, affine=affine)


class NnUNetRaw(_DatasetJsonReader):
    """``[data]``: ``split`` (``"train"``: imagesTr/labelsTr, default; ``"test"``: imagesTs/labelsTs),
    ``fold`` (only the validation cases of that fold of ``splits`` = ``splits_final.json``),
    ``channel`` (which ``_XXXX`` file, default 0), ``exclude``, ``mask_levels`` / ``mask_threshold``."""

    def list_cases(self) -> dict[str, tuple[list[Path], Path | None]]:
        ending = self.dataset.get("file_ending")
        if not isinstance(ending, str) or not ending.startswith("."):
            raise ConfigError(self.task.source, f"{self.root / 'dataset.json'}: 'file_ending' must be like \".nii.gz\"")
        channels = self.dataset.get("channel_names") or {"0": ""}
        count = len(channels) if isinstance(channels, dict) else 1
        images, labels = ("imagesTr", "labelsTr") if self.split == "train" else ("imagesTs", "labelsTs")
        image_dir = self.confined(images, f"{images}/")
        label_dir = self.confined(labels, f"{labels}/")
        suffix = f"_0000{ending}"
        if self.split == "train":  # labels define the training cases
            names = sorted(p.name[: -len(ending)] for p in _listing(label_dir) if p.name.endswith(ending))
        else:
            names = sorted(p.name[: -len(suffix)] for p in _listing(image_dir) if p.name.endswith(suffix))
        cases: dict[str, tuple[list[Path], Path | None]] = {}
        for name in names:
            files = [self._inside(image_dir, f"{name}_{c:04d}{ending}") for c in range(count)]
            label = label_dir / f"{name}{ending}"
            cases[name] = (files, self._inside(label_dir, label.name) if label.exists() else None)
        return cases

    def _inside(self, folder: Path, name: str) -> Path:
        """``folder / name`` for a confined ``folder``: only a symlink can lead out, so only a symlink
        is resolved (a thousand cases list in milliseconds)."""
        path = folder / name
        if path.is_symlink() or "/" in name or name in ("", ".", ".."):
            return self.confined(path.relative_to(self.root), f"{folder.name}/")
        return path


class DecathlonLayout(_DatasetJsonReader):
    """``[data]``: ``split`` (``"train"``: dataset.json's ``training`` pairs, default; ``"test"``: its
    ``test`` images, which have no labels), ``channel`` (of 4D multi-modal images), ``fold``, ``exclude``."""

    def list_cases(self) -> dict[str, tuple[list[Path], Path | None]]:
        entries = self.dataset.get("training" if self.split == "train" else "test")
        if not isinstance(entries, list):
            raise ConfigError(self.task.source, f"{self.root / 'dataset.json'}: no '{self.split}' list")
        cases: dict[str, tuple[list[Path], Path | None]] = {}
        for entry in entries:
            image, label = (entry.get("image"), entry.get("label")) if isinstance(entry, dict) else (entry, None)
            if not isinstance(image, str) or not (label is None or isinstance(label, str)):
                raise ConfigError(self.task.source, f"dataset.json entry {entry!r}: expected image (and label) paths")
            image_path = self.confined(_relative(image), "dataset.json image")
            label_path = self.confined(_relative(label), "dataset.json label") if label else None
            case_id = image_path.name.split(".")[0]
            cases[case_id] = ([image_path], label_path)
        return dict(sorted(cases.items()))


def _relative(text: str) -> str:
    return text[2:] if text.startswith("./") else text


def _listing(folder: Path) -> list[Path]:
    """Files of ``folder`` except hidden ones (the Decathlon tarballs carry macOS ``._`` twins)."""
    if not folder.is_dir():
        return []
    return [path for path in folder.iterdir() if not path.name.startswith(".")]
