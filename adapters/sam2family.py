"""The SAM2 family on the official ``sam2`` package: SAM2.1 Hiera-T/S/B+/L (this module), MedSAM2
(:mod:`segbench.adapters.medsam2`) and Medical-SAM2 (:mod:`segbench.adapters.medical_sam2`).

One model object serves both paths:

* **2D** (images, and volumes slice by slice through the harness's strategies): the official
  ``SAM2ImagePredictor`` on the model, with its own transforms (squash to the model's square input,
  ImageNet mean/std). Prompts of one image are decoded in batches of equal shape (same number of
  points, box or not, mask input or not); a single click without a box asks for three masks and
  keeps the one with the best predicted IoU, as SAM2's notebooks do; the low-resolution logits of
  each answer are the feedback for the next iterative step.
* **Volumes** (``predict_volume``): the official ``SAM2VideoPredictor`` over the slices as frames,
  built with the overrides of ``build_sam2_video_predictor``. For each target: add its prompts on
  their slices, propagate forward from the first prompted slice, reset, add them again, propagate in
  reverse, and take the union (MedSAM2's ``medsam2_infer_3D_CT.py`` recipe); subclasses may post-process
  the volume (MedSAM2 keeps the largest connected component). Frames are made lazily from the
  volume (never all at once), and the image-encoder features of each slice are kept in a
  :class:`~segbench.protocols.slice_cache.SliceEncodings` shared by every target, pass, protocol and step of
  the volume, so every slice is encoded once (SAM2 itself keeps only the last frame's features).
  With ``LoadOptions.offload`` the propagation state (memories, masks) is stored on the CPU
  (``offload_state_to_cpu``); frames are always made on the CPU.

Models are built from config files with random weights (seeded), and checkpoints are loaded through
:func:`segbench.weights.checkpoints.read_state_dict`, strictly: never through ``sam2``'s own loader.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from segbench.adapters.sam_decoding import (
    GroupAnswer,
    PromptShape,
    decode_by_shape,
    pick_best,
    stacked_boxes,
    stacked_points,
)
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
    Support,
    VolumePrompt,
)
from segbench.lazy import lazy_import
from segbench.protocols.slice_cache import SliceEncodings
from segbench.weights.torch_models import inference, prepare, seeded

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAM2_CAPABILITIES = Capabilities(box=True, point=True, mask=True, iterative=True, multimask=True, volume=True)
# The overrides build_sam2_video_predictor applies (apply_postprocessing=True) for video inference.
VIDEO_OVERRIDES = {
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 8,
}
# the sam2 releases whose private parts (IMAGE_PREDICTOR_FIELDS, the video predictor's state) are used here
SAM2_REQUIREMENT = "sam2>=1.1,<1.2"
IMAGE_PREDICTOR_FIELDS = ("_features", "_orig_hw", "_is_image_set", "_bb_feat_sizes")
# imported by the config's _target_ when a model is built, so that listing adapters does not import sam2
PREDICTOR_TARGET = "segbench.adapters.sam2_video.VolumePredictor"


def package_config(relative: str) -> Path:
    """A model config shipped inside the official ``sam2`` package."""
    import sam2

    return Path(sam2.__file__).parent / "configs" / relative


def build_model(config: Path) -> Any:
    """The model of a SAM2 config file, as a video predictor with the official video overrides,
    with (the caller's seeded) random weights."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config)
    cfg.model._target_ = PREDICTOR_TARGET
    cfg.model = OmegaConf.merge(cfg.model, VIDEO_OVERRIDES)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def check_sam2_layout(predictor: Any, model: Any) -> None:
    """A clear error at load when the installed ``sam2`` lacks the private parts this module and
    :mod:`segbench.adapters.sam2_video` use: ``SAM2ImagePredictor``'s fields (set to decode from cached
    features, and resized for inputs other than 1024), ``SAM2VideoPredictor._get_image_feature`` (fed
    from the slice cache) and the keys of ``SAM2VideoPredictor.init_state`` (restated for lazy frames).
    They are those of sam2 1.1 (``SAM2_REQUIREMENT``, pinned in pyproject.toml); sam2 0.4 (SAM 2.0)
    has other state keys and no SAM 2.1 configs."""
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    missing = [f"SAM2ImagePredictor.{name}" for name in IMAGE_PREDICTOR_FIELDS if not hasattr(predictor, name)]
    if not callable(getattr(SAM2VideoPredictor, "_get_image_feature", None)):
        missing.append("SAM2VideoPredictor._get_image_feature")
    official = set(re.findall(r'inference_state\["(\w+)"\]\s*=', inspect.getsource(SAM2VideoPredictor.init_state)))
    ours = set(model.init_volume_state(LazyFrames(np.zeros((0, 1, 1), np.uint8), torch.from_numpy), None, False))
    differ = sorted(official ^ (ours - {"segbench_features"}))
    if differ:
        missing.append(f"SAM2VideoPredictor.init_state with the state keys of sam2 1.1 (these differ: {differ})")
    if missing:
        try:
            version = importlib.metadata.version("sam2")
        except importlib.metadata.PackageNotFoundError:
            version = "of unknown version"
        raise RuntimeError(
            f"the installed sam2 ({version}) lacks what segbench's SAM2 adapters use: {'; '.join(missing)}. "
            f"They are written against {SAM2_REQUIREMENT}: pip install '{SAM2_REQUIREMENT}'"
        )


def sam2_checkpoint(name: str, filename: str, repo: str, sha256: str, size: int) -> CheckpointSpec:
    return CheckpointSpec(
        name=name,
        filename=filename,
        url=f"https://huggingface.co/{repo}/resolve/main/{filename}",
        sha256=sha256,
        size=size,
    )


SAM2_PRETRAINING = ("sa-1b", "sa-v")
SAM21_CARD = ModelCard(
    paper="https://arxiv.org/abs/2408.00714",
    code="https://github.com/facebookresearch/sam2",
    trained_on=SAM2_PRETRAINING,
    trained_on_complete=True,
    trained_on_source="Ravi et al. 2024 (arXiv:2408.00714), section 5 and appendix: SA-1B images, the SA-V "
    "videos and an internal set of licensed natural videos",
    notes="the internal video set is not published; it holds natural videos, no medical data",
)


class LazyFrames:
    """The frames of a volume for SAM2's video predictor, made one at a time (the last one is kept)."""

    def __init__(self, volume: np.ndarray, make: Callable[[np.ndarray], torch.Tensor]):
        self.volume = volume
        self.make = make
        self.height, self.width = volume.shape[1:]
        self._last: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.volume)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._last is None or self._last[0] != index:
            self._last = (index, self.make(self.volume[index]))
        return self._last[1]


def video_frame(grey: np.ndarray, size: int) -> torch.Tensor:
    """SAM2's video frame loading (``sam2.utils.misc._load_img_as_tensor``) for a grey uint8 slice:
    RGB, PIL resize to size x size (bicubic, Pillow's default), / 255, ImageNet mean/std; (3, S, S) float32."""
    rgb = Image.fromarray(grey).convert("RGB").resize((size, size))
    frame = torch.from_numpy((np.asarray(rgb) / 255.0).astype(np.float32)).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (frame - mean) / std


@dataclass
class ImageState:
    features: dict[str, Any]
    original: tuple[int, int]


@dataclass
class VolumeState:
    frames: LazyFrames
    features: SliceEncodings


class SAM2Family(Adapter):
    """Shared machinery of the SAM2-family adapters; a subclass names its config, checkpoint and key
    layout, and may override :meth:`frame` and :meth:`postprocess_volume`."""

    strip_prefixes: ClassVar[tuple[str, ...]] = ()
    code_modules: ClassVar[tuple[str, ...]] = (
        "segbench.adapters.sam2_video",  # PREDICTOR_TARGET
        "segbench.adapters.sam_decoding",
    )

    model: Any  # sam2_video.VolumePredictor, a SAM2VideoPredictor (sam2's modules are untyped attributes)
    options: LoadOptions

    @classmethod
    def config_path(cls) -> Path:
        """The model config file (YAML) the model is built from."""
        raise NotImplementedError

    def load(self, options: LoadOptions) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.options = options
        with seeded(options.seed):
            self.model = prepare(build_model(self.config_path()), options, self.strip_prefixes)
        self.image_size = int(self.model.image_size)
        self.image_predictor = SAM2ImagePredictor(self.model)
        # the official predictor assumes 1024 inputs; its feature sizes follow the backbone strides 4, 8, 16
        self.image_predictor._bb_feat_sizes = [(self.image_size // s,) * 2 for s in (4, 8, 16)]
        check_sam2_layout(self.image_predictor, self.model)

    # --- 2D ---------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> ImageState:
        predictor = self.image_predictor
        with inference(self.options):
            predictor.set_image(image)
        state = ImageState(predictor._features, image.shape[:2])
        predictor.reset_predictor()
        return state

    def predict(
        self, state: ImageState, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        predictor = self.image_predictor
        height, width = state.original

        def decode(shape: PromptShape, group: list[Prompt]) -> GroupAnswer:
            points, labels = stacked_points(group) if shape.points else (None, None)
            with inference(self.options):
                masks, scores, logits = predictor.predict(
                    point_coords=points,
                    point_labels=labels,
                    box=stacked_boxes(group) if shape.box else None,
                    mask_input=np.stack([p.previous for p in group]) if shape.mask else None,
                    multimask_output=shape.lone_click,
                )
            n, candidates = len(group), 3 if shape.lone_click else 1
            best_scores, best_masks, best_logits = pick_best(
                scores.reshape(n, candidates),
                masks.reshape(n, candidates, height, width),
                logits.reshape(n, candidates, *logits.shape[-2:]),
            )
            return GroupAnswer(best_masks > 0, best_scores, list(best_logits[:, None]))

        predictor._features, predictor._orig_hw, predictor._is_image_set = state.features, [state.original], True
        try:
            return decode_by_shape(self.meta, prompts, state.original, decode)
        finally:
            predictor.reset_predictor()

    # --- volumes ----------------------------------------------------------------------------------
    def frame(self, grey: np.ndarray) -> torch.Tensor:
        """One slice as the video predictor's input frame (3, S, S)."""
        return video_frame(grey, self.image_size)

    def postprocess_volume(self, mask: np.ndarray) -> np.ndarray:
        return mask

    def _backbone(self, image: np.ndarray) -> dict[str, Any]:
        frame = self.frame(image[:, :, 0]).to(self.model.device)[None]
        with inference(self.options):
            return self.model.backbone_features(frame)

    def encode_volume(self, volume: np.ndarray) -> VolumeState:
        frames = LazyFrames(volume, self.frame)
        return VolumeState(frames, SliceEncodings(self._backbone, volume, self.options.device))

    def predict_volume(self, state: VolumeState, prompts: Sequence[VolumePrompt]) -> Prediction:
        model = self.model
        masks = np.zeros((len(prompts), *state.frames.volume.shape), dtype=bool)
        with inference(self.options):
            video = model.init_volume_state(state.frames, state.features, self.options.offload)
            for index, prompt in enumerate(prompts):
                for reverse in (False, True):
                    model.reset_state(video)
                    for z, on_slice in sorted(prompt.slices.items()):
                        model.add_new_points_or_box(
                            video,
                            frame_idx=z,
                            obj_id=1,
                            points=on_slice.points,
                            labels=on_slice.point_labels,
                            box=on_slice.box,
                        )
                    for z, _, logits in model.propagate_in_video(video, reverse=reverse):
                        masks[index, z] |= (logits[0, 0] > 0).cpu().numpy()
                masks[index] = self.postprocess_volume(masks[index])
            model.reset_state(video)
        return Prediction(masks, None, [None] * len(prompts))


def _sam2_adapter(name: str, size: str, config: str, checkpoint: CheckpointSpec) -> type[SAM2Family]:
    meta = AdapterMeta(
        name=name,
        family="sam2",
        description=f"SAM 2.1 Hiera-{size} (Meta): image predictor in 2D, video predictor over slices in 3D",
        capabilities=SAM2_CAPABILITIES,
        version="1",
        license="Apache-2.0",
        input_size=1024,
        checkpoint=checkpoint,
        preprocessing="2D: SAM2ImagePredictor transforms (squash to 1024, ImageNet mean/std); volumes: "
        "SAM2 video frames (PIL bicubic squash to 1024, /255, ImageNet mean/std); forward then "
        "reverse propagation from the first prompted slice, union",
        reference="https://github.com/facebookresearch/sam2",
        card=SAM21_CARD,
    )
    return type(
        f"SAM21Hiera{size.replace('+', 'Plus')}",
        (SAM2Family,),
        {"meta": meta, "config_path": classmethod(lambda cls: package_config(config)), "__module__": __name__},
    )


# sha256 and sizes: the Git LFS pointers of facebook/sam2.1-hiera-* on Hugging Face (tiny and small read
# on facebook's own pages; base-plus and large from mirrors that re-host Meta's files, which agree).
SAM21_TINY = _sam2_adapter(
    "sam2.1-hiera-t",
    "T",
    "sam2.1/sam2.1_hiera_t.yaml",
    sam2_checkpoint(
        "sam2.1-hiera-t",
        "sam2.1_hiera_tiny.pt",
        "facebook/sam2.1-hiera-tiny",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        156008466,
    ),
)
SAM21_SMALL = _sam2_adapter(
    "sam2.1-hiera-s",
    "S",
    "sam2.1/sam2.1_hiera_s.yaml",
    sam2_checkpoint(
        "sam2.1-hiera-s",
        "sam2.1_hiera_small.pt",
        "facebook/sam2.1-hiera-small",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        184416285,
    ),
)
SAM21_BASE_PLUS = _sam2_adapter(
    "sam2.1-hiera-b+",
    "B+",
    "sam2.1/sam2.1_hiera_b+.yaml",
    sam2_checkpoint(
        "sam2.1-hiera-b+",
        "sam2.1_hiera_base_plus.pt",
        "facebook/sam2.1-hiera-base-plus",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        323606802,
    ),
)
SAM21_LARGE = _sam2_adapter(
    "sam2.1-hiera-l",
    "L",
    "sam2.1/sam2.1_hiera_l.yaml",
    sam2_checkpoint(
        "sam2.1-hiera-l",
        "sam2.1_hiera_large.pt",
        "facebook/sam2.1-hiera-large",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        898083611,
    ),
)


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    for adapter in (SAM21_TINY, SAM21_SMALL, SAM21_BASE_PLUS, SAM21_LARGE):
        register(adapter)
