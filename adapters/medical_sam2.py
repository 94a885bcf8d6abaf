"""Medical-SAM2 ("MedSAM-2", ImprintLab, formerly MedicineToken/SuperMedIntel): SAM 2 Hiera-Tiny
fine-tuned on medical images, released as ``MedSAM2_pretrain.pth`` (Hugging Face ``jiayuanz3/MedSAM2_pretrain``).

What its repository says about that file (``train_3d.py``, ``cfg.py``, ``sam2_train/``):

* it is ``net.state_dict()`` of the repository's ``sam2_train`` model after ``net.to(torch.bfloat16)``: a
  plain state dict (no ``"model"`` wrapper) of bfloat16 tensors (the Hub lists ``BFloat16Storage``);
  78,078,138 bytes, i.e. about 39 M parameters at 2 bytes: the Hiera-Tiny model (Hiera-Small would be
  about 92 MB);
* ``sam2_train`` is the SAM 2.0 code (July 2024) with the same modules and parameters as the official
  package, built from ``sam2_train/sam2_hiera_t.yaml``, which is the official SAM 2.0
  ``sam2_hiera_t.yaml`` (only the RoPE grid, not a parameter, differs) at image size 1024;
* the repository loads it with ``load_state_dict(weights, strict=False)``, which would silently skip
  any key that does not match. Here it is loaded strictly into the official SAM 2.0 Hiera-T: every
  missing, unexpected or mis-shaped key is reported and stops the load.

Its 3D evaluation (``func_3d/function.py``) gives a box every ``prompt_freq`` (2) slices and propagates
forward; its frames are /255 and ImageNet mean/std at 1024. Here the shared SAM2-family recipe runs
(forward then reverse from the first prompted slice): with ``slice_boxes`` (every = 2) prompts start at
the first slice of the target, the same as the official protocol for the slices above it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segbench.adapters.sam2family import (
    SAM2_CAPABILITIES,
    SAM2_PRETRAINING,
    SAM2Family,
    package_config,
    sam2_checkpoint,
)
from segbench.hookspecs import hookimpl
from segbench.interface import AdapterMeta, ModelCard

CHECKPOINT = sam2_checkpoint(
    "medical-sam2",
    "MedSAM2_pretrain.pth",
    "jiayuanz3/MedSAM2_pretrain",
    "059572b072eff2e41975bf85b0dcca96bc58889db60a89e9f5b1f075236735d7",
    78078138,
)


class MedicalSAM2(SAM2Family):
    meta = AdapterMeta(
        name="medical-sam2",
        family="sam2",
        description="Medical-SAM2 (ImprintLab): SAM 2 Hiera-T fine-tuned on medical images, slices as video",
        capabilities=SAM2_CAPABILITIES,
        version="1",
        license="GPL-3.0 (code); weights: terms not stated",
        input_size=1024,
        checkpoint=CHECKPOINT,
        preprocessing="squash to 1024 (PIL bicubic), /255, ImageNet mean/std; forward then reverse propagation",
        reference="https://github.com/ImprintLab/Medical-SAM2",
        card=ModelCard(
            paper="https://arxiv.org/abs/2408.00874",
            code="https://github.com/ImprintLab/Medical-SAM2",
            trained_on=SAM2_PRETRAINING,
            trained_on_source="Zhu et al. 2024 (arXiv:2408.00874): SAM 2 Hiera-T fine-tuned on medical images; the "
            "data behind the released MedSAM2_pretrain.pth are not stated",
            notes="the medical training sets are not published for this file",
        ),
    )

    @classmethod
    def config_path(cls) -> Path:
        return package_config("sam2/sam2_hiera_t.yaml")


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(MedicalSAM2)
