"""One image file of any format the field stores volumes in, as (array, spacing, affine) in segbench's
axis order.

NIfTI through nibabel (its header's zooms and affine as stored); every other ending nnU-Net accepts
(``.mha``, ``.nrrd``, ``.nii`` via SimpleITK when asked, ``.tif`` stacks) through SimpleITK, whose
``GetArrayFromImage`` is already (z, y, x); 2D endings (``.png``, ``.bmp``, ``.jpg``) through Pillow.
Arrays come out as (slice, row, column) = (z, y, x) for volumes, (row, column) for 2D; ``spacing`` is
in the same order; ``affine`` maps that index order (with a 0 third index in 2D) to RAS+ millimetres
(SimpleITK's LPS directions flipped), so a prediction can be written back over its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segbench.data.readers.decode import read_image_file
from segbench.errors import DataError

PLANAR_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg", ".gif")
NIFTI_ENDINGS = (".nii", ".nii.gz")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ending(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    import nibabel

    volume: Any = nibabel.load(path)  # a Nifti1Image (nibabel types load() as its base class)
    array = np.asarray(volume.dataobj)
    affine = np.asarray(volume.affine, dtype=np.float64)
    zooms = tuple(float(z) for z in volume.header.get_zooms()[: min(array.ndim, 3)])
    if array.ndim == 2:  # a 2D NIfTI: (x, y) -> (row, col) = (y, x)
        return np.ascontiguousarray(array.T), (zooms[1], zooms[0]), affine[:, [1, 0, 2, 3]]
    axes = (2, 1, 0, *range(3, array.ndim))  # channels (a 4th axis) stay last
    return np.ascontiguousarray(array.transpose(axes)), tuple(reversed(zooms)), affine[:, [2, 1, 0, 3]]


def _simpleitk(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)  # (z, y, x) [, components]
    dim = image.GetDimension()
    spacing_xyz = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    lps = np.eye(4)
    lps[:dim, :dim] = direction * spacing_xyz  # columns: index steps along x, y, z in LPS mm
    lps[:dim, 3] = origin
    ras = LPS_TO_RAS @ lps
    order = [2, 1, 0, 3] if dim == 3 else [1, 0, 2, 3]
    return array, tuple(float(v) for v in reversed(spacing_xyz)), ras[:, order]


def load_image(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray | None]:
    """``(array, spacing, affine)`` of one file; a DataError naming it when it cannot be read.
    2D picture formats carry no spacing: their spacing is ``()`` and affine ``None``."""
    if not path.is_file():
        raise DataError(path, "file not found")
    kind = ending(path)
    if kind in PLANAR_ENDINGS:
        return read_image_file(path), (), None
    try:
        return _nifti(path) if kind in NIFTI_ENDINGS else _simpleitk(path)
    except DataError:
        raise
    except Exception as error:  # nibabel and SimpleITK raise many types for corrupt files
        raise DataError(path, f"cannot read image file ({error})") from None
