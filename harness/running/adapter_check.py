"""The adapter contract, checked on one adapter: what ``segbench check-adapter NAME`` runs and what
tests/test_adapter_contract.py runs over every registered adapter (as timm's registry-wide model tests
do for its models).

The checks drive the adapter through :mod:`segbench.interface` alone, on a phantom image and volume
(:mod:`segbench.data.readers.phantom`), with random weights unless told otherwise, so that they need no
data and no download:

* ``meta``: an :class:`AdapterMeta` with a name, a version and :class:`Capabilities`;
* ``load`` and ``encode`` on an (H, W, 3) uint8 image that is not square;
* one check per declared prompt capability (``box``, ``point``, ``iterative``, ``support_set``): a batch
  of two targets gives a numpy bool ``(2, H, W)`` mask array (:func:`segbench.interface.check_masks`,
  the harness's own check), feedback that is empty or one per target and, when iterative, a second
  step fed back its own feedback and a correction click;
* ``drawn`` (``scribble=True`` or ``lasso=True``): a batch of two targets each told by an include drawing of
  that kind (drawn by the protocol kinds' own rule, :mod:`segbench.protocols.drawn`) gives such masks;
* ``encode_batch``: two images encoded together equal each encoded alone (states compared leaf by
  leaf; opaque states by the masks they decode);
* ``volume`` (``volume=True``): ``predict_volume`` gives ``(N, D, H, W)`` bool masks;
* ``refused``: every protocol that needs a capability the adapter lacks is refused by the planner's rule
  (:func:`segbench.running.plan.supported_protocols`), every protocol it can take is kept.

Each check is reported as passed, failed (with the first line of what went wrong) or skipped (with why).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from segbench import plugins
from segbench.data.readers.phantom import phantom
from segbench.interface import (
    Adapter,
    AdapterMeta,
    Capabilities,
    Prediction,
    Prompt,
    RawImage,
    Support,
    VolumePrompt,
    check_masks,
)
from segbench.protocols.drawn import lasso_prompt, scribble_prompt
from segbench.protocols.prompts import parse_protocol
from segbench.running.plan import setup_adapter, supported_protocols

# a (H, W) for the phantom image: not square, so a transposed mask fails the shape check
IMAGE_SHAPE = (150, 200)
# the checks in the order they run; ``load`` and ``encode`` first, as the others need them
CHECKS = (
    "meta", "load", "encode", "box", "point", "drawn", "iterative", "support_set", "encode_batch", "volume", "refused",
)  # fmt: skip
VOLUME_DEPTH = 3  # the key slice in the middle: propagation runs both ways
ATOL, RTOL = 1e-4, 1e-3
# protocols whose parameters change what they need, beside each kind with its defaults
VARIANTS: tuple[dict[str, Any], ...] = (
    {"kind": "slice_boxes", "every": 2},  # boxes on some slices: a model that propagates
    {"kind": "iterative", "start": "center_point"},
    {"kind": "support", "prompt": "box"},
)  # encode_batch vs encode: batched kernels may sum in another order


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        return f"{self.status.upper():4}  {self.name:<13} {self.seconds:6.1f} s  {self.detail}".rstrip()


class ContractError(AssertionError):
    """One check failed: what the adapter did against what the contract asks."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def phantom_image(index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A phantom (H, W, 3) uint8 image of :data:`IMAGE_SHAPE` and its ``organ`` and ``lesion`` masks."""
    image, labels = phantom(0, index)
    height, width = IMAGE_SHAPE
    zoom = (height / image.shape[0], width / image.shape[1])
    grey = ndimage.zoom(image[..., 0], zoom, order=1)[:height, :width]
    masks = {
        name: ndimage.zoom(mask.astype(np.uint8), zoom, order=0)[:height, :width] > 0 for name, mask in labels.items()
    }
    return np.repeat(grey[..., None], 3, axis=-1), masks


def _box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64)


def _inside(mask: np.ndarray) -> np.ndarray:
    """The pixel deepest inside ``mask``, as (x, y)."""
    y, x = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
    return np.array([float(x), float(y)])


def _outside(mask: np.ndarray) -> np.ndarray:
    return _inside(~ndimage.binary_dilation(mask, iterations=3))


class Checker:
    """The checks of one adapter class, run in order; ``load`` and ``encode`` first (the others need them)."""

    def __init__(
        self,
        cls: type[Adapter],
        weights: str = "random",
        checkpoint: Path | None = None,
        device: str = "cpu",
        only: Collection[str] | None = None,
    ):
        self.cls = cls
        self.only = only
        self.weights = weights
        self.checkpoint = checkpoint
        self.device = device
        self.adapter: Adapter | None = None
        self.image, self.labels = phantom_image(0)
        self.targets = [self.labels["organ"], self.labels["lesion"]]
        self.state: Any = None

    @property
    def capabilities(self) -> Capabilities:
        return self.cls.meta.capabilities

    def run(self) -> Iterator[CheckResult]:
        for name, check in self.checks():
            if self.only is not None and name not in self.only:
                continue
            started = time.perf_counter()
            try:
                detail = check()
                status = "skip" if detail.startswith("skipped") else "pass"
            except Exception as error:  # the adapter's own error is the finding
                status, detail = "fail", _first_line(error)
            yield CheckResult(name, status, detail, time.perf_counter() - started)
            if status == "fail" and name in ("meta", "load", "encode"):
                return  # nothing else can run

    def checks(self) -> list[tuple[str, Callable[[], str]]]:
        return [(name, getattr(self, f"check_{name}")) for name in CHECKS]

    # --- the checks: each returns a short detail, or raises ---

    def check_meta(self) -> str:
        meta = self.cls.meta
        if not isinstance(meta, AdapterMeta):
            raise ContractError(f"meta is {type(meta).__name__}, not AdapterMeta")
        if not isinstance(meta.capabilities, Capabilities):
            raise ContractError("meta.capabilities is not a Capabilities")
        if not meta.name or not isinstance(meta.version, str):
            raise ContractError("meta needs a name and a version (a string)")
        if not meta.capabilities.names():
            raise ContractError("the adapter declares no capability: no protocol can run it")
        return f"{meta.name} {meta.version}: {','.join(meta.capabilities.names())}"

    def check_load(self) -> str:
        setup = setup_adapter(
            self.cls.meta.name,
            self.weights,
            self.device,
            "fp32",
            0,
            {self.cls.meta.checkpoint.name: self.checkpoint} if self.checkpoint and self.cls.meta.checkpoint else {},
        )
        self.adapter = self.cls()
        self.adapter.load(setup.options)
        return f"weights: {setup.weights}"

    def check_encode(self) -> str:
        assert self.adapter is not None
        self.state = self.adapter.encode(self._given(self.image))
        return f"image {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}" + (" (raw)" if self.cls.meta.input == "raw" else "")

    def _given(self, image: np.ndarray, volume: bool = False) -> Any:
        """``image`` (H, W, 3), or a (D, H, W) ``volume``, as the adapter declared it takes it: as it is, or
        for a raw adapter as a grey :class:`~segbench.interface.RawImage` of 1.0 px a pixel."""
        if self.cls.meta.input == "rgb8":
            return image
        pixels = image if volume else image[..., 0]
        return RawImage(pixels, (1.0,) * pixels.ndim, "px")

    def _predict(
        self, state: Any, prompts: Sequence[Prompt] | None, support: Sequence[Support] | None = None
    ) -> Prediction:
        assert self.adapter is not None
        count = len(prompts if prompts is not None else support or ())
        prediction = self.adapter.predict(state, prompts, support)
        if not isinstance(prediction, Prediction):
            raise ContractError(f"predict returned {type(prediction).__name__}, not a Prediction")
        check_masks(prediction.masks, (count, *IMAGE_SHAPE))
        if len(prediction.feedback) not in (0, count):
            raise ContractError(f"feedback has {len(prediction.feedback)} entries for {count} targets (0 or {count})")
        if prediction.scores is not None and len(prediction.scores) != count:
            raise ContractError(f"scores has {len(prediction.scores)} entries for {count} targets")
        if prediction.probabilities is not None and np.shape(prediction.probabilities) != (count, *IMAGE_SHAPE):
            raise ContractError(f"probabilities have shape {np.shape(prediction.probabilities)}")
        return prediction

    def _skip_unless(self, capability: str) -> str | None:
        return None if getattr(self.capabilities, capability) else f"skipped: not declared ({capability}=False)"

    def check_box(self) -> str:
        if skip := self._skip_unless("box"):
            return skip
        self._predict(self.state, [Prompt(box=_box(mask)) for mask in self.targets])
        return "2 boxes"

    def _points(self, mask: np.ndarray) -> Prompt:
        points = np.stack([_inside(mask), _outside(mask)])
        return Prompt(points=points, point_labels=np.array([1, 0]))

    def check_point(self) -> str:
        if skip := self._skip_unless("point"):
            return skip
        self._predict(self.state, [self._points(mask) for mask in self.targets])
        return "2 targets, a positive and a negative click each"

    def check_drawn(self) -> str:
        kinds = [kind for kind in ("scribble", "lasso") if getattr(self.capabilities, kind)]
        if not kinds:
            return "skipped: not declared (scribble=False, lasso=False)"
        draw = {"scribble": lambda mask: scribble_prompt(mask, 1), "lasso": lasso_prompt}
        for kind in kinds:
            self._predict(self.state, [draw[kind](mask) for mask in self.targets])
        return ", ".join(f"2 targets by a {kind}" for kind in kinds)

    def check_iterative(self) -> str:
        if skip := self._skip_unless("iterative"):
            return skip
        start = self.capabilities.box
        first = [Prompt(box=_box(m)) if start else self._points(m) for m in self.targets]
        prediction = self._predict(self.state, first)
        feedback = prediction.feedback or [None] * len(first)
        second = []
        for prompt, mask, previous in zip(first, self.targets, feedback, strict=True):
            click = np.array([_inside(mask)])
            points = click if prompt.points is None else np.concatenate([prompt.points, click])
            labels = (
                np.ones(len(points), dtype=int) if prompt.point_labels is None else np.append(prompt.point_labels, 1)
            )
            second.append(Prompt(box=prompt.box, points=points, point_labels=labels, previous=previous))
        self._predict(self.state, second)
        kept = "with" if prediction.feedback else "without"
        return f"2 steps, {kept} feedback"

    def check_support_set(self) -> str:
        if skip := self._skip_unless("support_set"):
            return skip
        examples = [phantom_image(index) for index in (1, 2)]
        support = [
            Support([self._given(image) for image, _ in examples], [masks[name] for _, masks in examples])
            for name in ("organ", "lesion")
        ]
        self._predict(self.state, None, support)
        return "2 targets, 2 examples each"

    def check_encode_batch(self) -> str:
        """The image encoded with another in one batch equals it encoded alone, and the other image's
        state differs (so the batch keeps its order); two encodes, the single one is ``encode``'s."""
        assert self.adapter is not None
        if type(self.adapter).encode_batch is Adapter.encode_batch:
            return "skipped: the default (one image at a time) is not overridden"
        other, _ = phantom_image(1)
        batched = self.adapter.encode_batch([self._given(self.image), self._given(other)])
        if len(batched) != 2:
            raise ContractError(f"encode_batch gave {len(batched)} states for 2 images")
        compared = _same(self.state, batched[0])
        if compared is False:
            raise ContractError("the first image's state from encode_batch differs from encode's")
        if compared is None:  # opaque states: compare what they decode
            if not self.capabilities.box:
                return "skipped: opaque states and no box to decode them with"
            prompts = [Prompt(box=_box(mask)) for mask in self.targets]
            if not np.array_equal(self._predict(self.state, prompts).masks, self._predict(batched[0], prompts).masks):
                raise ContractError("masks decoded from encode_batch's state differ from encode's")
            return "2 images, decoding the same masks as encode's state"
        if _same(batched[0], batched[1]) is True:
            raise ContractError("encode_batch gave the same state for two different images")
        return "2 images, the first equal to encode's, the second its own"

    def check_volume(self) -> str:
        if skip := self._skip_unless("volume"):
            return skip
        assert self.adapter is not None
        shift = 3
        slices = [np.roll(self.image[..., 0], z * shift, axis=1) for z in range(VOLUME_DEPTH)]
        volume = np.stack(slices)
        key = VOLUME_DEPTH // 2
        prompts = [
            VolumePrompt({key: Prompt(box=_box(np.roll(mask, key * shift, axis=1)))}, key, (0, VOLUME_DEPTH - 1))
            for mask in self.targets
        ]
        state = self.adapter.encode_volume(self._given(volume, volume=True))
        prediction = self.adapter.predict_volume(state, prompts)
        check_masks(prediction.masks, (len(prompts), VOLUME_DEPTH, *IMAGE_SHAPE))
        if len(prediction.feedback) not in (0, len(prompts)):
            raise ContractError(f"feedback has {len(prediction.feedback)} entries for {len(prompts)} targets")
        return f"2 targets through {VOLUME_DEPTH} slices from a key-slice box"

    def check_refused(self) -> str:
        declared = set(self.capabilities.names())
        every = [parse_protocol(kind) for kind in plugins.protocols()] + [parse_protocol(value) for value in VARIANTS]
        kept = set(supported_protocols(every, self.capabilities))
        wrong = [p.name for p in every if (p in kept) != (p.handler.first_requires <= declared)]
        if wrong:
            raise ContractError(f"the planner's choice disagrees with the capabilities for {wrong}")
        refused = sorted(p.name for p in every if p not in kept)
        return f"refused: {', '.join(refused) or 'none'}"


def _leaves(value: Any) -> Iterator[Any]:
    """The array-like leaves of a state made of dicts, sequences and dataclasses."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            yield from _leaves(value[key])
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif is_dataclass(value) and not isinstance(value, type):
        for field in fields(value):
            yield from _leaves(getattr(value, field.name))
    else:
        yield value


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        return np.asarray(value.detach().float().cpu().numpy())
    return None


def _same(one: Any, other: Any) -> bool | None:
    """Whether two encoder states hold the same arrays (within float tolerance); None when they hold no
    array to compare (an object the adapter keeps opaque)."""
    first, second = list(_leaves(one)), list(_leaves(other))
    if len(first) != len(second):
        return False
    compared = False
    for a, b in zip(first, second, strict=True):
        left, right = _as_array(a), _as_array(b)
        if left is None or right is None:
            if (left is None) != (right is None) or (isinstance(a, int | float | str) and a != b):
                return False
            continue
        if left.shape != right.shape or not np.allclose(left, right, atol=ATOL, rtol=RTOL):
            return False
        compared = True
    return True if compared else None


def check_adapter(
    cls: type[Adapter],
    weights: str = "random",
    checkpoint: Path | None = None,
    device: str = "cpu",
    only: Collection[str] | None = None,
) -> list[CheckResult]:
    """The checks of the contract on ``cls`` (all, or those named in ``only``; see the module docstring)."""
    return list(Checker(cls, weights, checkpoint, device, only).run())
