"""MedSAM2 (bowang-lab/MedSAM2): SAM2.1 Hiera-Tiny fine-tuned at 512 on 3D medical images and videos.

Runs on the official ``sam2`` package with our own 512 config (``configs/medsam2_hiera_t512.yaml``),
because bowang-lab ships a modified ``sam2`` that cannot share an environment with the official one.
Its ``medsam2_infer_3D_CT.py`` recipe, restated:

* preprocessing: CT window / intensity clip to uint8 (here: the task's intensity policy), each slice to
  RGB and squashed to 512x512 with PIL (bicubic), / 255, ImageNet mean/std;
* a box on the key slice; propagate forward; reset the state; add the box again; propagate in
  reverse; the union of both passes; keep the largest (26-connected) component.

The shared SAM2-family machinery (:mod:`segbench.adapters.sam2family`) does all of this except the
last step, added here. On CUDA the official script runs under bf16 autocast (``--precision bf16``).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segbench.adapters.sam2family import SAM2_CAPABILITIES, SAM2_PRETRAINING, SAM2Family, sam2_checkpoint
from segbench.hookspecs import hookimpl
from segbench.interface import AdapterMeta, ModelCard
from segbench.lazy import lazy_import

ndimage = lazy_import("scipy.ndimage")  # imported on first use: declaring and planning need no scipy

CONFIG = "configs/medsam2_hiera_t512.yaml"

# No sha256 of MedSAM2_latest.pt is published in any source found (the Hugging Face page lists the file,
# 156 MB, without its LFS pointer): the file is used unverified and recorded with its own digest.
CHECKPOINT = sam2_checkpoint("medsam2", "MedSAM2_latest.pt", "wanglab/MedSAM2", "", 156_000_000)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D mask (the mask itself when empty)."""
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


class MedSAM2(SAM2Family):
    meta = AdapterMeta(
        name="medsam2",
        family="sam2",
        description="MedSAM2 (bowang-lab): SAM2.1 Hiera-T fine-tuned at 512 on 3D medical images and videos",
        capabilities=SAM2_CAPABILITIES,
        version="1",
        license="Apache-2.0 (code), CC-BY-SA-4.0 (weights)",
        input_size=512,
        checkpoint=CHECKPOINT,
        preprocessing="uint8 after the task's window/clip; squash to 512 (PIL bicubic), /255, ImageNet mean/std; "
        "key-slice box, forward, reset, box again, reverse, union, largest 3D component",
        reference="https://github.com/bowang-lab/MedSAM2",
        card=ModelCard(
            paper="https://arxiv.org/abs/2504.03600",
            code="https://github.com/bowang-lab/MedSAM2",
            trained_on=SAM2_PRETRAINING,
            trained_on_source="Ma et al. 2025 (arXiv:2504.03600): SAM2.1 Hiera-T fine-tuned on over 455,000 3D "
            "image-mask pairs and 76,000 video frames; the sets are listed at https://medsam-datasetlist.github.io/ "
            "(checkpoints/README.md: MedSAM2_latest.pt adds newly annotated sets)",
            notes="the medical source sets are not mapped to segbench's ids",
        ),
    )

    @classmethod
    def config_path(cls) -> Path:
        return Path(str(importlib.resources.files("segbench.adapters").joinpath(CONFIG)))

    def postprocess_volume(self, mask: np.ndarray) -> np.ndarray:
        return largest_component(mask)


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(MedSAM2)
