"""nnInteractive (MIC-DKFZ, arXiv 2503.08373): a 3D nnU-Net ResEnc-L UNet whose input is the image plus seven
interaction channels (the previous segmentation, and a positive and a negative channel each for boxes and
lassos, points and scribbles), run through the official package's inference session.

Everything model-specific is the PyPI package ``nninteractive`` 2.6.0 (its ``nnInteractive.inference.
inference_session.nnInteractiveInferenceSession``; the README read at MIC-DKFZ/nnInteractive 154d9c6): intensity
normalisation (z-score over the image's nonzero region), AutoZoom, the refinement passes, point and box
drawing. The adapter only translates segbench's prompts into the session's calls and never touches its
internals:

* input: the file's own intensities, as the authors ask ("DO NOT apply level window, DO NOT normalize"), so
  ``AdapterMeta(input="raw")``; the (D, H, W) volume goes to ``set_image`` as (1, D, H, W), the axis order
  of the README's ``sitk.GetArrayFromImage(...)[None]``. The spacing is passed as ``image_properties`` and,
  as the session says, unused (it works in voxels, with no resampling). A 2D image is a one-slice volume;
  a multi-channel 2D image is averaged over its channels (the network takes one image channel).
* prompts, per target, as the official CVPR 2025 challenge baseline does
  (``nnInteractive/inference/cvpr2025_challenge_baseline/predict.py``): start from the previous
  segmentation (``add_initial_seg_interaction``, the adapter's own feedback of the step before) or from
  nothing (``reset_interactions``), add the box(es) and then every click in the order they were given,
  each with ``run_prediction=False`` but the last, which runs the one prediction (centred, as the
  session's ``_predict`` always is, on the last interaction). A box is the published v1.0 model's native
  2D box: ``[[z, z + 1], [y0, y1 + 1], [x0, x1 + 1]]`` (half-open) on its slice; its 3D boxes are not
  supported by that checkpoint (``bbox3d: False``), so ``z_range`` is not used. Clicks are include (label
  1) or exclude (0) point interactions at (z, y, x). A scribble or a lasso (``Prompt.scribbles``,
  ``Prompt.lassos``) goes to ``add_scribble_interaction`` / ``add_lasso_interaction`` as the drawing's tight
  crop on its slice with its ``interaction_bbox`` (the session's way of taking a drawing without a whole-volume
  mask); the order is boxes, lassos, scribbles, then clicks, so the prediction stays centred on a click when
  there is one (the session centres it on the last interaction).
* loading never unpickles code. The session's own loader calls ``torch.load(..., weights_only=False)``, so
  the adapter reads the checkpoint itself with ``weights_only=True`` (numpy's scalar and dtypes allowed:
  nnU-Net pickles its training log with them), keeps the three entries the session reads
  (``network_weights``, ``trainer_name``, ``init_args["configuration"]``), writes them as plain tensors and
  strings into a private copy of the model folder, and hands that folder to the public
  ``initialize_from_trained_model_folder`` (which builds the network from ``plans.json`` with nnU-Net's
  builder and loads the weights strictly: a missing or unexpected key is an error).
* random weights: the published architecture (:data:`PUBLISHED`), built by the same builder under a seed
  and handed over the same way. The authors' ``plans.json`` is not vendored (it ships with the CC BY-NC-SA
  checkpoint); :func:`plans` restates it: ResEnc L of nnU-Net's ``nnUNetPlannerResEncL`` (6 stages, 32 to
  320 features, 1/3/4/6/6/6 residual blocks, one conv per decoder stage, 3x3x3 kernels, instance norm,
  leaky ReLU) with the 192-cubed patch of the configuration ``3d_fullres_ps192_bs24``, the plans
  ``nnUNetResEncUNetLPlans_noResampling`` of ``Dataset225_nnInteractiveV2`` named by the package. A
  subclass may set a smaller :class:`Architecture` (the tests do: the full net needs minutes per volume on
  a CPU).

AutoZoom is the session's default and is on whenever trained weights are loaded. With ``--weights random`` it
is off: the session zooms out (x1.5 a pass, up to x4) while the prediction changes at the patch border, and
then refines the zoomed result patch by patch (``_predict``, ``_plan_refinement_bboxes``), so its number of
192-cubed passes follows the network's output at the border, which for random weights is noise over the whole
patch (five zoom passes and a refinement over the whole volume: each pass of the published net is ~50 s on two
CPU cores). A target that fits in the patch, as the trained model sees the left atrium or a brain tumour from a
2D box or a click (the box's zoom-out factor is 1 below 128 voxels), takes the one pass that the random-weights
run times, so its speed figure is one network pass per prediction, stated in ``preprocessing``.

The interaction tensor is kept as a dense tensor (``interactions_storage="tensor"``, what the session's
``"auto"`` picks for volumes up to 512 x 512 x 1024 voxels) and undo is off (never used, as in the
challenge baseline). The session's progress prints go nowhere, so the harness's output stays its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    NetworkPass,
    Prediction,
    Prompt,
    RawImage,
    VolumePrompt,
)
from segbench.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

MODEL_FOLDER = "nnInteractive_v1.0"
CONFIGURATION = "3d_fullres_ps192_bs24"
TRAINER = "nnInteractiveTrainer_stub"  # what the released checkpoint names (utils/checkpoint_cleansing.py)
# 6 interaction channels + the previous segmentation: the v1.0 layout (the session's legacy capability)
INTERACTION_CHANNELS = 7
# the v1.0 folder's legacy session metadata, as published
SESSION_INFO = {
    "inference_class": "nnInteractiveInferenceSession",
    "point_radius": 4,
    "preferred_scribble_thickness": 2,
}

CHECKPOINT = CheckpointSpec(
    name="nninteractive",
    # the file keeps its place in the published folder: plans.json, dataset.json and
    # inference_session_class.json are read from two levels above it
    filename=f"{MODEL_FOLDER}/fold_0/checkpoint_final.pth",
    url=f"https://huggingface.co/MIC-DKFZ/nnInteractive/resolve/main/{MODEL_FOLDER}/fold_0/checkpoint_final.pth",
    sha256="",  # the authors publish none: download the whole folder by hand (the file is recorded by its sha256)
    size=411_387_150,
    manual_download=True,
)

# numpy's scalar and dtypes rebuild data only; nnU-Net's training log in the checkpoint holds numpy floats
_NUMPY_SCALAR = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar  # type: ignore[attr-defined]
NUMPY_DATA_GLOBALS: tuple[Any, ...] = (
    _NUMPY_SCALAR,
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),  # the name under numpy 1.x
    np.dtype,
    *(getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")),
)


@dataclass(frozen=True)
class Architecture:
    """The knobs of nnU-Net's ResEnc UNet that :func:`plans` writes (the rest is the ResEnc-L preset)."""

    patch_size: tuple[int, int, int] = (192, 192, 192)
    features_per_stage: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
    blocks_per_stage: tuple[int, ...] = (1, 3, 4, 6, 6, 6)


PUBLISHED = Architecture()


def plans(architecture: Architecture = PUBLISHED) -> dict[str, Any]:
    """nnU-Net v2 plans of the published model (see the module docstring), with ``architecture``'s knobs."""
    stages = len(architecture.features_per_stage)
    arch_kwargs = {
        "n_stages": stages,
        "features_per_stage": list(architecture.features_per_stage),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * stages,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
        "n_blocks_per_stage": list(architecture.blocks_per_stage),
        "n_conv_per_stage_decoder": [1] * (stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    configuration = {
        "data_identifier": f"nnUNetResEncUNetLPlans_noResampling_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 24,
        "patch_size": list(architecture.patch_size),
        "median_image_size_in_voxels": list(architecture.patch_size),
        "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
            "arch_kwargs": arch_kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": True,
    }
    return {
        "dataset_name": "Dataset225_nnInteractiveV2",
        "plans_name": "nnUNetResEncUNetLPlans_noResampling",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": list(architecture.patch_size),
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "nnUNetPlannerResEncL",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }


DATASET_JSON = {
    "channel_names": {"0": "any"},
    "labels": {"background": 0, "foreground": 1},
    "numTraining": 0,
    "file_ending": ".nii.gz",
}


def write_model_folder(
    folder: Path, plans_json: dict[str, Any], state: dict[str, Any], trainer: str = TRAINER, fold: int = 0
) -> Path:
    """A trained-model folder in the published layout (``plans.json``, ``dataset.json``,
    ``inference_session_class.json``, ``fold_N/checkpoint_final.pth`` holding ``network_weights``,
    ``trainer_name`` and ``init_args``); returns its checkpoint's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans_json, indent=1))
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON, indent=1))
    (folder / "inference_session_class.json").write_text(json.dumps(SESSION_INFO))
    checkpoint = folder / f"fold_{fold}" / "checkpoint_final.pth"
    checkpoint.parent.mkdir(exist_ok=True)
    torch.save(
        {"network_weights": state, "trainer_name": trainer, "init_args": {"configuration": CONFIGURATION}}, checkpoint
    )
    return checkpoint


def build_network(plans_json: dict[str, Any], seed: int) -> torch.nn.Module:
    """The network of ``plans_json``, built with seeded random weights by the builder the session uses."""
    from nnInteractive.trainer.nnInteractiveTrainer import nnInteractiveTrainer_stub
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from segbench.weights.torch_models import seeded

    manager = PlansManager(plans_json)
    configuration = manager.get_configuration(CONFIGURATION)
    channels = determine_num_input_channels(manager, configuration, DATASET_JSON) + INTERACTION_CHANNELS
    with seeded(seed):
        network: torch.nn.Module = nnInteractiveTrainer_stub.build_network_architecture(
            manager, configuration, channels, 2, enable_deep_supervision=False
        )
    return network


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The session prints its progress to stdout; segbench's stdout is its own (the run's path, JSON)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def numpy_seeded(seed: int) -> Iterator[None]:
    """numpy's global RNG seeded, and given back as it was: the session's refinement planner draws patch
    centres from it (``utils/bboxes.py``, ``random_sampling_fallback``), so a target's mask depends only on
    its prompts and the run's seed, not on what ran before it."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def _copy_metadata(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json", "inference_session_class.json", "inference_info.json", "LICENSE"):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


@dataclass
class VolumeState:
    """One encoded (D, H, W) volume: its raw pixels (the session holds one image at a time and is given
    this one again if another was set in between) and its spacing."""

    pixels: np.ndarray
    spacing: tuple[float, ...]


@dataclass(frozen=True)
class Feedback:
    """What one step leaves for the next of the same target: its mask (the next step's initial
    segmentation, as the challenge's ``prev_pred``) and the clicks given so far, in their order."""

    mask: np.ndarray
    clicks: tuple[tuple[tuple[float, float, float], bool], ...]


# ("box", [[z0, z1], [y0, y1], [x0, x1]], include), ("point", (z, y, x), include), or ("lasso" | "scribble",
# ([[z0, z1], [y0, y1], [x0, x1]], (1, h, w) uint8 crop), include)
Interaction = tuple[str, Any, bool]


def drawing(z: int, mask: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """A 2D drawing on slice ``z`` as the session takes it: its half-open ``interaction_bbox`` and the
    (1, h, w) uint8 crop of the drawing inside it."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError(f"an empty drawing on slice {z}")
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    return [[z, z + 1], [y0, y1], [x0, x1]], mask[None, y0:y1, x0:x1].astype(np.uint8)


def interactions(prompt: VolumePrompt) -> tuple[list[Interaction], tuple[tuple[tuple[float, float, float], bool], ...]]:
    """The session calls for one target's prompt, in order, and the clicks among them (for the feedback).

    Boxes first (the key slice's, then the others by slice), then lassos and scribbles (by slice, in their
    order), then the clicks: those of the previous step in their order, then the new ones (by slice, in the
    order given on it), so the last click added is the last interaction and the prediction is centred on it."""
    order = [prompt.key_slice] + sorted(z for z in prompt.slices if z != prompt.key_slice)
    boxes: list[Interaction] = []
    drawn: dict[str, list[Interaction]] = {"lasso": [], "scribble": []}
    given: list[tuple[tuple[float, float, float], bool]] = []
    for z in order:
        on_slice = prompt.slices.get(z)
        if on_slice is None:
            continue
        if on_slice.box is not None:
            x0, y0, x1, y1 = (float(v) for v in on_slice.box)
            boxes.append(("box", [[z, z + 1], [y0, y1 + 1], [x0, x1 + 1]], True))
        for kind, found in drawn.items():
            found += [(kind, drawing(z, mask), include) for mask, include in on_slice.drawn(kind)]  # type: ignore[arg-type]
        if on_slice.points is not None:
            labels = on_slice.point_labels if on_slice.point_labels is not None else np.ones(len(on_slice.points))
            for (x, y), label in zip(on_slice.points, labels, strict=True):
                given.append(((float(z), float(y), float(x)), bool(label)))
    previous = prompt.previous.clicks if isinstance(prompt.previous, Feedback) else ()
    remaining = list(given)
    clicks = []
    for click in previous:
        if click in remaining:
            remaining.remove(click)
            clicks.append(click)
    clicks += remaining
    points: list[Interaction] = [("point", coords, include) for coords, include in clicks]
    return boxes + drawn["lasso"] + drawn["scribble"] + points, tuple(clicks)


class NNInteractive(Adapter):
    meta = AdapterMeta(
        name="nninteractive",
        family="nninteractive",
        description="nnInteractive v1.0: 3D ResEnc-L nnU-Net with 2D boxes, include/exclude clicks, scribbles "
        "and lassos "
        "(CVPR 2025 interactive 3D challenge winner), through the official inference session",
        capabilities=Capabilities(box=True, point=True, iterative=True, volume=True, scribble=True, lasso=True),
        version="1",
        license="CC BY-NC-SA 4.0 (weights); Apache-2.0 (code)",
        input_size=PUBLISHED.patch_size[0],
        checkpoint=CHECKPOINT,
        preprocessing="raw intensities, z-scored by the session over the image's nonzero region; no resampling "
        "(voxel space); 192^3 patches with AutoZoom; 2D box on its slice, clicks include/exclude, scribbles and "
        "lassos as crops on their slice; "
        "iterative steps restart from the previous mask (CVPR 2025 baseline recipe); with random weights AutoZoom "
        "is off (one 192^3 pass a prediction: see the module's notes)",
        reference="https://github.com/MIC-DKFZ/nnInteractive",
        input="raw",
        card=ModelCard(
            paper="https://arxiv.org/abs/2503.08373",
            code="https://github.com/MIC-DKFZ/nnInteractive",
            # Only the collection: the published per-set list could not be read from segbench's sources (the
            # repository's README and code at 154d9c6 name no set), so no task set of segbench's is established
            # as in or out of it and the card stays incomplete. A third party's "not fine-tuned on glioma or
            # BraTS data" (oncoprep.readthedocs.io, usage/segmentation) is not the authors' word: not used.
            trained_on=("nninteractive-120",),
            trained_on_source="Isensee et al. 2025 (arXiv:2503.08373), abstract: 'Trained on 120+ diverse "
            "volumetric 3D datasets (CT, MRI, PET, 3D Microscopy, etc.)'; the sets are not named in the README "
            "or code of MIC-DKFZ/nnInteractive (154d9c6)",
            notes="the paper's list of training sets is not transcribed set by set: no segbench task's dataset "
            "(BraTS, the left atrium, ...) is known to be in or out of it, so every pair reads 'unknown', never "
            "zero-shot",
        ),
    )
    code_modules: ClassVar[tuple[str, ...]] = ("nnInteractive.inference.inference_session",)
    architecture: ClassVar[Architecture] = PUBLISHED  # of random weights; a checkpoint brings its own plans
    # the session's default and the README's, with trained weights; a test may switch it off for speed
    autozoom: ClassVar[bool] = True

    session: Any = None
    current: VolumeState | None = None

    def load(self, options: LoadOptions) -> None:
        try:
            from nnInteractive.inference.inference_session import nnInteractiveInferenceSession
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                f"{error}: the nninteractive adapter needs the official package: pip install 'segbench[nninteractive]'"
            ) from error

        from segbench.weights.checkpoints import read_checkpoint

        self.options = options
        with tempfile.TemporaryDirectory(prefix="segbench-nninteractive-") as scratch:
            folder = Path(scratch) / MODEL_FOLDER
            if options.random_weights or options.checkpoint is None:
                network = build_network(plans(self.architecture), options.seed)
                write_model_folder(folder, plans(self.architecture), network.state_dict())
                del network
            else:
                path = Path(options.checkpoint)
                saved = read_checkpoint(path, allowed=NUMPY_DATA_GLOBALS)
                _copy_metadata(path.parent.parent, folder)
                if not (folder / "plans.json").is_file():
                    raise FileNotFoundError(f"{path.parent.parent}: no plans.json beside the checkpoint's fold folder")
                fold = folder / path.parent.name
                fold.mkdir()
                torch.save(
                    {
                        "network_weights": dict(saved["network_weights"]),
                        "trainer_name": str(saved["trainer_name"]),
                        "init_args": {"configuration": str(saved["init_args"]["configuration"])},
                    },
                    fold / "checkpoint_final.pth",
                )
                del saved
            with quiet():
                self.session = nnInteractiveInferenceSession(
                    device=torch.device(options.device),
                    use_torch_compile=False,
                    verbose=False,
                    torch_n_threads=torch.get_num_threads(),
                    do_autozoom=self.autozoom and not options.random_weights,
                    interactions_storage="tensor",
                    enable_undo=False,
                )
                self.session.initialize_from_trained_model_folder(str(folder))
        self.current = None

    def network_pass(self) -> NetworkPass:
        """One pass of the ResEnc UNet on one patch of the configuration: the image channel and the
        interaction channels. A target costs a data-dependent number of them (AutoZoom, refinement)."""
        patch = tuple(int(n) for n in self.session.configuration_manager.patch_size)
        return NetworkPass(self.session.network, (1, 1 + INTERACTION_CHANNELS, *patch))

    # --- volumes ---

    def encode_volume(self, volume: Any) -> VolumeState:
        if not isinstance(volume, RawImage):
            raise TypeError("nninteractive takes raw intensities (AdapterMeta.input='raw'), got 8-bit pixels")
        return VolumeState(np.asarray(volume.pixels), tuple(volume.spacing))

    def _show(self, state: VolumeState) -> None:
        if self.current is not state:
            with quiet():
                self.session.set_image(state.pixels[None], {"spacing": list(state.spacing)})
            self.current = state

    def predict_volume(self, state: Any, prompts: Sequence[VolumePrompt]) -> Prediction:
        self._show(state)
        shape = state.pixels.shape
        masks = np.zeros((len(prompts), *shape), dtype=bool)
        feedback: list[Any] = []
        for index, prompt in enumerate(prompts):
            steps, clicks = interactions(prompt)
            target = torch.zeros(shape, dtype=torch.uint8)
            with quiet(), numpy_seeded(self.options.seed):
                self.session.set_target_buffer(target)
                if isinstance(prompt.previous, Feedback):
                    self.session.add_initial_seg_interaction(
                        prompt.previous.mask.astype(np.uint8), run_prediction=False
                    )
                else:
                    self.session.reset_interactions()
                for number, (kind, where, include) in enumerate(steps):
                    last = number == len(steps) - 1
                    if kind == "box":
                        self.session.add_bbox_interaction(where, include_interaction=include, run_prediction=last)
                    elif kind in ("lasso", "scribble"):
                        bbox, crop = where
                        add = getattr(self.session, f"add_{kind}_interaction")
                        add(crop, include, run_prediction=last, interaction_bbox=bbox)
                    else:
                        self.session.add_point_interaction(where, include_interaction=include, run_prediction=last)
            masks[index] = target.numpy() > 0
            feedback.append(Feedback(masks[index].copy(), clicks))
        return Prediction(masks, feedback=feedback)

    # --- 2D images: one-slice volumes ---

    def encode(self, image: Any) -> VolumeState:
        if not isinstance(image, RawImage):
            raise TypeError("nninteractive takes raw intensities (AdapterMeta.input='raw'), got 8-bit pixels")
        pixels = np.asarray(image.pixels)
        if pixels.ndim == 3:  # (H, W, C): one image channel
            pixels = pixels.astype(np.float32).mean(axis=2)
        return VolumeState(pixels[None], (1.0, *image.spacing))

    def predict(
        self, state: Any, prompts: Sequence[Prompt] | None = None, support: Sequence[Any] | None = None
    ) -> Prediction:
        volume_prompts = [VolumePrompt({0: prompt}, 0, (0, 0), previous=prompt.previous) for prompt in prompts or ()]
        prediction = self.predict_volume(state, volume_prompts)
        return Prediction(prediction.masks[:, 0], feedback=prediction.feedback)


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(NNInteractive)
