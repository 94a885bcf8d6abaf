"""The one interface every model adapter implements.

An adapter declares what it can do (:class:`Capabilities`) and implements three steps:

* ``load(options)`` builds the model on a device, from a checkpoint file or with random weights;
* ``encode(image)`` runs the expensive, prompt-independent part once per image (timed on its own:
  the encoder dominates the cost of the SAM family and is shared by every prompt on that image);
* ``predict(state, prompts, support)`` decodes a *batch* of targets, each told by a prompt, a support
  set of labelled examples (in-context models), or both, into masks.

Volumes (3D tasks). Every 2D adapter runs on volumes for free: the harness applies the standard
strategies slice by slice (:mod:`segbench.protocols.propagation`), calling ``encode``/``predict`` per slice. An
adapter that propagates through a volume itself (a video model such as SAM2) declares
``Capabilities(volume=True)`` and implements two more steps:

* ``encode_volume(volume)`` prepares a (D, H, W) uint8 volume once per case (e.g. lazy frames and a
  feature cache shared by every label and protocol of the case); the default keeps the array;
* ``predict_volume(state, prompts)`` turns a batch of :class:`VolumePrompt` (2D prompts on some
  slices, one per target) into (N, D, H, W) masks.

Inputs. An adapter declares what its encoders are handed (``AdapterMeta.input``): by default
(``"rgb8"``) the task's intensity policy applied by the harness (CT window, percentile clip, ...) as
(H, W, 3) uint8 images and (D, H, W) uint8 volumes, which is what the SAM family's authors feed their
models; with ``"raw"``, a :class:`RawImage`: the file's own values (Hounsfield units, MR intensities) with
the case's spacing and the task's modality, for models that normalise for themselves (3D-native models
such as nnInteractive or SAM-Med3D). Every row records the input its adapter got (column ``input``).

The harness never special-cases a model: everything model-specific (preprocessing, coordinate
scaling, thresholds) lives inside the adapter, and everything protocol-specific (which prompts,
which support sets, which metrics) lives in the harness, identical for every adapter.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

Precision = Literal["fp32", "bf16", "fp16"]
# what an adapter's encoders are handed (AdapterMeta.input): "rgb8", the task's intensity policy as 8-bit
# (H, W, 3) images and (D, H, W) volumes; "raw", a RawImage of the file's own values with their spacing
InputKind = Literal["rgb8", "raw"]
INPUT_KINDS: tuple[InputKind, ...] = ("rgb8", "raw")


@dataclass(frozen=True)
class Capabilities:
    """What an adapter accepts. Protocols that need a missing capability are not run for it."""

    box: bool = False
    point: bool = False
    mask: bool = False  # accepts a mask (or its own previous logits) as a prompt
    iterative: bool = False  # built to refine with its own previous output
    multimask: bool = False  # can return several candidate masks and pick one
    support_set: bool = False  # in-context: told the task by labelled examples
    volume: bool = False  # native 3D or video propagation
    scribble: bool = False  # takes drawn strokes (Prompt.scribbles), include and exclude
    lasso: bool = False  # takes filled closed outlines (Prompt.lassos), include and exclude

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]


@dataclass(frozen=True)
class CheckpointSpec:
    """The official identity of one checkpoint file.

    ``sha256 = ""`` marks a file whose authors publish no digest (and ``size = 0`` an unknown size):
    such a file is used without a check, recorded with the sha256 it has, and never marked official.
    """

    name: str
    filename: str
    url: str
    sha256: str  # "" where the publisher gives none
    size: int  # bytes; 0 where the publisher gives none
    bundled: tuple[str, str] | None = None  # (package, resource) of a package that ships the file
    manual_download: bool = False  # the URL needs a browser (e.g. Google Drive), so no `weights fetch`
    xxh128: str = ""  # the publisher's xxh128, for files published with no sha256

    @property
    def pin(self) -> tuple[str, str] | None:
        """``(algorithm, digest)`` the file must match, or None when nothing is published."""
        if self.sha256:
            return "sha256", self.sha256
        if self.xxh128:
            return "xxh128", self.xxh128
        return None

    @property
    def fetchable(self) -> bool:
        """``segbench weights fetch`` downloads only files with a plain URL and a published sha256."""
        return bool(self.sha256) and not self.manual_download

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "filename": self.filename, "url": self.url, "sha256": self.sha256, "size": self.size}
        if self.xxh128:
            out["xxh128"] = self.xxh128
        return out


@dataclass(frozen=True)
class ModelCard:
    """What a reader needs to trust a model's row: where it comes from and what it was trained on.

    Only published facts live here (links, licence on ``AdapterMeta``, training sets as the authors list
    them, with the source cited); parameter counts and FLOPs are measured by segbench, never typed in.
    ``trained_on`` holds dataset ids in the vocabulary of the tasks' ``origin`` key, so the leaderboard
    can mark every (model, task) pair that is not zero-shot. ``trained_on_complete`` says the list holds
    every dataset the model (and the model it starts from) was trained on: only then is a pair whose task
    origin is not in it called zero-shot; otherwise such a pair is "unknown" (a published list of hundreds of
    source sets is not mapped here set by set, and a guess would call a pair zero-shot that is not). A model
    trained on nothing (a classical baseline) has ``trained_on=()`` and ``trained_on_complete=True``.
    """

    paper: str = ""  # URL of the paper
    code: str = ""  # URL of the official code
    trained_on: tuple[str, ...] = ()  # dataset ids (see tasks/README.md, "origin")
    trained_on_source: str = ""  # where the training list is published (paper table, model card URL)
    notes: str = ""
    trained_on_complete: bool = False  # trained_on lists every training set (see above)

    def describe(self) -> dict[str, Any]:
        return {
            "paper": self.paper,
            "code": self.code,
            "trained_on": list(self.trained_on),
            "trained_on_complete": self.trained_on_complete,
            "trained_on_source": self.trained_on_source,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class AdapterMeta:
    """Static facts about an adapter, shown by ``segbench adapters`` and on the leaderboard."""

    name: str
    family: str
    description: str
    capabilities: Capabilities
    version: str = "1"
    license: str = "unknown"
    input_size: int | None = None
    checkpoint: CheckpointSpec | None = None
    preprocessing: str = ""
    reference: str = ""
    input: InputKind = "rgb8"  # what encode/encode_volume receive: the task's window as 8-bit, or RawImage
    card: ModelCard = field(default_factory=ModelCard)

    def __post_init__(self) -> None:
        if self.input not in INPUT_KINDS:
            raise ValueError(f"adapter '{self.name}': input must be one of {INPUT_KINDS}, got {self.input!r}")


@dataclass(frozen=True)
class RawImage:
    """What the encoders of an adapter declaring ``AdapterMeta(input="raw")`` receive instead of 8-bit pixels.

    ``pixels`` are the file's own values in its own dtype, before any intensity policy (CT in Hounsfield
    units after the DICOM rescale, MR as stored): (H, W) or (H, W, C) for a 2D image, one slice of a
    volume included, and (D, H, W) for ``encode_volume``. The adapter does its own normalisation, as its
    authors do (nnInteractive takes HU unwindowed, SAM-Med3D z-normalises the voxels, MedSAM2 windows per
    lesion). ``spacing`` is in the pixels' axis order, in ``unit`` ("mm", or "px" when the reader assumed
    1.0 a pixel); ``modality`` is the task's (e.g. "CT", "" when the task says none); ``affine`` maps array
    index to RAS+ millimetres where the file gives it (volumes), else None.
    """

    pixels: np.ndarray
    spacing: tuple[float, ...]
    unit: str = "mm"
    modality: str = ""
    affine: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.pixels.dtype

    def slice(self, z: int) -> RawImage:
        """Slice ``z`` of a volume as the 2D raw image a 2D adapter's ``encode`` takes (no affine)."""
        return RawImage(self.pixels[z], self.spacing[1:], self.unit, self.modality)


@dataclass(frozen=True)
class LoadOptions:
    """How the harness asks an adapter to build its model.

    ``checkpoint`` is a verified local file, or ``None`` when ``random_weights`` is set (the real
    architecture with seeded random weights, for speed and memory only) or when the adapter needs no
    weights at all (classical baselines).
    """

    device: str = "cpu"
    checkpoint: Path | None = None
    random_weights: bool = False
    precision: Precision = "fp32"
    seed: int = 0
    offload: bool = False  # keep video frames and propagation state in host memory (SAM2's offload options)


@dataclass
class Prompt:
    """One prompt for one target on one 2D image, in pixel coordinates of the original image.

    ``box`` is ``(x_min, y_min, x_max, y_max)`` with inclusive pixel indices (the tight box of a mask
    has ``x_max`` = its last column). ``points`` is ``(N, 2)`` as ``(x, y)``; ``point_labels`` is 1 for
    a positive and 0 for a negative click. ``previous`` is whatever the adapter returned as feedback
    for this target at the previous step (e.g. SAM's low-resolution logits); the harness passes it
    back untouched and never looks inside.

    Drawn prompts, for the models that take them (``Capabilities(scribble=True)``, ``lasso=True``: the
    interaction kinds of nnInteractive): ``scribbles`` is ``(K, H, W)`` bool, K strokes each as the pixels
    it covers, and ``lassos`` likewise K filled closed outlines (the region a lasso encloses), each with
    its ``scribble_labels`` / ``lasso_labels`` entry, 1 include and 0 exclude.
    """

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    previous: Any = None
    scribbles: np.ndarray | None = None
    scribble_labels: np.ndarray | None = None
    lassos: np.ndarray | None = None
    lasso_labels: np.ndarray | None = None

    def drawn(self, kind: Literal["scribble", "lasso"]) -> list[tuple[np.ndarray, bool]]:
        """The ``kind`` drawings of this prompt as ``(H, W) bool mask, include``, in their order."""
        masks, labels = (
            (self.scribbles, self.scribble_labels) if kind == "scribble" else (self.lassos, self.lasso_labels)
        )
        if masks is None:
            return []
        labels = np.ones(len(masks), dtype=np.int64) if labels is None else labels
        return [(np.asarray(mask, dtype=bool), bool(label)) for mask, label in zip(masks, labels, strict=True)]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record of the prompt, stored with each result row: a drawing is recorded by its
        label, pixel count, tight box and a digest of its pixels (its mask is rebuilt from the case and the
        protocol, never stored in a row)."""
        out: dict[str, Any] = {}
        if self.box is not None:
            out["box"] = [float(v) for v in self.box]
        if self.points is not None and len(self.points):
            out["points"] = [[float(x), float(y)] for x, y in self.points]
            out["labels"] = [int(v) for v in self.point_labels]  # type: ignore[union-attr]
        for kind in ("scribble", "lasso"):
            drawings = self.drawn(kind)
            if drawings:
                out[f"{kind}s"] = [_drawing_record(mask, include) for mask, include in drawings]
        return out


def _drawing_record(mask: np.ndarray, include: bool) -> dict[str, Any]:
    rows, cols = np.nonzero(mask)
    box = [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())] if rows.size else []
    digest = hashlib.sha256(np.packbits(mask).tobytes() + repr(mask.shape).encode()).hexdigest()[:16]
    return {"label": int(include), "pixels": int(rows.size), "box": box, "sha256": digest}


@dataclass
class VolumePrompt:
    """The prompts for one target in a volume: 2D prompts on some slices.

    ``slices`` maps a slice index to a :class:`Prompt` in that slice's pixel coordinates (a 3D click at
    (z, y, x) is a point (x, y) on slice z). ``key_slice`` is where propagation starts (the slice of
    the first box), and ``z_range`` the inclusive (first, last) slices of the target's extent: with the
    key slice's box it is the CVPR challenges' 3D box, which a model may use to stop propagating.
    ``previous`` is the adapter's own feedback from the previous iterative step, passed back untouched.
    """

    slices: dict[int, Prompt]
    key_slice: int
    z_range: tuple[int, int]
    previous: Any = None

    def describe(self) -> dict[str, Any]:
        return {
            "key_slice": self.key_slice,
            "z_range": list(self.z_range),
            "slices": {str(z): prompt.describe() for z, prompt in sorted(self.slices.items())},
        }


@dataclass
class Support:
    """One support set: labelled examples of one target, images (H, W, 3) uint8 with (H, W) bool masks;
    for an adapter declaring ``AdapterMeta(input="raw")``, the examples' raw pixels as :class:`RawImage`
    (what its ``encode`` gets for a query).

    The examples come from the task's support pool, never from the query's own case; their size may
    differ from the query's (an adapter resizes as its model needs)."""

    images: list[Any]  # np.ndarray (rgb8 adapters) or RawImage (raw adapters)
    masks: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Prediction:
    """Masks for a batch of targets: ``masks`` is ``(N, H, W)`` bool in the original image size (a numpy
    array of dtype bool: anything else fails the case, see :func:`check_masks`).

    ``probabilities`` (optional, ``(N, H, W)`` float in [0, 1]) is the soft output behind ``masks``;
    the harness ensembles in-context predictions over several support sets by averaging it (an
    adapter without it is ensembled by a majority vote of its masks)."""

    masks: np.ndarray
    scores: np.ndarray | None = None
    feedback: list[Any] = field(default_factory=list)
    probabilities: np.ndarray | None = None


class MaskError(ValueError):
    """An adapter returned masks that are not a numpy bool array of the expected shape."""


def check_masks(masks: Any, shape: tuple[int, ...], where: str = "") -> np.ndarray:
    """``masks`` when it is what an adapter must return, a numpy bool array of ``shape`` (N targets first);
    else :class:`MaskError` saying what came back. The harness never guesses: float probabilities,
    uint8 or a tensor are a bug in the adapter (threshold inside it), not foreground wherever nonzero."""
    if not isinstance(masks, np.ndarray):
        kind = type(masks)
        described = ", ".join(f"{key} {getattr(masks, key)}" for key in ("dtype", "shape") if hasattr(masks, key))
        raise MaskError(
            f"adapter returned masks as {kind.__module__}.{kind.__qualname__}"
            f"{f' ({described})' if described else ''}{where}, expected a numpy bool array of shape "
            f"{shape}"
        )
    if masks.dtype != np.bool_ or masks.shape != shape:
        raise MaskError(
            f"adapter returned masks of dtype {masks.dtype} and shape {masks.shape}{where}, "
            f"expected bool of shape {shape}"
        )
    return masks


@dataclass(frozen=True)
class NetworkPass:
    """One pass of the network an adapter drives, the unit its model card's FLOPs are counted in when a
    target's cost is a data-dependent number of such passes (:meth:`Adapter.network_pass`).

    ``network`` is the ``torch.nn.Module`` (typed ``Any``: the interface needs no torch) and ``input_shape``
    the shape of one pass's input tensor, batch and channels included; ``patch`` is its spatial part, what a
    page says the figure is per."""

    network: Any
    input_shape: tuple[int, ...]

    @property
    def patch(self) -> tuple[int, ...]:
        return self.input_shape[2:]


class Adapter(ABC):
    """Base class of model adapters. Subclasses set ``meta`` and implement ``load``/``encode``/``predict``."""

    meta: ClassVar[AdapterMeta]
    # modules the adapter imports only when it runs (its model code, kept out of the module that declares it
    # so that listing adapters needs no torch; segbench.lazy): their source counts in the adapter's fingerprint
    code_modules: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def load(self, options: LoadOptions) -> None:
        """Build the model on ``options.device``; load ``options.checkpoint`` unless random weights."""

    @abstractmethod
    def encode(self, image: np.ndarray) -> Any:
        """Run the prompt-independent part on one (H, W, 3) uint8 image and return its state (a
        :class:`RawImage` for adapters declaring ``input="raw"``)."""

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[Any]:
        """Encode several images at once (for throughput under batching); adapters whose encoder takes
        batches override this, the default encodes one image at a time."""
        return [self.encode(image) for image in images]

    @abstractmethod
    def predict(
        self,
        state: Any,
        prompts: Sequence[Prompt] | None = None,
        support: Sequence[Support] | None = None,
    ) -> Prediction:
        """Decode a batch of N targets of one image into ``(N, H, W)`` masks, in one call.

        Prompt protocols pass ``prompts`` (one per target). Support protocols pass ``support``: one
        support set per target (a target asked with several support sets, for ensembling, appears
        once per set). A protocol may pass both, aligned: ``prompts[i]`` and ``support[i]`` describe
        the same target (for models that take a prompt and examples together). An adapter receives
        only what its :class:`Capabilities` declare.
        """

    def encode_volume(self, volume: np.ndarray) -> Any:
        """Prepare a (D, H, W) uint8 volume for :meth:`predict_volume` (adapters with ``volume=True``; a
        (D, H, W) :class:`RawImage` for adapters declaring ``input="raw"``)."""
        return volume

    def predict_volume(self, state: Any, prompts: Sequence[VolumePrompt]) -> Prediction:
        """Masks (N, D, H, W) for the targets of ``prompts``, propagating through the volume.

        Only adapters with ``Capabilities(volume=True)`` implement it; the harness runs every other
        adapter on volumes slice by slice."""
        raise NotImplementedError(f"{type(self).__name__} does not propagate through volumes (volume=False)")

    def network_pass(self) -> NetworkPass | None:
        """For the model card (``segbench cards``), after ``load``: None, the default, counts ``encode`` and one
        ``predict`` of one target on the card's sample. An adapter whose cost per target is a number of passes
        of one network that depends on the data (nnInteractive's session: AutoZoom and its refinement patches)
        returns that network and one pass's input instead, and its figures are per pass."""
        return None
