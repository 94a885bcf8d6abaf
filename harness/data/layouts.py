"""``segbench tasks init PATH``: recognise a dataset's layout and write a task file for the user to review.

Layouts are tried in order, each from a few names and at most one case's files:

1. nnU-Net v2 raw: ``dataset.json`` with ``file_ending`` (or ``channel_names``); labels and regions
   from its ``labels``, modality from ``channel_names["0"]``.
2. Medical Segmentation Decathlon: ``dataset.json`` with a ``training`` list; labels value -> name,
   modality from ``modality["0"]``.
3. CVPR 2024/2025 npz: ``*.npz`` holding ``imgs`` and ``gts``; 2D when ``imgs`` is (H, W, 3);
   ``allow_pickle`` when the files carry 2025's object arrays (commented: the user must vouch).
4. DICOM: case folders of ``.dcm`` files with one SEG or RTSTRUCT; labels from its segments or ROIs.
5. HDF5: ``*.h5`` with ``image`` and ``label`` arrays (the left-atrium set).
6. NIfTI folders: one label volume per folder whose name says so (``seg``, ``label``, ``gt``,
   ``OT...`` as BRATS calls it), the image the first other volume (the rest listed in a comment).

Where a file names no labels (npz, HDF5, NIfTI), the values found in the first case become labels
``label_<v>``, plus ``foreground = "nonzero"`` when there are several. Intensity: CT (by name, or a
minimum below -500) gets a soft-tissue window (level 40, width 400), 8-bit 2D images ``rgb8``, other
images the 0.5-99.5 percentile clip of non-zero voxels (what MedSAM's preprocessing does for MR).
Protocols: ``box`` in 2D, ``slice_boxes`` and ``key_slice_box`` in 3D. Each guess is marked
``# REVIEW`` in the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segbench.errors import ConfigError

LABEL_NAME = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|gt|truth|ot[a-z]*)$")
NIFTI = (".nii", ".nii.gz")


@dataclass
class Layout:
    """What ``tasks init`` found: the [data] table, labels, and the guesses it made."""

    reader: str
    dim: int
    data: dict[str, Any]
    labels: dict[str, Any]  # name -> "nonzero" | list of values
    modality: str = ""
    intensity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)  # suggested beside the default ones


def label_key(name: str) -> str:
    """A label name as a task file key: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "label"


def _intensity(modality: str, low_value: float | None, dim: int, dtype: str = "") -> dict[str, Any]:
    if "ct" in re.split(r"[^a-z]+", modality.lower()) or (low_value is not None and low_value < -500):
        return {"policy": "window", "level": 40.0, "width": 400.0}
    if dim == 2 and dtype == "uint8":
        return {"policy": "rgb8"}
    return {"policy": "percentile", "low": 0.5, "high": 99.5}


def _values_labels(values: np.ndarray) -> dict[str, Any]:
    found = [int(v) for v in np.unique(values) if v != 0]
    labels: dict[str, Any] = {f"label_{v}": [v] for v in found}
    if len(found) > 1:
        labels = {"foreground": "nonzero", **labels}
    return labels or {"foreground": "nonzero"}


def _dataset_json(path: Path) -> dict[str, Any] | None:
    file = path / "dataset.json"
    if not file.is_file():
        return None
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(file, f"not a readable JSON file ({error})") from None
    return document if isinstance(document, dict) else None


def _first_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    from segbench.data.readers.volume_files import load_image

    array, spacing, _ = load_image(path)
    return array, spacing


def _nnunet(path: Path, document: Mapping[str, Any]) -> Layout:
    ending = str(document.get("file_ending", ".nii.gz"))
    labels: dict[str, Any] = {}
    notes = []
    for name, value in (document.get("labels") or {}).items():
        values = value if isinstance(value, list) else [value]
        if str(name) == "ignore":  # nnU-Net v2's unannotated voxels: not a structure to segment
            notes.append(f"label 'ignore' = {value} left out: its voxels are scored as background")
        elif values and values != [0]:
            labels[label_key(str(name))] = [int(v) for v in values]
    channels = document.get("channel_names") or {}
    modality = str(channels.get("0", "")) if isinstance(channels, dict) else ""
    images = sorted((path / "imagesTr").glob(f"*_0000{ending}"))
    notes.insert(0, f"nnU-Net raw dataset, file_ending {ending!r}, channels {dict(channels)}")
    dim, low, dtype = (2 if ending in (".png", ".bmp", ".jpg", ".jpeg", ".tif") else 3), None, ""
    if images:
        array, _ = _first_volume(images[0])
        dim = 2 if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4) and ending == ".png") else 3
        low, dtype = float(array.min()), str(array.dtype)
    data: dict[str, Any] = {"reader": "nnunet_raw"}
    if (path / "splits_final.json").is_file():
        notes.append("splits_final.json found: add fold = N to read only that fold's validation cases")
    return Layout("nnunet_raw", dim, data, labels, modality, _intensity(modality, low, dim, dtype), notes)


def _decathlon(path: Path, document: Mapping[str, Any]) -> Layout:
    labels = {
        label_key(str(name)): [int(value)]
        for value, name in (document.get("labels") or {}).items()
        if str(value) != "0"
    }
    modalities = document.get("modality") or {}
    modality = str(modalities.get("0", "")) if isinstance(modalities, dict) else ""
    data: dict[str, Any] = {"reader": "decathlon"}
    notes = [f"Medical Segmentation Decathlon layout, modalities {dict(modalities)}"]
    if isinstance(modalities, dict) and len(modalities) > 1:
        data["channel"] = 0
        notes.append("several modalities: [data] channel picks one (0-based)")
    low = None
    training = document.get("training") or []
    if training and isinstance(training[0], dict) and isinstance(training[0].get("image"), str):
        image = path / training[0]["image"].removeprefix("./")
        if image.is_file():
            low = float(_first_volume(image)[0].min())
    return Layout("decathlon", 3, data, labels, modality, _intensity(modality, low, 3), notes)


def _npz(path: Path, files: list[Path]) -> Layout | None:
    try:
        with np.load(files[0], allow_pickle=False) as npz:
            if "imgs" not in npz or "gts" not in npz:
                return None
            imgs, gts, keys = npz["imgs"], npz["gts"], set(npz.files)
            pickled = []
            for key in ("boxes", "clicks", "clicks_order"):
                if key in keys:
                    try:
                        npz[key]
                    except ValueError:
                        pickled.append(key)
    except (OSError, ValueError):
        return None
    dim = 2 if imgs.ndim == 3 and imgs.shape[-1] == 3 else 3
    data: dict[str, Any] = {"reader": "cvpr_npz", "images": _common_glob(path, files)}
    notes = ["CVPR challenge npz files (imgs, gts)" + (", with boxes" if "boxes" in keys else "")]
    if pickled:
        data["allow_pickle"] = False
        notes.append(
            f"{pickled} are pickled object arrays (CVPR 2025): set allow_pickle = true only if you trust the files"
        )
    if "spacing" not in keys and dim == 3:
        data["spacing"] = [1.0, 1.0, 1.0]
        notes.append("the files store no spacing: [data] spacing is a placeholder")
    intensity = _intensity("", float(imgs.min()), dim, str(imgs.dtype))
    labels = _values_labels(gts)
    given = ["given" if dim == 2 else "given_3d"] if "boxes" in keys else []  # replay the files' own boxes
    if given and any(value == "nonzero" for value in labels.values()):
        notes.append(f"{given[0]} replays the files' box of each mask value: a union label has none (a failed row)")
    return Layout("cvpr_npz", dim, data, labels, "", intensity, notes, given)


def _common_glob(root: Path, files: list[Path]) -> str:
    """One glob for ``files``: the parts of their relative paths that vary become ``*``."""
    parts = [f.relative_to(root).parts for f in files]
    depth = len(parts[0])
    if any(len(p) != depth for p in parts):
        return "**/*" + "".join(files[0].suffixes)
    out = []
    for i in range(depth):
        names = {p[i] for p in parts}
        out.append(names.pop() if len(names) == 1 else ("*" + "".join(files[0].suffixes) if i == depth - 1 else "*"))
    return "/".join(out)


def _dicom(path: Path) -> Layout | None:
    import pydicom

    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
        headers = []
        for file in files:
            try:
                headers.append(pydicom.dcmread(file, stop_before_pixels=True))
            except Exception:  # not a DICOM file
                continue
        if not headers:
            continue
        labels: dict[str, Any] = {}
        modality = ""
        for header in headers:
            kind = getattr(header, "Modality", "")
            if kind == "SEG":
                for segment in getattr(header, "SegmentSequence", []):
                    labels[label_key(str(segment.SegmentLabel))] = [int(segment.SegmentNumber)]
            elif kind == "RTSTRUCT":
                for roi in getattr(header, "StructureSetROISequence", []):
                    labels[label_key(str(roi.ROIName))] = [int(roi.ROINumber)]
            else:
                modality = kind
        notes = [f"DICOM series with SEG or RTSTRUCT labels (first case {folder.name})"]
        low = -1000.0 if modality == "CT" else None
        return Layout("dicom", 3, {"reader": "dicom"}, labels, modality, _intensity(modality, low, 3), notes)
    return None


def _hdf5(path: Path, files: list[Path]) -> Layout | None:
    import h5py

    try:
        with h5py.File(files[0], "r") as handle:
            if "image" not in handle or "label" not in handle:
                return None
            image, label = np.asarray(handle["image"]), np.asarray(handle["label"])
    except OSError:
        return None
    data: dict[str, Any] = {
        "reader": "hdf5",
        "images": _common_glob(path, files),
        "image_key": "image",
        "label_key": "label",
        "axes": "xyz",
        "spacing": [1.0, 1.0, 1.0],
    }
    notes = ["HDF5 volumes (image, label); they store no spacing: [data] spacing is a placeholder, axes a guess"]
    return Layout("hdf5", 3, data, _values_labels(label), "", _intensity("", float(image.min()), 3), notes)


def _nifti_folders(path: Path, files: list[Path]) -> Layout | None:
    by_folder: dict[Path, list[Path]] = {}
    for file in files:
        by_folder.setdefault(file.parent, []).append(file)
    cases = []
    for _, volumes in sorted(by_folder.items()):
        labels = [v for v in volumes if LABEL_NAME.search(_stem(v).lower())]
        images = sorted(v for v in volumes if v not in labels and "mask" not in _stem(v).lower())
        if len(labels) == 1 and images:
            cases.append((images, labels[0]))
    if not cases:
        return None
    images, label = cases[0]
    image_name = images[0].name
    data = {
        "reader": "nifti",
        "images": _common_glob(path, [c[0][0] for c in cases if c[0][0].name == image_name]),
        "mask": "{dir}/" + label.name,
    }
    notes = [f"NIfTI folders: image {image_name!r}, label {label.name!r}"]
    if len(images) > 1:
        notes.append("other volumes beside it: " + ", ".join(repr(i.name) for i in images[1:]))
    array, _ = _first_volume(images[0])
    values, _ = _first_volume(label)
    return Layout("nifti", 3, data, _values_labels(values), "", _intensity("", float(array.min()), 3), notes)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem


def detect(path: Path) -> Layout:
    """The layout of the dataset folder ``path``; a ConfigError when none is recognised."""
    if not path.is_dir():
        raise ConfigError(path, "not a folder")
    document = _dataset_json(path)
    if document is not None and ("file_ending" in document or "channel_names" in document):
        return _nnunet(path, document)
    if document is not None and isinstance(document.get("training"), list):
        return _decathlon(path, document)
    npz = sorted(path.rglob("*.npz"))
    found = _npz(path, npz) if npz else None
    if found is None and any(path.rglob("*.dcm")):
        found = _dicom(path)
    h5 = sorted(path.rglob("*.h5")) if found is None else []
    if h5:
        found = _hdf5(path, h5)
    niftis = sorted(p for p in path.rglob("*") if p.name.endswith(NIFTI)) if found is None else []
    if niftis:
        found = _nifti_folders(path, niftis)
    if found is None:
        raise ConfigError(
            path, "no known layout (nnU-Net raw, Decathlon, CVPR npz, DICOM, HDF5, NIfTI folders) recognised"
        )
    return found


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def task_toml(layout: Layout, name: str, dataset: str) -> str:
    """The task file text (comments mark what the user should review)."""
    lines = ["# written by `segbench tasks init`: REVIEW every value before a run counts", ""]
    lines += [f"# {note}" for note in layout.notes]
    lines += ["[task]", f"name = {_toml_value(name)}", 'version = "1"']
    lines += [f"description = {_toml_value(f'{name} ({layout.reader} layout)')}"]
    lines += [f"modality = {_toml_value(layout.modality)}", f"dim = {layout.dim}", ""]
    lines += ["[data]", f"reader = {_toml_value(layout.reader)}", f"dataset = {_toml_value(dataset)}"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in layout.data.items() if k != "reader"]
    lines += ["", "# REVIEW: the intensity policy is a guess from the modality and the value range", "[intensity]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in layout.intensity.items()]
    lines += ["", "[labels]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in layout.labels.items()]
    protocols = (["box"] if layout.dim == 2 else ["slice_boxes", "key_slice_box"]) + layout.protocols
    lines += ["", "[prompts]", f"protocols = {_toml_value(protocols)}", ""]
    return "\n".join(lines)


def init_task(path: Path, data_root: Path, name: str | None = None) -> str:
    """The task file text for the dataset folder ``path`` (inside ``data_root``)."""
    path, root = path.resolve(), data_root.resolve()
    if not path.is_relative_to(root):
        raise ConfigError(path, f"the dataset must lie inside the data root {root}")
    layout = detect(path)
    dataset = path.relative_to(root).as_posix()
    return task_toml(layout, name or label_key(path.name).replace("_", "-"), dataset)
