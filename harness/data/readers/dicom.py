"""DICOM series from PACS, with their labels as DICOM-SEG (highdicom) or RTSTRUCT contours.

A case is a folder (``[data] cases`` glob, default every folder of the dataset) holding the slices of
one image series and one SEG or RTSTRUCT object (non-DICOM files, a DICOMDIR, reports and plans are
passed over; any other DICOM file must be a slice). Geometry comes from the headers only: slices sorted
along the normal of ``ImageOrientationPatient`` by ``ImagePositionPatient``, in-plane spacing from
``PixelSpacing`` (row spacing, column spacing), slice spacing from the positions; the affine (LPS, as
DICOM stores it, flipped to RAS+ for ``Case.affine``) maps (slice, row, column) to millimetres. Pixels
are ``stored * RescaleSlope + RescaleIntercept`` per slice (Hounsfield units for CT) before the
task's intensity policy; ``Case.raw`` keeps them.

Labels: a SEG's segments by ``SegmentNumber``, read frame by source instance through highdicom (as
highdicom and most viewers write them), or, when the SEG references no instances, frame by plane
position on the series' grid; an RTSTRUCT's ROIs by
``ROINumber``, each closed planar contour mapped to voxel indices through the inverse affine and
filled with :func:`skimage.draw.polygon` (pixel centres inside), contours of one slice combined by
exclusive or so an inner contour cuts a hole, as the standard's even-odd rule has it. A task label's
``values`` are segment or ROI numbers (``"nonzero"``: all of them); segments may overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segbench.data.case import Case
from segbench.data.readers.base import Reader
from segbench.data.readers.decode import apply_intensity
from segbench.data.readers.volume_files import LPS_TO_RAS
from segbench.data.specs import TaskSpec
from segbench.errors import ConfigError, DataError

LABEL_MODALITIES = ("SEG", "RTSTRUCT")
OTHER_MODALITIES = ("SR", "PR", "KO", "DOC", "RTPLAN", "RTDOSE", "REG")  # objects beside a series, passed over
DICOMDIR = "1.2.840.10008.1.3.10"


def _dcmread(path: Path, pixels: bool) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as error:  # pydicom raises InvalidDicomError, OSError, ValueError, ...
        raise DataError(path, f"cannot read DICOM file ({error})") from None


def _is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (the ``DICM`` magic after the 128-byte preamble): PACS exports
    carry other files beside the slices (notes, checksums) that are no part of the case."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as error:
        raise DataError(path, f"cannot read file ({error.strerror})") from None
    return head[128:132] == b"DICM"


def series_geometry(headers: list[Any], path: Path) -> tuple[list[int], tuple[float, float, float], np.ndarray]:
    """(slice order, spacing (slice, row, col), LPS affine from (slice, row, col) to mm) of a series."""
    try:
        orientation = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
        positions = np.asarray([h.ImagePositionPatient for h in headers], dtype=np.float64)
        row_spacing, col_spacing = (float(v) for v in headers[0].PixelSpacing)
    except AttributeError as error:
        raise DataError(path, f"image series lacks a geometry attribute ({error})") from None
    along_row, along_col = orientation[:3], orientation[3:]  # direction of increasing column / row index
    normal = np.cross(along_row, along_col)
    order = [int(i) for i in np.argsort(positions @ normal, kind="stable")]
    positions = positions[order]
    if len(order) > 1:
        step = (positions[-1] - positions[0]) / (len(order) - 1)
        gaps = np.diff(positions @ normal)
        if np.any(gaps <= 0) or np.ptp(gaps) > 0.01 * max(float(np.mean(gaps)), 1e-6) + 1e-3:
            raise DataError(path, "slices are not evenly spaced (duplicate or missing slices?)")
    else:
        step = normal * float(getattr(headers[0], "SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = along_col * row_spacing
    affine[:3, 2] = along_row * col_spacing
    affine[:3, 3] = positions[0]
    return order, (float(np.linalg.norm(step)), row_spacing, col_spacing), affine


def _rescaled(dataset: Any) -> np.ndarray:
    pixels = dataset.pixel_array
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return pixels
    return pixels.astype(np.float64) * slope + intercept


def _narrow(volume: np.ndarray) -> np.ndarray:
    """Integral values (HU) as int16/int32, others float32."""
    if np.array_equal(volume, np.round(volume)):
        low, high = volume.min(), volume.max()
        return volume.astype(np.int16 if -(2**15) <= low and high < 2**15 else np.int32)
    return volume.astype(np.float32)


def _seg_by_position(seg: Any, path: Path, lps: np.ndarray, shape: tuple[int, ...], why: str) -> dict[int, np.ndarray]:
    """Frames placed by ``PlanePositionSequence``: each frame's position, mapped through the series'
    inverse affine, must fall on a slice's grid (within a hundredth of a voxel)."""
    to_index = np.linalg.inv(lps)
    frames = np.asarray(seg.pixel_array).reshape(-1, *np.shape(seg.pixel_array)[-2:])
    if frames.shape[1:] != shape[1:]:
        raise DataError(path, f"SEG frames are {frames.shape[1:]}, the series' slices {shape[1:]} ({why})")
    segments: dict[int, np.ndarray] = {}
    try:
        groups = seg.PerFrameFunctionalGroupsSequence
        shared: Any = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else {}
        for frame, group in zip(frames, groups, strict=True):
            position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
            identification = group.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
            number = int(identification[0].ReferencedSegmentNumber)
            index = (to_index @ np.append(position, 1.0))[:3]
            if np.abs(index - np.round(index)).max() > 0.01 or np.round(index[1:]).any():
                raise DataError(path, f"a SEG frame at {position.tolist()} lies off the series' grid ({why})")
            k = int(round(float(index[0])))
            if not 0 <= k < shape[0]:
                raise DataError(path, f"a SEG frame at {position.tolist()} lies outside the series ({why})")
            segments.setdefault(number, np.zeros(shape, dtype=bool))[k] |= frame > 0
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
        raise DataError(path, f"cannot place the SEG's frames on the series ({error}; {why})") from None
    for number in (int(n) for n in seg.segment_numbers):
        segments.setdefault(number, np.zeros(shape, dtype=bool))
    return segments


class DicomSeries(Reader):
    """``[data]``: ``cases`` (glob of case folders, default ``"*"``), ``exclude``."""

    DATA_KEYS = {"cases": "glob", "exclude": "strings"}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        super().__init__(task, data_root)
        if task.dim != 3:
            raise ConfigError(task.source, "reader 'dicom' reads volumes: set [task] dim = 3")
        pattern = self.option("cases", str, default="*")
        self.folders: dict[str, Path] = {}
        for match in sorted(self.root.glob(pattern)):
            folder = self.confined(match.relative_to(self.root), f"[data] cases {pattern!r} matched")
            if folder.is_dir():
                self.folders[folder.relative_to(self.root).as_posix()] = folder
        for case_id in self.option("exclude", list, default=[]):
            self.folders.pop(case_id, None)
        if not self.folders:
            raise ConfigError(task.source, f"no case folder matches {pattern!r} under {self.root}")

    def case_ids(self) -> list[str]:
        return list(self.folders)

    def files(self, case_id: str) -> list[Path]:
        folder = self.folders[case_id]
        return sorted(
            self.confined(p.relative_to(self.root), "case file")
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def _split(self, case_id: str) -> tuple[list[tuple[Path, Any]], tuple[Path, Any]]:
        """The image slices (path, header) and the one label object of a case folder."""
        images: list[tuple[Path, Any]] = []
        labels: list[tuple[Path, Any]] = []
        for path in self.files(case_id):
            if not _is_dicom(path):
                continue
            header = _dcmread(path, pixels=False)
            modality = getattr(header, "Modality", "")
            if modality in LABEL_MODALITIES:
                labels.append((path, header))
            elif modality in OTHER_MODALITIES or header.file_meta.get("MediaStorageSOPClassUID") == DICOMDIR:
                continue
            elif "ImagePositionPatient" not in header:
                raise DataError(path, "not a slice of an image series (no ImagePositionPatient; truncated?)")
            else:
                images.append((path, header))
        folder = self.folders[case_id]
        if len(labels) != 1:
            raise DataError(folder, f"expected one SEG or RTSTRUCT file, found {len(labels)}")
        series = {getattr(h, "SeriesInstanceUID", "") for _, h in images}
        if len(series) != 1:
            raise DataError(folder, f"expected the slices of one image series, found {len(series)} series")
        return images, labels[0]

    def read(self, case_id: str) -> Case:
        images, (label_path, label_header) = self._split(case_id)
        order, spacing, lps = series_geometry([h for _, h in images], images[0][0])
        slices = [images[i][0] for i in order]
        raw = _narrow(np.stack([_rescaled(_dcmread(path, pixels=True)) for path in slices]))
        uids = [str(images[i][1].SOPInstanceUID) for i in order]
        if label_header.Modality == "SEG":
            segments = self._seg(label_path, uids, lps, raw.shape)
        else:
            segments = self._rtstruct(label_path, lps, raw.shape)
        labels: dict[str, np.ndarray] = {}
        for spec in self.task.labels:
            numbers = list(segments) if spec.values is None else [v for v in spec.values if v in segments]
            union = np.zeros(raw.shape, dtype=bool)
            for number in numbers:
                union |= segments[number]
            labels[spec.name] = union
        pixels = apply_intensity(raw, self.task.intensity, slices[0], channels=False)
        return Case(
            case_id, pixels, labels, spacing, tuple(self.files(case_id)), "mm", raw=raw, affine=LPS_TO_RAS @ lps
        )

    @staticmethod
    def _seg(path: Path, uids: list[str], lps: np.ndarray, shape: tuple[int, ...]) -> dict[int, np.ndarray]:
        """A SEG's segments on the series' grid: by the source instances its frames reference
        (highdicom), else, for SEGs that reference none, by each frame's plane position."""
        import highdicom

        try:
            seg = highdicom.seg.segread(path)
            numbers = [int(n) for n in seg.segment_numbers]
        except Exception as error:  # highdicom raises ValueError, KeyError, AttributeError for bad SEGs
            raise DataError(path, f"cannot read DICOM-SEG ({error})") from None
        try:
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids,
                segment_numbers=numbers,
                assert_missing_frames_are_empty=True,
            )
        except Exception as error:  # no (or other) source references: place frames by position
            return _seg_by_position(seg, path, lps, shape, str(error))
        if pixels.shape[:3] != shape:
            raise DataError(path, f"segmentation frames {pixels.shape[:3]} differ from the series {shape}")
        return {number: pixels[..., index] > 0 for index, number in enumerate(numbers)}

    @staticmethod
    def _rtstruct(path: Path, lps: np.ndarray, shape: tuple[int, ...]) -> dict[int, np.ndarray]:
        from skimage.draw import polygon

        dataset = _dcmread(path, pixels=False)
        to_index = np.linalg.inv(lps)
        segments: dict[int, np.ndarray] = {
            int(roi.ROINumber): np.zeros(shape, dtype=bool) for roi in getattr(dataset, "StructureSetROISequence", [])
        }
        for roi in getattr(dataset, "ROIContourSequence", []):
            number = int(roi.ReferencedROINumber)
            mask = segments.setdefault(number, np.zeros(shape, dtype=bool))
            for contour in getattr(roi, "ContourSequence", []):
                if getattr(contour, "ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
                    continue
                points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
                index = (to_index @ np.c_[points, np.ones(len(points))].T)[:3]
                plane = int(round(float(np.mean(index[0]))))
                if not 0 <= plane < shape[0] or np.ptp(index[0]) > 0.5:
                    raise DataError(path, f"ROI {number}: a contour lies off the series' slices (slice {plane})")
                rows, cols = polygon(index[1], index[2], shape=shape[1:])
                fill = np.zeros(shape[1:], dtype=bool)
                fill[rows, cols] = True
                mask[plane] ^= fill
        return segments
