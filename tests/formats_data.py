"""Small datasets in the field's layouts, generated in the tests (issue 17): nnU-Net raw with regions,
the Decathlon, CVPR 2024/2025 npz, and DICOM series with DICOM-SEG or RTSTRUCT labels.

Every volume is a bright block (value 1) with a brighter core (value 2) inside it on a noisy
background, at anisotropic spacing and a non-trivial origin, so geometry mistakes (axes swapped,
spacing reversed, slices out of order) change the numbers the tests compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel
import numpy as np

SHAPE_XYZ = (32, 28, 8)  # x, y, z as NIfTI stores it
ZOOMS = (0.8, 0.7, 2.5)
ORIGIN = (-10.0, 20.0, 5.0)


def block_volume(index: int, shape_xyz: tuple[int, int, int] = SHAPE_XYZ) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) in (x, y, z): label 1 a block, 2 its core."""
    rng = np.random.default_rng(index)
    x, y, z = shape_xyz
    label = np.zeros(shape_xyz, np.uint8)
    ox, oy = index % 3, index % 2
    label[4 + ox : x - 6 + ox, 5 + oy : y - 4, 1 : z - 1] = 1
    label[10 + ox : 18 + ox, 10:16, 2 : z - 2] = 2
    image = rng.normal(100, 10, shape_xyz) + 200 * (label >= 1) + 150 * (label == 2)
    return image.astype(np.float32), label


def affine(zooms: tuple[float, float, float] = ZOOMS) -> np.ndarray:
    matrix = np.diag([*zooms, 1.0])
    matrix[:3, 3] = ORIGIN
    return matrix


def save_nifti(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(array, affine()), path)


def nnunet_raw(root: Path, cases: int = 3, shape_xyz: tuple[int, int, int] = SHAPE_XYZ) -> Path:
    """An nnU-Net v2 raw dataset with two channels, a label and a region, and a splits_final.json."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"case_{i:03d}" for i in range(cases)]
    for index, name in enumerate(names):
        image, label = block_volume(index, shape_xyz)
        save_nifti(image, root / "imagesTr" / f"{name}_0000.nii.gz")
        save_nifti(image * 0.5, root / "imagesTr" / f"{name}_0001.nii.gz")
        save_nifti(label, root / "labelsTr" / f"{name}.nii.gz")
    dataset = {
        "channel_names": {"0": "CT", "1": "noNorm"},
        "labels": {"background": 0, "whole": [1, 2], "core": 2},
        "regions_class_order": [1, 2],
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    (root / "splits_final.json").write_text(json.dumps([{"train": names[1:], "val": names[:1]}]))
    return root


def decathlon(root: Path, cases: int = 2, shape_xyz: tuple[int, int, int] = SHAPE_XYZ) -> Path:
    """A Decathlon dataset: 4D (x, y, z, 2) multi-modal images, value -> name labels."""
    root.mkdir(parents=True, exist_ok=True)
    training = []
    for index in range(cases):
        image, label = block_volume(index, shape_xyz)
        name = f"heart_{index:03d}.nii.gz"
        save_nifti(np.stack([image * 0.1, image], axis=-1), root / "imagesTr" / name)
        save_nifti(label, root / "labelsTr" / name)
        (root / "imagesTr" / f"._{name}").write_bytes(b"macOS resource fork")  # junk the tarballs carry
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    dataset = {
        "name": "Heart",
        "modality": {"0": "T1", "1": "MRI"},
        "labels": {"0": "background", "1": "atrium", "2": "core"},
        "numTraining": cases,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    return root


def cvpr_npz(root: Path, *, dim: int, year: int, cases: int = 2, shape_xyz: tuple[int, int, int] = SHAPE_XYZ) -> Path:
    """CVPR 2024 (boxes as arrays) or 2025 (boxes as dicts, clicks) npz files."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(cases):
        image, label = block_volume(index, shape_xyz)
        if dim == 2:
            middle = shape_xyz[2] // 2
            plane = label[..., middle].T  # (H, W)
            grey = np.clip(image[..., middle].T / 2, 0, 255).astype(np.uint8)
            imgs, gts = np.repeat(grey[..., None], 3, axis=-1), plane
        else:
            imgs = np.clip(image.transpose(2, 1, 0), 0, 1000).astype(np.int16)  # (D, H, W)
            gts = label.transpose(2, 1, 0)
        arrays: dict[str, object] = {"imgs": imgs, "gts": gts.astype(np.uint8), "spacing": np.asarray(ZOOMS)}
        boxes = []
        for value in (1, 2):
            where = np.argwhere(gts == value)
            low, high = where.min(axis=0), where.max(axis=0)
            if dim == 2:
                boxes.append([low[1], low[0], high[1], high[0]])
            elif year == 2024:
                boxes.append([low[2], low[1], low[0], high[2], high[1], high[0]])
            else:
                mid = int((low[0] + high[0]) // 2)
                boxes.append(
                    {
                        "z_min": int(low[0]),
                        "z_max": int(high[0]),
                        "z_mid": mid,
                        "z_mid_x_min": int(low[2]),
                        "z_mid_y_min": int(low[1]),
                        "z_mid_x_max": int(high[2]),
                        "z_mid_y_max": int(high[1]),
                    }
                )
        if year == 2024:
            arrays["boxes"] = np.asarray(boxes)
        else:
            arrays["boxes"] = np.asarray(boxes, dtype=object)
            centre = [np.argwhere(gts == v).mean(axis=0).round().astype(int).tolist() for v in (1, 2)]
            arrays["clicks"] = np.asarray([{"fg": [centre[0]], "bg": []}, {"fg": [centre[1]], "bg": []}], dtype=object)
            arrays["clicks_order"] = np.asarray([["fg"], ["fg"]], dtype=object)
            arrays["prev_pred"] = np.zeros_like(gts, dtype=np.uint8)
        np.savez_compressed(root / f"case{index}.npz", **arrays)  # type: ignore[arg-type]
    return root


# ---- DICOM ----------------------------------------------------------------------------------------

ROWS, COLS, SLICES = 24, 28, 6
PIXEL = (0.75, 0.6)  # row spacing, column spacing (PixelSpacing)
THICKNESS = 2.0
INTERCEPT = -1024.0
AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # ImageOrientationPatient: along a row, along a column
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))  # slices stacked along +y (anterior to posterior)
CORNER = np.array([-20.0, -15.0, 40.0])


def world(orientation: tuple[tuple[float, ...], tuple[float, ...]], k: float, row: float, col: float) -> np.ndarray:
    """LPS millimetres of (slice k, row, col) of the generated series, from its definition."""
    along_row, along_col = np.asarray(orientation[0]), np.asarray(orientation[1])
    normal = np.cross(along_row, along_col)
    return CORNER + k * THICKNESS * normal + row * PIXEL[0] * along_col + col * PIXEL[1] * along_row


def dicom_series(
    folder: Path,
    seed: int = 0,
    orientation: tuple[tuple[float, ...], tuple[float, ...]] = AXIAL,
    slices: int = SLICES,
) -> tuple[list[object], np.ndarray, np.ndarray]:
    """CT slices (written in shuffled order), their HU volume (slice, row, col) and a block label (every
    slice but the first and the last)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    label = np.zeros((slices, ROWS, COLS), bool)
    label[1 : slices - 1, 6:16, 8:20] = True
    hu = (rng.normal(-50, 20, label.shape) + 300 * label).round().astype(np.int16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in rng.permutation(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = "CT", f"P{seed}", "Test^Phantom"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20240101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID, ds.SeriesNumber = "", "", "1", 1
        ds.InstanceNumber = int(k) + 1
        ds.Manufacturer = "segbench-tests"
        ds.ImageOrientationPatient = [*orientation[0], *orientation[1]]
        ds.ImagePositionPatient = [float(v) for v in world(orientation, int(k), 0, 0)]
        ds.PixelSpacing = list(PIXEL)
        ds.SliceThickness = THICKNESS
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, INTERCEPT, "HU"
        ds.PixelData = (hu[k].astype(np.int32) - int(INTERCEPT)).astype(np.uint16).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
        datasets.append(ds)
    return datasets, hu, label


def sorted_series(datasets: list[object]) -> list[object]:
    return sorted(datasets, key=lambda d: int(d.InstanceNumber))  # type: ignore[attr-defined]


def dicom_with_seg(folder: Path, seed: int = 0, slices: int = SLICES) -> tuple[np.ndarray, np.ndarray]:
    import highdicom
    from pydicom.sr.codedict import codes

    datasets, hu, label = dicom_series(folder, seed, slices=slices)
    description = highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label="organ",
        segmented_property_category=codes.cid7150.Tissue,
        segmented_property_type=codes.cid7166.ConnectiveTissue,
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = highdicom.seg.Segmentation(
        source_images=sorted_series(datasets),
        pixel_array=label,
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=highdicom.UID(),
        series_number=2,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
        manufacturer="segbench-tests",
        manufacturer_model_name="tests",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(folder / "labels.seg.dcm")
    return hu, label


def dicom_with_rtstruct(
    folder: Path,
    seed: int = 0,
    orientation: tuple[tuple[float, ...], tuple[float, ...]] = CORONAL,
    slices: int = SLICES,
) -> tuple[np.ndarray, np.ndarray]:
    """An RTSTRUCT whose contours are rectangles through pixel edges (half-integer indices), so the
    pixels whose centres they enclose are known without any polygon code: the test's label."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

    datasets, hu, label = dicom_series(folder, seed, orientation, slices)
    first = sorted_series(datasets)[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTStructureSetStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rt = Dataset()
    rt.file_meta = meta
    rt.SOPClassUID, rt.SOPInstanceUID = RTStructureSetStorage, meta.MediaStorageSOPInstanceUID
    rt.Modality, rt.StudyInstanceUID, rt.SeriesInstanceUID = "RTSTRUCT", first.StudyInstanceUID, generate_uid()  # type: ignore[attr-defined]
    rt.PatientID = first.PatientID  # type: ignore[attr-defined]
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 3, "organ"
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID  # type: ignore[attr-defined]
    rt.StructureSetROISequence = Sequence([roi])
    contours = []
    for k in range(slices):
        if not label[k].any():
            continue
        rows, cols = np.nonzero(label[k])
        r0, r1, c0, c1 = rows.min() - 0.5, rows.max() + 0.5, cols.min() - 0.5, cols.max() + 0.5
        corners = [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]
        points = [world(orientation, k, r, c).tolist() for r, c in corners]
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(points)
        contour.ContourData = [float(v) for point in points for v in point]
        contours.append(contour)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 3
    roi_contour.ContourSequence = Sequence(contours)
    rt.ROIContourSequence = Sequence([roi_contour])
    rt.save_as(folder / "rtstruct.dcm", enforce_file_format=True)
    return hu, label


def nnunet_raw_2d(root: Path, cases: int = 2) -> Path:
    """An nnU-Net v2 raw dataset of 2D PNG slices (one grey channel), which store no spacing."""
    from PIL import Image

    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(cases):
        image, label = block_volume(index)
        Image.fromarray(np.clip(image[..., 4].T / 2, 0, 255).astype(np.uint8)).save(
            root / "imagesTr" / f"s{index}_0000.png"
        )
        Image.fromarray(label[..., 4].T).save(root / "labelsTr" / f"s{index}.png")
    dataset = {"channel_names": {"0": "US"}, "labels": {"background": 0, "block": [1, 2]}, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(dataset))
    return root
