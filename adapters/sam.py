"""SAM ViT-B/L/H, MedSAM and MedicoSAM: segment_anything's architecture, each with its authors' recipe.

``sam-vit-b`` / ``-l`` / ``-h`` (facebookresearch/segment-anything, ``SamPredictor``): longest side to
1024 with ``ResizeLongestSide`` (PIL), SAM's mean/std on 0-255, zero padding bottom/right to 1024;
prompts scaled by ``apply_coords``; masks from ``Sam.postprocess_masks`` (bilinear to 1024, crop the
padding, bilinear to the image) and logits > 0.

``medsam`` (bowang-lab/MedSAM, ``MedSAM_Inference.py``): the same ViT-B, but the image is squashed to
1024x1024 by scikit-image's cubic resize (order 3, anti-aliasing, range preserved, cast to uint8),
min-max normalised to [0, 1] over the whole image, with no mean/std and no padding; boxes are scaled
by 1024/W and 1024/H; masks are the sigmoid of the low-resolution logits, bilinearly resized to the
image and thresholded at 0.5. Box prompts only.

``medicosam`` (computational-cell-analytics/medico-sam, run through micro_sam's ``SamPredictor``): SAM
ViT-B fine-tuned on SA-Med2D-20M. The image is percentile-normalised to 0-255 as medico-sam's
``RawTransformJointTraining`` does (torch_em's ``normalize_percentile``: 1st/99th percentile of the
whole image, float32, eps 1e-7, times 255), clipped to [0, 255] and made 8-bit as micro_sam's
``_to_image`` does for non-uint8 input (min-max to [0, 1], times 255, truncated); then SAM's own
recipe above. Its checkpoint is a plain state dict or torch_em's ``{"model_state": ...}`` whose keys
carry a ``sam.`` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from segbench.adapters.sam_base import Frame, SamArchitecture
from segbench.adapters.sam_decoding import PromptShape
from segbench.hookspecs import hookimpl
from segbench.interface import AdapterMeta, Capabilities, CheckpointSpec, ModelCard
from segbench.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

INPUT_SIZE = 1024
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
PROMPTABLE = Capabilities(box=True, point=True, mask=True, iterative=True, multimask=True)


def _sam_checkpoint(name: str, filename: str, sha256: str, size: int) -> CheckpointSpec:
    """An official SAM file; sha256 and size as pinned in micro_sam's registry (and SAM's own release)."""
    return CheckpointSpec(name, filename, SAM_URL + filename, sha256, size)


SAM_CHECKPOINTS = {
    "vit_b": _sam_checkpoint(
        "sam-vit-b",
        "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375042383,
    ),
    "vit_l": _sam_checkpoint(
        "sam-vit-l",
        "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1249524607,
    ),
    "vit_h": _sam_checkpoint(
        "sam-vit-h",
        "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2564550879,
    ),
}

MEDSAM_CHECKPOINT = CheckpointSpec(
    name="medsam",
    filename="medsam_vit_b.pth",
    url="https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgzoN",
    sha256="34b34b78c1d18cb8c6bf84cf9c00e135d6d6c965699f3c0e31ef1bc9dcb5be74",
    size=375049145,
    manual_download=True,
)

# micro_sam's model registry (micro_sam/util.py, "vit_b_medical_imaging") publishes an xxh128, no sha256
# and no size; medico-sam's README points to the same owncloud share.
MEDICOSAM_CHECKPOINT = CheckpointSpec(
    name="medicosam",
    filename="vit_b_medicosam.pt",
    url="https://owncloud.gwdg.de/index.php/s/f5Ol4FrjPQWfjUF/download",
    sha256="",
    size=0,
    xxh128="40169f1e3c03a4b67bff58249c176d92",
)

SAM_CARD = ModelCard(
    paper="https://arxiv.org/abs/2304.02643",
    code="https://github.com/facebookresearch/segment-anything",
    trained_on=("sa-1b",),
    trained_on_complete=True,
    trained_on_source="Kirillov et al. 2023 (arXiv:2304.02643), sections 4-5: trained on SA-1B alone "
    "(11 M licensed natural photographs, 1.1 B masks)",
)
# MedSAM and MedicoSAM start from SAM ViT-B: SA-1B is in their training data too
SAM_BASE = ("sa-1b",)

SAM_PREPROCESSING = (
    "longest side to 1024 (ResizeLongestSide), SAM mean/std on 0-255, pad bottom/right to 1024; "
    "masks: SAM postprocess_masks, logits > 0; a lone click: 3 masks, best predicted IoU"
)


def _segment_anything_builder(kind: str) -> Callable[[], torch.nn.Module]:
    from segment_anything import sam_model_registry

    return sam_model_registry[kind]


class SegmentAnything(SamArchitecture):
    """SAM's own recipe, as ``segment_anything.SamPredictor`` applies it."""

    backbone: ClassVar[str] = "vit_b"

    def build(self) -> torch.nn.Module:
        return _segment_anything_builder(self.backbone)()

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        from segment_anything.utils.transforms import ResizeLongestSide

        resized = ResizeLongestSide(self.model.image_encoder.img_size).apply_image(image)
        tensor = torch.as_tensor(resized, device=self.options.device).permute(2, 0, 1).contiguous()[None]
        return self.model.preprocess(tensor), Frame(image.shape[:2], resized.shape[:2])

    def postprocess(self, logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        return (self.model.postprocess_masks(logits, frame.resized, frame.original) > self.model.mask_threshold)[:, 0]


def _sam_meta(backbone: str, label: str) -> AdapterMeta:
    spec = SAM_CHECKPOINTS[backbone]
    return AdapterMeta(
        name=spec.name,
        family="sam",
        description=f"Segment Anything (Kirillov et al. 2023), {label} image encoder",
        capabilities=PROMPTABLE,
        version="1",
        license="Apache-2.0",
        input_size=INPUT_SIZE,
        checkpoint=spec,
        preprocessing=SAM_PREPROCESSING,
        reference="https://github.com/facebookresearch/segment-anything",
        card=SAM_CARD,
    )


class SamViTB(SegmentAnything):
    backbone = "vit_b"
    meta = _sam_meta("vit_b", "ViT-B")


class SamViTL(SegmentAnything):
    backbone = "vit_l"
    meta = _sam_meta("vit_l", "ViT-L")


class SamViTH(SegmentAnything):
    backbone = "vit_h"
    meta = _sam_meta("vit_h", "ViT-H")


def medsam_input(image: np.ndarray) -> np.ndarray:
    """MedSAM_Inference.py's image preprocessing: (H, W, 3) uint8 → (1024, 1024, 3) float in [0, 1]."""
    from skimage.transform import resize

    resized = resize(image, (INPUT_SIZE, INPUT_SIZE), order=3, preserve_range=True, anti_aliasing=True)
    resized = resized.astype(np.uint8)
    return (resized - resized.min()) / np.clip(resized.max() - resized.min(), a_min=1e-8, a_max=None)


class MedSAM(SamArchitecture):
    meta = AdapterMeta(
        name="medsam",
        family="medsam",
        description="MedSAM (Ma et al. 2024): SAM ViT-B fine-tuned on 1.57 M medical image-mask pairs",
        capabilities=Capabilities(box=True),
        version="1",
        license="Apache-2.0",
        input_size=INPUT_SIZE,
        checkpoint=MEDSAM_CHECKPOINT,
        preprocessing="squash to 1024x1024 (skimage cubic, anti-aliased, uint8), min-max to [0,1], no mean/std, "
        "no padding; boxes x 1024/W, 1024/H; sigmoid of the logits, bilinear to the image, > 0.5",
        reference="https://github.com/bowang-lab/MedSAM (MedSAM_Inference.py)",
        card=ModelCard(
            paper="https://doi.org/10.1038/s41467-024-44824-z",
            code="https://github.com/bowang-lab/MedSAM",
            trained_on=(*SAM_BASE, "amos22"),
            trained_on_source="Ma et al. 2024, Nat. Commun. 15:654, Methods and Supplementary Tables 1-4 (1,570,263 "
            "image-mask pairs from public sets, 10 modalities; its internal-validation sets were split from the "
            "training sets); AMOS 2022 (200 CT, 40 MR) as read from that appendix in bowang-lab/MedSAM issue 402",
            notes="the supplementary tables are not mapped set by set to segbench's ids, so other pairs read "
            "'unknown'; FLARE22 is the README's training tutorial, not listed in the tables (issue 400)",
        ),
    )

    def build(self) -> torch.nn.Module:
        return _segment_anything_builder("vit_b")()

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        tensor = torch.as_tensor(medsam_input(image), dtype=torch.float32, device=self.options.device)
        return tensor.permute(2, 0, 1)[None], Frame(image.shape[:2], (INPUT_SIZE, INPUT_SIZE))

    def postprocess(self, logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        probabilities = F.interpolate(torch.sigmoid(logits), size=frame.original, mode="bilinear", align_corners=False)
        return probabilities[:, 0] > 0.5

    def multimask(self, shape: PromptShape) -> bool:
        return False


def percentile_to_uint8(image: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """medico-sam's percentile normalisation to 0-255, clipped, then micro_sam's conversion to 8 bit."""
    raw = image.astype(np.float32)
    low = np.percentile(raw, lower)
    spread = np.percentile(raw, upper) - low
    scaled = np.clip((raw - low) / (spread + 1e-7) * 255, 0, 255)
    scaled -= scaled.min()
    top = scaled.max()
    return (scaled / top * 255).astype(np.uint8) if top > 0 else np.zeros(image.shape, np.uint8)


class MedicoSAM(SegmentAnything):
    backbone = "vit_b"
    strip_prefixes = ("sam.",)
    meta = AdapterMeta(
        name="medicosam",
        family="medicosam",
        description="MedicoSAM (Archit et al. 2025): SAM ViT-B fine-tuned on SA-Med2D-20M with interactive training",
        capabilities=PROMPTABLE,
        version="1",
        license="unknown (not stated in the repository)",
        input_size=INPUT_SIZE,
        checkpoint=MEDICOSAM_CHECKPOINT,
        preprocessing="percentile (1st-99th) to 0-255, clipped, 8-bit; then SAM's: " + SAM_PREPROCESSING,
        reference="https://github.com/computational-cell-analytics/medico-sam",
        card=ModelCard(
            paper="https://arxiv.org/abs/2501.11734",
            code="https://github.com/computational-cell-analytics/medico-sam",
            trained_on=(*SAM_BASE, "sa-med2d-20m", "amos22", "totalsegmentator"),
            trained_on_source="Archit et al. 2025 (arXiv:2501.11734; IEEE TMI): fine-tuned on SA-Med2D-20M "
            "(medico-sam experiments/finetuning/generalists, torch_em get_sa_med2d_loader); AMOS and "
            "TotalSegmentator as members of SA-Med2D-20M (Ye et al. 2023, arXiv:2311.11969)",
            notes="SA-Med2D-20M's other source sets are not mapped to segbench's ids",
        ),
    )

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        return super().preprocess(percentile_to_uint8(image))


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    for adapter in (SamViTB, SamViTL, SamViTH, MedSAM, MedicoSAM):
        register(adapter)
