"""Predicted masks written out in the field's formats, for a user's viewer or a challenge submission.

Each writer takes the :class:`~segbench.data.case.Case` the prediction was made on and the masks
(one bool array of the case's shape, or label name -> bool array; several labels become one label
image with values 1, 2, ... in the order given, later labels winning where they overlap), and writes
them in the source's geometry:

- :func:`write_nifti`: NIfTI-1 with the source affine (``Case.affine``, which the NIfTI, nnU-Net and
  DICOM readers record; a case without one gets a diagonal affine from its spacing), axes back in the
  file's (x, y, z) order, so the mask overlays its image in any viewer.
- :func:`write_dicom_seg`: a binary DICOM-SEG (highdicom) whose frames reference the source series'
  instances, one segment per label; the case must come from the ``dicom`` reader (its sources are
  the series' files).
- :func:`write_cvpr_npz`: the CVPR challenges' submission file, ``segs`` (label image in the case's
  array order) and ``spacing`` (x, y, z as the challenge stores it).

A writer takes a :class:`~segbench.data.case.Case` or its :class:`Geometry` (what the writers read of
a case, without its pixels: what a unit's result carries to the store).

``segbench run --write-predictions FORMAT`` (``nifti``, ``dicom-seg``, ``npz``, or ``auto``: the
source's own format, :func:`resolve_format`) writes, as each unit's result is stored (the store's
``write_units``, whatever the executor), the final step's masks of every protocol to
``<run>/predictions/<adapter>/<task>/<protocol>/<case>.<ext>`` (``.nii.gz``, ``.dcm``, ``.npz``):
one label image a file, its values 1, 2, ... the task's labels in declared order (listed in
``<adapter>/<task>/labels.json``; a task taking every structure a file names, ``"*"``, records its
case's order in ``<case>.labels.json`` beside the file). Each file is written to a hidden temporary
in its folder and renamed, so a killed run leaves whole files only; a write that fails marks that
protocol's rows of the unit ``failed`` with the error (scores kept in the row), the run goes on, and
``--retry-failed`` writes it again.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.volume_files import LPS_TO_RAS

Masks = np.ndarray | Mapping[str, np.ndarray]
FORMATS = ("nifti", "dicom-seg", "npz")
EXTENSIONS = {"nifti": ".nii.gz", "dicom-seg": ".dcm", "npz": ".npz"}
# ``auto``: the reader's own format; a reader of NIfTI, PNG or other files gets NIfTI
SOURCE_FORMATS = {"dicom": "dicom-seg", "cvpr_npz": "npz", "npz": "npz"}
FOLDER = "predictions"


class Located(Protocol):
    """What a writer reads of a case: a :class:`~segbench.data.case.Case` or its :class:`Geometry`."""

    case_id: str
    spacing: tuple[float, ...]
    sources: tuple[Path, ...]
    affine: np.ndarray | None

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def ndim(self) -> int: ...


@dataclass(frozen=True)
class Geometry:
    """A case's geometry without its pixels: its shape, spacing, affine and source files."""

    case_id: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    sources: tuple[Path, ...] = ()
    affine: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @classmethod
    def of(cls, case: Case) -> Geometry:
        return cls(case.case_id, case.shape, case.spacing, tuple(case.sources), case.affine)


def resolve_format(asked: str, reader: str) -> str:
    """The format a task's predictions are written in: ``asked``, or for ``auto`` the source's own."""
    if asked == "auto":
        return SOURCE_FORMATS.get(reader, "nifti")
    if asked not in FORMATS:
        raise ValueError(f"prediction format must be auto or one of {FORMATS}, got {asked!r}")
    return asked


def label_image(case: Located, masks: Masks) -> tuple[np.ndarray, list[str]]:
    """(uint8/uint16 label image of the case's shape, label names by value - 1)."""
    named = {"prediction": masks} if isinstance(masks, np.ndarray) else dict(masks)
    out = np.zeros(case.shape, dtype=np.uint8 if len(named) < 256 else np.uint16)
    for value, (name, mask) in enumerate(named.items(), start=1):
        if mask.shape != case.shape:
            raise ValueError(f"mask '{name}' has shape {mask.shape}, case {case.case_id} has {case.shape}")
        out[mask.astype(bool)] = value
    return out, list(named)


def _affine(case: Located) -> np.ndarray:
    if case.affine is not None:
        return np.asarray(case.affine, dtype=np.float64)
    spacing = list(case.spacing) + [1.0] * (3 - case.ndim)
    return np.diag([*spacing, 1.0])


def write_nifti(case: Located, masks: Masks, path: Path) -> Path:
    import nibabel

    labels, _ = label_image(case, masks)
    affine = _affine(case)  # index in the case's order -> RAS mm
    if case.ndim == 3:
        array, file_affine = labels.transpose(2, 1, 0), affine[:, [2, 1, 0, 3]]
    else:  # (row, col) -> (x, y, 1)
        array, file_affine = labels.T[..., None], affine[:, [1, 0, 2, 3]]
    image = nibabel.Nifti1Image(np.ascontiguousarray(array), file_affine)
    image.set_qform(file_affine, code=1)
    image.set_sform(file_affine, code=1)
    nibabel.save(image, path)
    return path


def write_cvpr_npz(case: Located, masks: Masks, path: Path) -> Path:
    labels, _ = label_image(case, masks)
    np.savez_compressed(path, segs=labels, spacing=np.asarray(list(reversed(case.spacing)), dtype=np.float64))
    return path


def _source_series(case: Located) -> list[Any]:
    """The case's image slices as pydicom datasets, in the case's slice order."""
    import pydicom

    from segbench.data.readers.dicom import LABEL_MODALITIES, series_geometry

    datasets = [pydicom.dcmread(path) for path in case.sources]
    slices = [d for d in datasets if getattr(d, "Modality", "") not in LABEL_MODALITIES]
    if len(slices) != case.shape[0]:
        raise ValueError(f"case {case.case_id}: {len(slices)} source slices for a volume of {case.shape[0]}")
    order, _, lps = series_geometry(slices, Path(case.sources[0]))
    if case.affine is not None and not np.allclose(LPS_TO_RAS @ lps, case.affine, atol=1e-4):
        raise ValueError(f"case {case.case_id}: its source series no longer has the geometry it was read with")
    return [slices[i] for i in order]


def write_dicom_seg(case: Located, masks: Masks, path: Path, software: str = "segbench") -> Path:
    import highdicom
    from pydicom.sr.codedict import codes

    from segbench import __version__

    named = {"prediction": masks} if isinstance(masks, np.ndarray) else dict(masks)
    sources = _source_series(case)
    stack = np.stack([named[name].astype(bool) for name in named], axis=-1)
    algorithm = highdicom.AlgorithmIdentificationSequence(
        name=software, version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        highdicom.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=codes.cid7166.ConnectiveTissue,
            algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(named, start=1)
    ]
    seg = highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=stack,
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=highdicom.UID(),
        series_number=900,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer=software,
        manufacturer_model_name=software,
        software_versions=__version__,
        device_serial_number="0",
    )
    seg.save_as(path)
    return path


WRITERS: dict[str, Callable[..., Path]] = {"nifti": write_nifti, "dicom-seg": write_dicom_seg, "npz": write_cvpr_npz}


def _safe_part(part: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", part)
    return "_" if cleaned in ("", ".", "..") else cleaned


def relative_path(adapter: str, task: str, protocol: str, case_id: str, format: str) -> Path:
    """``<adapter>/<task>/<protocol>/<case>.<ext>`` under ``predictions/``; a case id's ``/`` become
    folders, and characters outside letters, digits, ``.``, ``_``, ``-`` become ``_`` (so no name
    leaves the run's folder)."""
    parts = [_safe_part(p) for p in (adapter, task, protocol, *case_id.split("/"))]
    return Path(*parts[:-1], parts[-1] + EXTENSIONS[format])


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write`` to a hidden temporary beside ``path`` (with ``path``'s extension, which nibabel and numpy
    go by), renamed over ``path``: a killed run leaves a whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data on disk before the rename names it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@dataclass
class UnitPredictions:
    """One unit's final masks to write: protocol -> label -> bool mask of the case's shape, in ``format``.

    ``labels`` is the value order of the label image (the task's declared labels; a label a case lacks
    is 0 everywhere); ``per_case_labels`` when the task takes every structure a file names (``"*"``), whose
    order may differ from case to case."""

    adapter: str
    task: str
    format: str
    geometry: Geometry
    labels: tuple[str, ...]
    masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    per_case_labels: bool = False

    def write(self, root: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
        """Write every protocol's file under ``root`` (the run's ``predictions/``); the rows of a protocol
        whose file could not be written become ``failed`` with the error. The paths written."""
        written: list[Path] = []
        for protocol, by_label in self.masks.items():
            relative = relative_path(self.adapter, self.task, protocol, self.geometry.case_id, self.format)
            try:
                self._write_one(root, relative, by_label)
                written.append(root / relative)
            except Exception as error:  # noqa: BLE001 - a file that cannot be written must not stop the run
                said = str(error).replace(str(root), FOLDER)  # the run's folder, not this machine's path
                message = f"prediction not written to {FOLDER}/{relative.as_posix()}: {type(error).__name__}: {said}"
                for row in rows:
                    if row.get("prompt") == protocol:
                        row["status"] = "failed"
                        row["error"] = row.get("error") or message
        return written

    def _write_one(self, root: Path, relative: Path, by_label: Mapping[str, np.ndarray]) -> None:
        empty = np.zeros(self.geometry.shape, bool)
        masks = {name: by_label.get(name, empty) for name in self.labels}
        index = {str(value): name for value, name in enumerate(self.labels, start=1)}
        if self.per_case_labels:
            sidecar = root / relative.parent / (relative.name[: -len(EXTENSIONS[self.format])] + ".labels.json")
            _atomic(sidecar, lambda tmp: tmp.write_text(json.dumps(index, indent=1)))
        else:
            listing = root / _safe_part(self.adapter) / _safe_part(self.task) / "labels.json"
            if not listing.is_file():
                _atomic(listing, lambda tmp: tmp.write_text(json.dumps(index, indent=1)))
        writer = WRITERS[self.format]
        _atomic(root / relative, lambda tmp: writer(self.geometry, masks, tmp))
