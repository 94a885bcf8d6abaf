"""One step loop for every protocol: a session per work unit (an image or a volume) runs any kind's steps.

A :class:`Session` holds what one unit shares among its protocols (the encoded image, or a volume's
encoder passes: :class:`~segbench.running.volume_runner.VolumeSession`). For each protocol it asks the
kind for its first :class:`~segbench.protocols.base.Ask`, then per step: ``predict`` (timed), the masks
checked once (:func:`segbench.interface.check_masks`: a bool array, one mask per query), and the kind's
refinement for the next step (an adapter that lacks a later step's prompts takes the first step alone:
:meth:`~segbench.protocols.base.ProtocolKind.steps_for`). Each step becomes a :class:`Step` record: its
masks by query and by label (a label's instances united, an ensemble's support sets averaged), and what
the adapter was given.
The records are scored in one place, by the runner (:meth:`segbench.running.runner.UnitRunner.run`).

2D, 3D and in-context protocols differ only in their kind (what is asked) and in the session (how a
batch is decoded: ``predict`` on an image, ``predict_volume`` or a slice strategy on a volume).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from segbench.data.support_sets import ensemble_masks
from segbench.interface import Adapter, Prediction, RawImage, check_masks
from segbench.measuring.cost import timed
from segbench.protocols.base import Ask, ProtocolInputs, Target
from segbench.protocols.prompts import ProtocolSpec


@dataclass
class Step:
    """One step of one protocol on one unit, as decoded (not yet scored)."""

    index: int
    decode_ms: float  # the step's predict call, without encoder passes made during it
    ask: Ask  # what the adapter was given
    masks: np.ndarray  # (queries, *shape) bool, as the adapter returned them
    by_label: dict[str, np.ndarray]  # the prediction of each label asked

    @property
    def prompts(self) -> list[Any] | None:
        return self.ask.prompts

    def instances(self, label: str) -> int:
        return sum(target.label == label for target in self.ask.targets)


@dataclass
class ProtocolRun:
    """Every step of one protocol on one unit, the encoder time charged to the protocol (NaN for
    volume adapters, which encode while they propagate), and the labels its kind could not ask, with
    why (:attr:`Ask.failed`: a ``given`` kind's label without a given box)."""

    protocol: ProtocolSpec
    steps: list[Step]
    encode_ms: float
    failed: Mapping[str, str] = field(default_factory=dict)

    def for_scoring(self) -> ProtocolRun:
        """This run without what scoring never reads, to send to another process: each step's masks by
        query (its masks by label stay), the targets' truth masks (the scorer has the case) and the support
        sets' images. What the rows say of an ask (``given``, ``cost``, instances, ``size``) is kept."""
        empty = np.zeros((0,), dtype=bool)
        steps = [
            replace(
                step,
                masks=empty,
                ask=replace(
                    step.ask,
                    targets=[Target(target.label, target.instance, empty) for target in step.ask.targets],
                    supports=None,
                ),
            )
            for step in self.steps
        ]
        return replace(self, steps=steps)


class Session:
    """The state of one unit shared by all its protocols; subclasses say how a batch is decoded."""

    def __init__(self, adapter: Adapter, shape: tuple[int, ...], device: str):
        self.adapter = adapter
        self.shape = shape
        self.device = device

    def decoder(self, protocol: ProtocolSpec) -> Callable[[Ask], Prediction]:
        """The function that decodes one ask of ``protocol`` (a new one per protocol run)."""
        raise NotImplementedError

    def encoder_ms_spent(self) -> float:
        """Encoder time spent so far inside decoding (a volume's slices encoded on first use)."""
        return 0.0

    def encode_ms(self) -> float:
        """The encoder time charged to the protocol run that just ended."""
        raise NotImplementedError

    def run(self, protocol: ProtocolSpec, inputs: ProtocolInputs) -> ProtocolRun:
        """Every step of ``protocol`` on this unit: predict, check the masks, refine."""
        kind = protocol.handler
        ask = kind.first(inputs)
        if not ask.targets:
            return ProtocolRun(protocol, [], math.nan, ask.failed)
        decode = self.decoder(protocol)
        steps: list[Step] = []
        taken = kind.steps_for(frozenset(self.adapter.meta.capabilities.names()))
        for index in range(taken):
            spent = self.encoder_ms_spent()
            prediction, elapsed = timed(self.device, decode, ask)
            masks = check_masks(prediction.masks, (ask.count, *self.shape))
            by_label = _union_by_label(ask, ensemble_masks(prediction, ask.members))
            steps.append(Step(index, elapsed - (self.encoder_ms_spent() - spent), ask, masks, by_label))
            if index + 1 < taken:
                ask = kind.refine(ask, masks, prediction.feedback or [None] * ask.count)
        return ProtocolRun(protocol, steps, self.encode_ms(), steps[0].ask.failed)


class ImageSession(Session):
    """A 2D image, encoded once (``encode_ms``) for every protocol."""

    def __init__(self, adapter: Adapter, image: np.ndarray | RawImage, device: str):
        super().__init__(adapter, tuple(image.shape[:2]), device)
        self.state, self.encoded_ms = timed(device, adapter.encode, image)

    def decoder(self, protocol: ProtocolSpec) -> Callable[[Ask], Prediction]:
        def decode(ask: Ask) -> Prediction:
            if ask.supports is None:
                return self.adapter.predict(self.state, ask.prompts)
            return self.adapter.predict(self.state, ask.prompts, ask.supports)

        return decode

    def encode_ms(self) -> float:
        return self.encoded_ms


def _union_by_label(ask: Ask, masks: np.ndarray) -> dict[str, np.ndarray]:
    """The prediction of each label: the union of its targets' masks (one per target)."""
    out: dict[str, np.ndarray] = {}
    for target, mask in zip(ask.targets, masks, strict=True):
        if target.label in out:  # a further instance: united in place (the first one is a copy)
            np.logical_or(out[target.label], mask, out=out[target.label])
        else:
            out[target.label] = mask.astype(bool, copy=True)
    return out
