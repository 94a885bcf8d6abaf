"""Volumes with spacing: NIfTI (BraTS), HDF5 (left atrium), and MedSAM-style npz (2D or 3D).

Every volume comes out as (slice, row, column) = (z, y, x) with spacing in the same order, whatever
the file's own axis order, so metrics and prompts never have to know where a volume came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.base import GLOB_KEYS, MASK_VALUE_KEYS, GlobCases, Reader
from segbench.data.readers.decode import apply_intensity, decode_mask, select_labels
from segbench.data.specs import TaskSpec
from segbench.errors import ConfigError, DataError
from segbench.strict import Kind

AXES = ("xyz", "zyx")


def _to_zyx(array: np.ndarray, axes: str) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(2, 1, 0)) if axes == "xyz" else array


def _spacing_array(array: np.ndarray, path: Path) -> tuple[float, ...]:
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise DataError(path, f"spacing must be a list of numbers, got an array of shape {array.shape} ({array.dtype})")
    return tuple(float(v) for v in array)


class _VolumeReader(Reader):
    """Common part: a glob of files, axis order, spacing from the file or the task."""

    file_axes = "xyz"
    DATA_KEYS: ClassVar[Mapping[str, Kind]] = {**GLOB_KEYS, **MASK_VALUE_KEYS, "axes": AXES}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        self.cases = GlobCases(self)
        if not self.cases.paths:
            raise ConfigError(task.source, f"no file matches {self.cases.glob!r} under {self.root}")
        self.axes = self.option("axes", str, default=self.file_axes)
        if self.axes not in AXES:
            raise ConfigError(task.source, f"[data] axes must be one of {AXES}")

    def case_ids(self) -> list[str]:
        return list(self.cases.paths)

    def files(self, case_id: str) -> list[Path]:
        return [self.cases.paths[case_id]]

    def _spacing(self, stored: tuple[float, ...] | None, path: Path) -> tuple[float, ...]:
        if stored is not None:
            return stored
        if self.task.spacing is None:
            raise DataError(path, "the file stores no spacing; give [data] spacing in the task file")
        return self.task.spacing

    def _case(
        self,
        case_id: str,
        image: np.ndarray,
        mask: np.ndarray,
        spacing: tuple[float, ...],
        path: Path,
        unit: str = "mm",
        mask_path: Path | None = None,
    ) -> Case:
        planar = self.task.dim == 2
        pixels = apply_intensity(image, self.task.intensity, path, channels=planar)
        mask_path = mask_path or path
        labels = select_labels(decode_mask(mask, self.task.data, mask_path, planar=planar), self.task.labels, mask_path)
        return Case(case_id, pixels, labels, spacing, tuple(self.files(case_id)), unit, raw=image)


class NiftiVolumes(_VolumeReader):
    """``[data]``: ``images`` (glob of .nii/.nii.gz), ``mask`` (template of the label volume)."""

    DATA_KEYS = {**_VolumeReader.DATA_KEYS, "mask": "template"}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        self.mask_template = self.option("mask", str, required=True)

    def files(self, case_id: str) -> list[Path]:
        return [self.cases.paths[case_id], self.cases.resolve(self.mask_template, case_id, "[data] mask")]

    @staticmethod
    def _load(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
        import nibabel

        if not path.is_file():
            raise DataError(path, "file not found")
        try:
            volume: Any = nibabel.load(path)  # a Nifti1Image (nibabel types load() as its base class)
            array = np.asarray(volume.dataobj)
            zooms = tuple(float(z) for z in volume.header.get_zooms()[:3])
            affine = np.asarray(volume.affine, dtype=np.float64)
        except Exception as error:  # nibabel raises many types for corrupt files
            raise DataError(path, f"cannot read NIfTI volume ({error})") from None
        if array.ndim != 3:
            raise DataError(path, f"expected a 3D volume, got shape {array.shape}")
        return array, zooms, affine

    def read(self, case_id: str) -> Case:
        image_path = self.cases.paths[case_id]
        mask_path = self.cases.resolve(self.mask_template, case_id, "[data] mask")
        image, zooms, affine = self._load(image_path)
        mask, _, _ = self._load(mask_path)
        if mask.shape != image.shape:
            raise DataError(mask_path, f"label volume {mask.shape} differs from image {image.shape}")
        spacing = tuple(reversed(zooms)) if self.axes == "xyz" else zooms
        case = self._case(
            case_id, _to_zyx(image, self.axes), _to_zyx(mask, self.axes), spacing, image_path, mask_path=mask_path
        )
        case.affine = affine[:, [2, 1, 0, 3]] if self.axes == "xyz" else affine  # index (z, y, x) -> RAS mm
        return case


class Hdf5Volumes(_VolumeReader):
    """``[data]``: ``images`` (glob of .h5), ``image_key``, ``label_key``, ``axes`` of the stored
    arrays, ``spacing`` (HDF5 files of the LA set store none)."""

    DATA_KEYS = {**_VolumeReader.DATA_KEYS, "image_key": "string", "label_key": "string"}

    def read(self, case_id: str) -> Case:
        import h5py

        path = self.cases.paths[case_id]
        image_key = self.option("image_key", str, default="image")
        label_key = self.option("label_key", str, default="label")
        try:
            with h5py.File(path, "r") as handle:
                image = np.asarray(handle[image_key])
                mask = np.asarray(handle[label_key])
        except KeyError as error:
            raise DataError(path, f"missing dataset {error}") from None
        except OSError as error:
            raise DataError(path, f"cannot read HDF5 file ({error})") from None
        if image.ndim != 3 or mask.shape != image.shape:
            raise DataError(path, f"expected 3D image and label of one shape, got {image.shape} / {mask.shape}")
        spacing = self._spacing(None, path)
        return self._case(case_id, _to_zyx(image, self.axes), _to_zyx(mask, self.axes), spacing, path)


class NpzCases(_VolumeReader):
    """MedSAM/CVPR-challenge npz files: ``imgs`` (D, H, W) or (H, W, 3), ``gts`` and ``spacing``.
    ``[data] spacing_order`` tells the order of the stored spacing (``"xyz"``, SimpleITK's, the
    default; or ``"zyx"``). Arrays are (D, H, W) already, so ``axes`` defaults to ``"zyx"``."""

    file_axes = "zyx"
    DATA_KEYS = {**_VolumeReader.DATA_KEYS, "image_key": "string", "label_key": "string", "spacing_order": AXES}

    def read(self, case_id: str) -> Case:
        path = self.cases.paths[case_id]
        image_key = self.option("image_key", str, default="imgs")
        label_key = self.option("label_key", str, default="gts")
        order = self.option("spacing_order", str, default="xyz")
        try:
            with np.load(path, allow_pickle=False) as npz:
                image, mask = npz[image_key], npz[label_key]
                stored = _spacing_array(npz["spacing"], path) if "spacing" in npz else None
        except KeyError as error:
            raise DataError(path, f"missing array {error}") from None
        except (OSError, ValueError) as error:
            raise DataError(path, f"cannot read npz file ({error})") from None
        if stored is not None and order == "xyz":
            stored = tuple(reversed(stored))
        if self.task.dim == 2:
            spacing = (stored[-2:] if stored else None) or self.task.spacing
            if spacing is None:
                return self._case(case_id, image, mask, (1.0, 1.0), path, unit="px")
            return self._case(case_id, image, mask, tuple(spacing), path)
        if image.ndim != 3:
            raise DataError(path, f"expected a (D, H, W) volume, got {image.shape}")
        spacing = self._spacing(stored, path)
        return self._case(case_id, _to_zyx(image, self.axes), _to_zyx(mask, self.axes), spacing, path)
