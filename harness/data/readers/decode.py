"""Decoding files into arrays, and the two policies every reader applies: intensity and mask values.

2D images: BMP, PNG, JPEG, GIF and most TIFFs through Pillow; TIFFs Pillow cannot identify (the
CVC-ClinicDB frames carry such tags) through tifffile. Every failure is a :class:`DataError` naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segbench.data.specs import IntensitySpec, LabelSpec
from segbench.errors import DataError, DataWarning

TIFF_SUFFIXES = (".tif", ".tiff")


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except Exception as error:  # tifffile raises many types for corrupt or unsupported files
        raise DataError(path, f"cannot decode TIFF image ({error})") from None


def read_image_file(path: Path) -> np.ndarray:
    """Pixels of a 2D image file: (H, W) or (H, W, C), in the file's own dtype.

    Pillow first (it decodes LZW TIFFs such as DRIVE's without extra codecs); TIFFs Pillow cannot
    identify (CVC-ClinicDB's frames) go to tifffile."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with Image.open(path) as opened:
            image: Image.Image = opened
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode == "1":
                image = image.convert("L")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _read_tiff(path)
        raise DataError(path, f"cannot decode image ({error})") from None


def _to_uint8(array: np.ndarray, low: float, high: float) -> np.ndarray:
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((array.astype(np.float64) - low) * scale, 0, 255).round().astype(np.uint8)


def apply_intensity(array: np.ndarray, spec: IntensitySpec, path: Path | str, channels: bool) -> np.ndarray:
    """Raw pixels → uint8 following the task's policy. With ``channels`` (2D), the result is (H, W, 3)."""
    if array.dtype == np.bool_:  # a binary image: arithmetic and percentiles need numbers
        array = array.astype(np.uint8)
    if channels and array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if channels and array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if channels and not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise DataError(path, f"expected a grey or RGB image, got an array of shape {array.shape}")
    if array.dtype.kind in "fc" and not np.isfinite(array).all():  # NaN would make the whole image one value
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(path, f"image holds {bad} non-finite pixel(s) (NaN or inf)")
    if spec.policy == "rgb8":
        if array.dtype != np.uint8:
            raise DataError(
                path,
                f"intensity policy 'rgb8' expects 8-bit pixels, got {array.dtype}; "
                "use policy 'minmax', 'window' or 'percentile'",
            )
        out = array
    elif spec.policy == "minmax":
        out = _to_uint8(array, float(array.min()), float(array.max()))
    elif spec.policy == "window":
        out = _to_uint8(array, spec.level - spec.width / 2, spec.level + spec.width / 2)
    else:  # percentile
        values = array[array != 0] if spec.nonzero and np.any(array != 0) else array.ravel()
        low, high = np.percentile(values, [spec.low, spec.high])
        out = _to_uint8(array, float(low), float(high))
    if channels and out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return np.ascontiguousarray(out)


def decode_mask(array: np.ndarray, data: Mapping[str, Any], path: Path | str, planar: bool) -> np.ndarray:
    """One integer label image from a mask array: first channel of RGB masks, then the task's
    ``mask_levels`` (snap to the nearest level, for masks with compression noise) or
    ``mask_threshold`` (values above it become 1). ``planar`` marks 2D masks, whose channels collapse."""
    if planar and array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., 0]
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise DataError(path, "mask holds non-finite values (NaN or inf)")
    levels = data.get("mask_levels")
    threshold = data.get("mask_threshold")
    if levels is not None:
        levels_arr = np.asarray(sorted(levels))
        nearest = np.abs(array[..., None].astype(np.int64) - levels_arr).argmin(axis=-1)
        return levels_arr[nearest]
    if threshold is not None:
        return (array > threshold).astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise DataError(path, "mask holds non-integer values; set mask_threshold or mask_levels")
        array = array.astype(np.int64)
    return array


def select_labels(
    mask: np.ndarray, specs: Sequence[LabelSpec], path: Path | str | None = None
) -> dict[str, np.ndarray]:
    """Bool masks for the labels whose values live in ``mask`` ("nonzero" = union of all values).

    With ``path`` (the mask's file), nonzero values that no label claims are warned about, naming the
    file and the values: a label whose declared values the file never uses would otherwise vanish from
    the case without a word (a 0/1 mask read with ``organ = [255]``)."""
    out = {}
    for spec in specs:
        out[spec.name] = mask != 0 if spec.values is None else np.isin(mask, spec.values)
    if path is not None and specs and all(spec.values is not None for spec in specs):
        claimed = [value for spec in specs for value in spec.values or ()]
        stray = np.setdiff1d(np.unique(mask), [0, *claimed])
        if stray.size:
            shown = ", ".join(str(v) for v in stray[:8].tolist()) + (", ..." if stray.size > 8 else "")
            declared = ", ".join(f"{spec.name} = {list(spec.values or ())}" for spec in specs)
            warnings.warn(
                f"{path}: mask values [{shown}] match no declared label ({declared}); they are read as background",
                DataWarning,
                stacklevel=2,
            )
    return out


def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) if mask.dtype == bool else mask)
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.NEAREST)).astype(mask.dtype)
