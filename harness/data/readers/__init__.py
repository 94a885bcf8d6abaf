"""Readers turn the files of a task (or nothing at all, for phantoms) into Cases.

They are plugins like adapters: this module registers the built-in ones through the
``segbench_register_readers`` hook, and a third-party package can add its own.
"""

from __future__ import annotations

from collections.abc import Callable

from segbench.data.readers.base import Reader
from segbench.data.readers.cvpr import CvprNpz
from segbench.data.readers.dicom import DicomSeries
from segbench.data.readers.nnunet import DecathlonLayout, NnUNetRaw
from segbench.data.readers.pairs import ImageMaskPairs
from segbench.data.readers.phantom import PhantomCases
from segbench.data.readers.samed2d import SamMed2DIndex
from segbench.data.readers.volumes import Hdf5Volumes, NiftiVolumes, NpzCases
from segbench.hookspecs import hookimpl

__all__ = ["BUILTIN_READERS", "Reader"]

# the task parser checks a built-in reader's [data] keys at once (taskspec.parse_task)
BUILTIN_READERS: dict[str, type[Reader]] = {
    "image_mask_pairs": ImageMaskPairs,
    "samed2d_index": SamMed2DIndex,
    "nifti": NiftiVolumes,
    "hdf5": Hdf5Volumes,
    "npz": NpzCases,
    "phantom": PhantomCases,
    "nnunet_raw": NnUNetRaw,
    "decathlon": DecathlonLayout,
    "cvpr_npz": CvprNpz,
    "dicom": DicomSeries,
}


@hookimpl
def segbench_register_readers(register: Callable[[str, type], None]) -> None:
    for name, reader in BUILTIN_READERS.items():
        register(name, reader)
