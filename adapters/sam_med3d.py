"""SAM-Med3D and SAM-Med3D-turbo (uni-medical): a 3D ViT-B SAM on 128³ crops at 1.5 mm, prompted by clicks.

Architecture. The model is PyPI ``medim``'s ``create_model("SAM-Med3D")`` (medim 0.1.2, ``models/sam_med3d.py``,
the authors' own package), built with ``pretrained=False`` and seeded random weights; checkpoints are read by
:func:`segbench.weights.checkpoints.read_state_dict` (``weights_only=True``, the ``model_state_dict`` layout
of SAM-Med3D's ``train.py``, any pickled ``args`` made inert) and applied strictly, never through medim's
own loader (``torch.load(weights_only=False)``, ``strict=False``). Its 324 parameter and buffer names and
shapes equal those of the official ``sam_model_registry3D["vit_b_ori"]`` (uni-medical/SAM-Med3D
``segment_anything/build_sam3D.py`` at commit f3de1fa, compared key by key when this adapter was written).

Preprocessing: the official inference of ``utils/infer_utils.py`` at f3de1fa (``data_preprocess``,
``get_roi_from_subject``, ``sam_model_infer``, ``data_postprocess``), which ``medim_val_single.py`` runs,
restated with the same library, torchio:

1. the raw volume (its own intensities, spacing and affine: ``AdapterMeta(input="raw")``) becomes a
   ``tio.ScalarImage`` and is resampled to 1.5 mm isotropic (``tio.Resample(1.5)``, linear), then
   reoriented to RAS+ (``tio.ToCanonical``);
2. a 128³ crop, zero-padded where it leaves the volume (``tio.CropOrPad``'s geometry: the crop starts
   at ``floor(c) - 64`` on each axis of the canonical grid, ``c`` the centre of the bounding box of the
   voxels it centres on, as ``CropOrPad._compute_mask_center_crop_or_pad`` computes it). The official
   script centres on the ground truth's bounding box, a localisation aid; here the crop is centred on
   the first click (what any user has) unless the prompt carries the target's bounding box
   (:class:`segbench.protocols.sammed3d.ClickPrompt`'s ``crop_box``, given only by the ``sammed3d_gtcrop``
   protocols, which say so in their name and record). The box is carried to the canonical grid by
   the nearest-neighbour rule the official resampling of the label applies (a canonical slab is in the
   box when its nearest source slab is): exact for the label's extent unless its outermost slab is
   thinner than the resampling step;
3. ``tio.ZNormalization`` over the crop's voxels > 0;
4. the image encoder once per crop (cached in the volume's state: every click and step of a target
   reuses it); the prompt encoder gets every click so far, as (1, N, 3) coordinates in the crop's
   voxel index order, and the previous step's 32³ low-resolution logits (zeros at the first step, as
   ``sam_model_infer`` does); the mask decoder's single mask, trilinear to 128³, sigmoid > 0.5;
5. the crop's mask back on the case's own grid with ``tio.Resample`` (nearest) onto the original
   shape and affine (``data_postprocess``); outside the crop, background.

Clicks reach the crop as points: each (z, y, x) click of the case's grid goes through the case's affine
to millimetres and back into the canonical crop's index space, unrounded; a click that falls outside the
crop is not given to the model. A prompt with no click (a box alone, which SAM-Med3D cannot take)
gives an empty mask. A 2D image is a volume of one slice (its ``encode``/``predict`` run the same path).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.interface import (
    Adapter,
    AdapterMeta,
    Capabilities,
    CheckpointSpec,
    LoadOptions,
    ModelCard,
    Prediction,
    Prompt,
    RawImage,
    Support,
    VolumePrompt,
)
from segbench.lazy import lazy_import
from segbench.protocols.sammed3d import ClickPrompt, clicks_of, single_slice
from segbench.weights.torch_models import inference, prepare, seeded

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

SPACING = 1.5  # mm, the official target_spacing
CROP = 128  # voxels a side, the official crop_size (the encoder's img_size)
LOW_RES = CROP // 4  # the mask decoder's logits, 32³
REQUIREMENT = "segbench[sam-med3d]"  # medim and torchio

# the 44 training sets the authors list (uni-medical/SAM-Med3D issue 2, comment 1849002225, and issue 39), as
# short dataset ids; BraTS 2020/2021 and MSD BrainTumour hold the BRATS 2013 cases of the brats task
TRAINED_ON = (
    "amos22",
    "atm22",
    "abdomenct-1k",
    "btcv-cervix",
    "brats2020",
    "brats2021",
    "msd-task01-braintumour",
    "brain-ptm",
    "cause07",
    "chaos",
    "cosmos22",
    "covid19-ct-scans",
    "ctpelvic1k",
    "ct-org",
    "flare21",
    "flare22",
    "heart-seg-mri",
    "isles2015-siss",
    "isles2015-spes",
    "kipa22",
    "kits19",
    "kits21",
    "lascarqs22",
    "lits",
    "mmwhs",
    "msd-task10-colon",
    "msd-task08-hepaticvessel",
    "msd-task03-liver",
    "msd-task07-pancreas",
    "msd-task05-prostate",
    "msd-task09-spleen",
    "promise12",
    "parse22",
    "promise09",
    "prostate-mri-segmentation",
    "sliver07",
    "stacom-slawt",
    "segthor",
    "totalsegmentator",
    "vessel12",
    "verse19",
    "verse20",
    "word",
)
TRAINED_ON_SOURCE = "https://github.com/uni-medical/SAM-Med3D/issues/2#issuecomment-1849002225"
PAPER = "https://arxiv.org/abs/2310.15161"
CODE = "https://github.com/uni-medical/SAM-Med3D"

TURBO_CHECKPOINT = CheckpointSpec(
    name="sam-med3d-turbo",
    filename="sam_med3d_turbo.pth",
    url="https://huggingface.co/blueyo0/SAM-Med3D/resolve/main/sam_med3d_turbo.pth",
    # the Git LFS sha256 on the file's Hugging Face page (revision 07f6f69); the page gives its size as 402 MB only
    sha256="899a46d04d3b70f723282ceb489149373558bf0aaba389a346f5ab57da5cdd3c",
    size=0,
)
CHECKPOINT = CheckpointSpec(
    name="sam-med3d",
    filename="sam_med3d.pth",
    url="https://drive.google.com/file/d/1PFeUjlFMAppllS9x1kAWyCYUJM9re2Ub/view",  # the README's checkpoint table
    sha256="",  # none published, nor a size
    size=0,
    manual_download=True,
)
PREPROCESSING = (
    "raw intensities; torchio Resample to 1.5 mm (linear), ToCanonical (RAS+), 128³ crop zero-padded "
    "(CropOrPad's geometry) centred on the first click — or, with the sammed3d_gtcrop protocols only, on the "
    "ground truth's bounding box as the official script does (a localisation aid, flagged); ZNormalization over "
    "voxels > 0; every click with the previous 32³ logits (zeros first); trilinear to 128³, sigmoid > 0.5; "
    "back to the case's grid with torchio Resample (nearest)"
)
CAPABILITIES = Capabilities(point=True, mask=True, iterative=True, volume=True)


def build_model(**config: Any) -> Any:
    """medim's SAM-Med3D (``vit_b_ori``) with torch's current random initialisation (the caller seeds it);
    ``config`` overrides medim's builder arguments (tests use a shallower encoder)."""
    import medim

    with contextlib.redirect_stdout(io.StringIO()):  # medim prints "creating model ..."
        return medim.create_model("SAM-Med3D", pretrained=False, **config)


def source_affine(raw: RawImage) -> np.ndarray:
    """Index (the pixels' axis order) to RAS+ mm: the file's affine, else the spacing on the diagonal."""
    if raw.affine is not None:
        return np.asarray(raw.affine, dtype=np.float64)
    return np.diag([*map(float, raw.spacing), 1.0])


def grey_volume(raw: RawImage) -> np.ndarray:
    """The raw pixels as a (D, H, W) float32 volume: a 2D image is one slice, channels are averaged."""
    pixels = np.asarray(raw.pixels, dtype=np.float32)
    if pixels.ndim == 3 and len(raw.spacing) == 2:  # (H, W, C)
        pixels = pixels.mean(axis=-1)
    return pixels if pixels.ndim == 3 else pixels[None]


@dataclass
class Canonical:
    """A raw volume after the prompt-independent steps: resampled to 1.5 mm and in RAS+ order."""

    data: np.ndarray  # (X, Y, Z) float32 on the canonical 1.5 mm grid
    affine: np.ndarray  # canonical index -> RAS+ mm
    source_affine: np.ndarray  # the case's index -> RAS+ mm
    source_shape: tuple[int, int, int]

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) indices of the case's grid -> (N, 3) continuous indices of the canonical grid."""
        homogeneous = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))]
        return (homogeneous @ (np.linalg.inv(self.affine) @ self.source_affine).T)[:, :3]


def canonical(raw: RawImage) -> Canonical:
    """Steps 1 (module docstring): ``tio.Resample(1.5)`` then ``tio.ToCanonical`` of the raw volume."""
    import torchio as tio

    volume = grey_volume(raw)
    affine = source_affine(raw) if volume.ndim == len(raw.spacing) else np.diag([SPACING, *map(float, raw.spacing), 1])
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(volume[None].copy()), affine=affine))
    done = tio.ToCanonical()(tio.Resample(SPACING)(subject))
    image: Any = done["image"]
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    return Canonical(image.data[0].numpy(), np.asarray(image.affine), affine, shape)


def start_from_point(point: np.ndarray) -> np.ndarray:
    """The crop's first voxel for a crop centred on a canonical point: CropOrPad's on the one voxel nearest
    to it (its bounding box centre ``p + 0.5`` moves down half a voxel for an even crop: start ``p - 64``)."""
    return np.floor(np.asarray(point, dtype=np.float64) + 0.5).astype(int) - CROP // 2


def start_from_box(volume: Canonical, box: tuple[tuple[int, int, int], tuple[int, int, int]]) -> np.ndarray:
    """The crop's first voxel for a crop centred on a bounding box of the case's grid (inclusive corners):
    the box carried to the canonical grid slab by slab (nearest neighbour, as the label is resampled), then
    CropOrPad's start ``floor((first + last + 1) / 2) - 64`` on each axis."""
    matrix = np.linalg.inv(volume.source_affine) @ volume.affine  # canonical index -> source index
    first, last = np.asarray(box[0]), np.asarray(box[1])
    start = np.zeros(3, dtype=int)
    for axis, size in enumerate(volume.data.shape):
        source_axis = int(np.argmax(np.abs(matrix[:3, axis])))  # resampling keeps the axes: one source axis each
        positions = np.zeros((size, 4))
        positions[:, axis] = np.arange(size)
        positions[:, 3] = 1
        nearest = np.floor((positions @ matrix.T)[:, source_axis] + 0.5)
        inside = np.flatnonzero((nearest >= first[source_axis]) & (nearest <= last[source_axis]))
        if inside.size == 0:
            raise ValueError(f"the crop box {box} falls outside the volume")
        start[axis] = (int(inside[0]) + int(inside[-1]) + 1) // 2 - CROP // 2
    return start


def crop(data: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The 128³ window of ``data`` from ``start``, zero where it leaves the volume (CropOrPad's padding 0)."""
    out = np.zeros((CROP,) * 3, dtype=np.float32)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + CROP, data.shape)
    if np.all(hi > lo):
        out[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))] = data[
            tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        ]
    return out


def znormalise(window: np.ndarray) -> np.ndarray:
    """``tio.ZNormalization(masking_method=lambda x: x > 0)`` of a crop; a crop whose voxels > 0 have no spread
    (none, one, or all equal: torchio would raise) is left as it is."""
    import torchio as tio

    positive = window[window > 0]
    if positive.size < 2 or float(positive.std()) == 0.0:
        return window
    normalised = tio.ZNormalization(masking_method=lambda x: x > 0)(torch.from_numpy(window[None].copy()))
    return np.asarray(normalised[0].numpy())


def roi_affine(volume: Canonical, start: np.ndarray) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = start
    return volume.affine @ shift


def to_source(volume: Canonical, start: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Step 5: the crop's (128³) mask on the case's grid, ``tio.Resample`` (nearest) onto its shape and affine."""
    import torchio as tio

    label = tio.LabelMap(tensor=torch.from_numpy(mask[None].astype(np.uint8)), affine=roi_affine(volume, start))
    shape = volume.source_shape
    resampled = tio.Resample((shape, volume.source_affine), image_interpolation="nearest")(label)
    return np.asarray(resampled.data[0].numpy() > 0)


@dataclass
class VolumeState:
    volume: Canonical
    embeddings: dict[tuple[int, ...], Any] = field(default_factory=dict)  # crop start -> image embedding


@dataclass
class Feedback:
    """What a target's step leaves for the next: its crop and the decoder's low-resolution logits."""

    start: tuple[int, ...]
    logits: Any  # (1, 1, 32, 32, 32) tensor


class SamMed3DBase(Adapter):
    """The SAM-Med3D adapters (module docstring); a subclass names its meta (checkpoint and card)."""

    code_modules: ClassVar[tuple[str, ...]] = ("segbench.protocols.sammed3d",)
    config: ClassVar[dict[str, Any]] = {}  # medim builder overrides (tests only)
    model: Any
    options: LoadOptions

    def load(self, options: LoadOptions) -> None:
        try:
            import medim  # noqa: F401
            import torchio  # noqa: F401
        except ImportError as error:
            raise RuntimeError(f"{self.meta.name} needs medim and torchio: pip install '{REQUIREMENT}'") from error
        self.options = options
        with seeded(options.seed):
            model = build_model(**self.config)
        self.model = prepare(model, options, skip_objects=True)

    # --- 2D: a volume of one slice ------------------------------------------------------------------
    def encode(self, image: Any) -> VolumeState:
        raw = image if isinstance(image, RawImage) else RawImage(np.asarray(image), (1.0, 1.0), "px")
        return self.encode_volume(raw)

    def predict(
        self, state: VolumeState, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        prediction = self.predict_volume(state, [single_slice(prompt) for prompt in prompts or []])
        return Prediction(prediction.masks[:, 0], prediction.scores, prediction.feedback)

    # --- volumes ------------------------------------------------------------------------------------
    def encode_volume(self, volume: Any) -> VolumeState:
        raw = volume if isinstance(volume, RawImage) else RawImage(np.asarray(volume), (1.0, 1.0, 1.0), "px")
        return VolumeState(canonical(raw))

    def _embedding(self, state: VolumeState, start: np.ndarray) -> Any:
        key = tuple(int(v) for v in start)
        if key not in state.embeddings:
            window = znormalise(crop(state.volume.data, start))
            tensor = torch.from_numpy(window)[None, None].to(self.options.device)
            with inference(self.options):
                state.embeddings[key] = self.model.image_encoder(tensor)
        return state.embeddings[key]

    def crop_start(self, state: VolumeState, prompt: VolumePrompt, points: np.ndarray) -> np.ndarray:
        """The crop's first canonical voxel: on the prompt's ``crop_box`` where it carries one (the official
        replay), else on the first click."""
        if isinstance(prompt, ClickPrompt) and prompt.crop_box is not None:
            return start_from_box(state.volume, prompt.crop_box)
        return start_from_point(points[0])

    def predict_volume(self, state: VolumeState, prompts: Sequence[VolumePrompt]) -> Prediction:
        shape = state.volume.source_shape
        masks = np.zeros((len(prompts), *shape), dtype=bool)
        feedback: list[Any] = []
        for index, prompt in enumerate(prompts):
            clicks = clicks_of(prompt)
            if not clicks:
                feedback.append(None)
                continue
            points = state.volume.to_canonical(np.array([point for point, _ in clicks]))
            labels = np.array([label for _, label in clicks])
            start = self.crop_start(state, prompt, points)
            local = points - start
            inside = np.all((local >= 0) & (local < CROP), axis=1)
            if not inside.any():
                feedback.append(None)
                continue
            window_mask, logits = self._decode(state, start, local[inside], labels[inside], prompt.previous)
            masks[index] = to_source(state.volume, start, window_mask)
            feedback.append(Feedback(tuple(int(v) for v in start), logits))
        return Prediction(masks, None, feedback)

    def _decode(
        self, state: VolumeState, start: np.ndarray, points: np.ndarray, labels: np.ndarray, previous: Any
    ) -> tuple[np.ndarray, Any]:
        """Step 4 for one target: (128³ bool mask of the crop, the low-resolution logits)."""
        model, device = self.model, self.options.device
        embedding = self._embedding(state, start)
        same_crop = isinstance(previous, Feedback) and previous.start == tuple(int(v) for v in start)
        prior = previous.logits if same_crop else torch.zeros((1, 1, *(LOW_RES,) * 3), device=device)
        coords = torch.as_tensor(points[None], dtype=torch.float32, device=device)
        classes = torch.as_tensor(labels[None], dtype=torch.int64, device=device)
        with inference(self.options):
            sparse, dense = model.prompt_encoder(points=[coords, classes], boxes=None, masks=prior)
            logits, _ = model.mask_decoder(
                image_embeddings=embedding,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
            )
            upsampled = F.interpolate(logits, size=(CROP,) * 3, mode="trilinear", align_corners=False)
            mask = (torch.sigmoid(upsampled) > 0.5)[0, 0].cpu().numpy()
        return mask, logits


def _meta(name: str, description: str, checkpoint: CheckpointSpec, card_notes: str) -> AdapterMeta:
    """Both variants' facts: one architecture, preprocessing and training list; their checkpoints and the
    card's notes on how each was trained differ."""
    card = ModelCard(
        paper=PAPER,
        code=CODE,
        trained_on=("sa-med3d-140k", *TRAINED_ON),
        trained_on_source=TRAINED_ON_SOURCE,
        notes=card_notes,
    )
    return AdapterMeta(
        name=name,
        family="sam-med3d",
        description=description,
        capabilities=CAPABILITIES,
        version="1",
        license="Apache-2.0",
        input_size=CROP,
        checkpoint=checkpoint,
        preprocessing=PREPROCESSING,
        reference=CODE,
        input="raw",
        card=card,
    )


class SamMed3DTurbo(SamMed3DBase):
    meta = _meta(
        "sam-med3d-turbo",
        "SAM-Med3D-turbo: SAM-Med3D fine-tuned on 44 datasets; 3D ViT-B on 128³ crops at 1.5 mm, clicks",
        TURBO_CHECKPOINT,
        'turbo: the release note in the README ("fine-tuned it on 44 datasets", with the list linked); '
        "pre-trained on SA-Med3D-140K (the paper). BraTS 2020/2021 and MSD BrainTumour contain the BRATS "
        "2013 cases; LAScarQS 2022 is left-atrium LGE MRI.",
    )


class SamMed3D(SamMed3DBase):
    meta = _meta(
        "sam-med3d",
        "SAM-Med3D (ECCV BIC 2024): 3D ViT-B SAM trained on SA-Med3D-140K, on 128³ crops at 1.5 mm, clicks",
        CHECKPOINT,
        "SA-Med3D-140K: 70 public datasets and 8K licensed private cases (the paper); the authors name "
        "the 44 listed as its important training sets (issue 39: turbo was fine-tuned on a selection of them).",
    )


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(SamMed3DTurbo)
    register(SamMed3D)
