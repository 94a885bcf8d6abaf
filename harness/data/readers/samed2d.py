"""SAM-Med2D's own data format: PNG slices plus JSON indexes from image to mask files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.base import MASK_VALUE_KEYS, Reader
from segbench.data.readers.decode import apply_intensity, decode_mask, read_image_file, select_labels
from segbench.data.specs import LabelSpec, TaskSpec
from segbench.errors import ConfigError, DataError

WILDCARD = "*"


class SamMed2DIndex(Reader):
    """``[data]``: ``index`` (JSON files, image → [masks] or mask → image, paths relative to the
    dataset folder), ``label_pattern`` (regex on the mask file stem with a ``label`` group; the
    structure name), ``mask_threshold``. Masks of one structure are united into one label. The label
    ``"*"`` in ``[labels]`` accepts every structure; otherwise only the listed ones are read."""

    DATA_KEYS = {"index": "paths", "label_pattern": "regex", **MASK_VALUE_KEYS}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        self.pattern = re.compile(self.option("label_pattern", str, default=r"^.+?_(?P<label>[a-z].*)_\d+$"))
        if "label" not in self.pattern.groupindex:
            raise ConfigError(
                task.source, f"[data] label_pattern needs a (?P<label>...) group, got {self.pattern.pattern!r}"
            )
        self.masks: dict[str, list[Path]] = {}
        for name in self.option("index", list, required=True):
            path = self.confined(name, "[data] index")
            try:
                index = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise ConfigError(task.source, f"index {path}: {error}") from None
            if not isinstance(index, dict):
                raise ConfigError(task.source, f"index {path}: expected a JSON object of image -> mask files")
            for key, value in index.items():
                pairs = [(key, m) for m in value] if isinstance(value, list) else [(value, key)]
                for image, mask in pairs:
                    if not isinstance(image, str) or not isinstance(mask, str):
                        raise ConfigError(task.source, f"index {path}: entries must be file names, got {mask!r}")
                    # the index's entries are paths too: confined like the task's own
                    where = f"[data] index {name!r} entry"
                    self.confined(image, where)
                    self.masks.setdefault(image, []).append(self.confined(mask, where))
        self.images = {Path(image).with_suffix("").as_posix(): image for image in sorted(self.masks)}
        self.wildcard = any(label.name == WILDCARD for label in task.labels)

    def case_ids(self) -> list[str]:
        return list(self.images)

    def files(self, case_id: str) -> list[Path]:
        image = self.images[case_id]
        return [self.confined(image, "[data] index entry"), *sorted(self.masks[image])]

    def _structure(self, mask_path: Path) -> str:
        match = self.pattern.match(mask_path.stem)
        if match is None:
            raise DataError(mask_path, f"file name does not match label_pattern {self.pattern.pattern!r}")
        return match.group("label")

    def read(self, case_id: str) -> Case:
        image_name = self.images[case_id]
        image_path = self.confined(image_name, "[data] index entry")
        image = apply_intensity(read_image_file(image_path), self.task.intensity, image_path, channels=True)
        wanted = {label.name for label in self.task.labels}
        labels: dict[str, np.ndarray] = {}
        for mask_path in sorted(self.masks[image_name]):
            structure = self._structure(mask_path)
            if not self.wildcard and structure not in wanted:
                continue
            mask = decode_mask(read_image_file(mask_path), self.task.data, mask_path, planar=True)
            if mask.shape != image.shape[:2]:
                raise DataError(mask_path, f"mask shape {mask.shape} differs from image {image.shape[:2]}")
            selected = select_labels(mask, [LabelSpec(structure, None)])[structure]
            labels[structure] = labels[structure] | selected if structure in labels else selected
        spacing, unit = (self.task.spacing, "mm") if self.task.spacing else ((1.0, 1.0), "px")
        return Case(case_id, image, labels, spacing, tuple(self.files(case_id)), unit)
