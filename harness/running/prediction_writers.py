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
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.volume_files import LPS_TO_RAS

Masks = np.ndarray | Mapping[str, np.ndarray]


def label_image(case: Case, masks: Masks) -> tuple[np.ndarray, list[str]]:
    """(uint8/uint16 label image of the case's shape, label names by value - 1)."""
    named = {"prediction": masks} if isinstance(masks, np.ndarray) else dict(masks)
    out = np.zeros(case.shape, dtype=np.uint8 if len(named) < 256 else np.uint16)
    for value, (name, mask) in enumerate(named.items(), start=1):
        if mask.shape != case.shape:
            raise ValueError(f"mask '{name}' has shape {mask.shape}, case {case.case_id} has {case.shape}")
        out[mask.astype(bool)] = value
    return out, list(named)


def _affine(case: Case) -> np.ndarray:
    if case.affine is not None:
        return np.asarray(case.affine, dtype=np.float64)
    spacing = list(case.spacing) + [1.0] * (3 - case.ndim)
    return np.diag([*spacing, 1.0])


def write_nifti(case: Case, masks: Masks, path: Path) -> Path:
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


def write_cvpr_npz(case: Case, masks: Masks, path: Path) -> Path:
    labels, _ = label_image(case, masks)
    np.savez_compressed(path, segs=labels, spacing=np.asarray(list(reversed(case.spacing)), dtype=np.float64))
    return path


def _source_series(case: Case) -> list[Any]:
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


def write_dicom_seg(case: Case, masks: Masks, path: Path, software: str = "segbench") -> Path:
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


WRITERS = {"nifti": write_nifti, "dicom-seg": write_dicom_seg, "cvpr-npz": write_cvpr_npz}
