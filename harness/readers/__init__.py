"""Readers turn the files of a task (or nothing at all, for phantoms) into Cases.

They are plugins like adapters: this module registers the built-in ones through the
``segbench_register_readers`` hook, and a third-party package can add its own.
"""

from __future__ import annotations

from collections.abc import Callable

from segbench.hookspecs import hookimpl
from segbench.readers.base import Reader
from segbench.readers.pairs import ImageMaskPairs
from segbench.readers.phantom import PhantomCases
from segbench.readers.samed2d import SamMed2DIndex
from segbench.readers.volumes import Hdf5Volumes, NiftiVolumes, NpzCases

__all__ = ["BUILTIN_READERS", "Reader"]

# the task parser checks a built-in reader's [data] keys at once (taskspec.parse_task)
BUILTIN_READERS: dict[str, type[Reader]] = {
    "image_mask_pairs": ImageMaskPairs, "samed2d_index": SamMed2DIndex, "nifti": NiftiVolumes,
    "hdf5": Hdf5Volumes, "npz": NpzCases, "phantom": PhantomCases,
}


@hookimpl
def segbench_register_readers(register: Callable[[str, type], None]) -> None:
    for name, reader in BUILTIN_READERS.items():
        register(name, reader)
