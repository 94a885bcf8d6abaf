"""What every SAM-architecture adapter shares: build, load, one encoder pass, batched prompt decoding.

A subclass says how its model is built and how its authors prepare an image (``preprocess``) and turn
low-resolution logits into masks (``postprocess``); this module does the rest the same way for all:

* ``encode`` runs the image encoder once per image; every prompt of every step reuses the embedding
  (``encoder_batches``: a batch of images in one encoder pass, for small encoders such as LiteMedSAM's);
* ``predict`` decodes all prompts of a step through the shared core (:mod:`segbench.adapters.sam_decoding`):
  one decoder call per prompt shape, a lone click answered by the best of three masks (``multimask``; a
  subclass may choose otherwise), the chosen low-resolution logits returned as feedback and taken back, at
  the next iterative step, as the mask prompt (``mask_prompt``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from segbench.adapters.sam_decoding import (
    GroupAnswer,
    PromptShape,
    decode_by_shape,
    pick_best,
    stacked_boxes,
    stacked_points,
)
from segbench.interface import Adapter, LoadOptions, Prediction, Prompt, Support
from segbench.lazy import lazy_import
from segbench.weights.torch_models import inference, prepare, seeded

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@dataclass(frozen=True)
class Frame:
    """Where the original image lies inside the model's square input."""

    original: tuple[int, int]  # (H, W) of the image
    resized: tuple[int, int]  # (h, w) of the image content inside the input
    offset: tuple[int, int] = (0, 0)  # (top, left) padding in front of the content

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Pixel coordinates ``(..., 2)`` as (x, y) of the original image → coordinates of the input
        (the same arithmetic as SAM's ``ResizeLongestSide.apply_coords``)."""
        out = np.asarray(xy, dtype=np.float64).copy()
        out[..., 0] = out[..., 0] * (self.resized[1] / self.original[1]) + self.offset[1]
        out[..., 1] = out[..., 1] * (self.resized[0] / self.original[0]) + self.offset[0]
        return out


@dataclass
class EncodedImage:
    embedding: torch.Tensor
    frame: Frame


class SamArchitecture(Adapter):
    """Base of adapters whose model is segment_anything's ``Sam`` (or a module with its layout)."""

    strip_prefixes: ClassVar[tuple[str, ...]] = ()  # key prefixes of the official file to remove
    skip_objects: ClassVar[bool] = False  # the official file pickles objects next to the weights
    encoder_batches: ClassVar[bool] = False  # encode_batch runs the encoder once over all images
    code_modules: ClassVar[tuple[str, ...]] = ("segbench.adapters.sam_decoding",)

    model: Any  # segment_anything's Sam, or a module with its parts (image_encoder, prompt_encoder, mask_decoder)
    options: LoadOptions

    @abstractmethod
    def build(self) -> torch.nn.Module:
        """The architecture, with (seeded) random weights."""

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        """(H, W, 3) uint8 → the encoder's input ``(1, 3, S, S)`` on the device, and its frame."""

    @abstractmethod
    def postprocess(self, logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        """Low-resolution logits ``(N, 1, s, s)`` → bool masks ``(N, H, W)`` of the original image."""

    def boxes_to_input(self, boxes: np.ndarray, frame: Frame) -> np.ndarray:
        """Boxes ``(N, 4)`` of the original image → the model input's (SAM maps them as corner points)."""
        return frame.to_input(boxes.reshape(-1, 2, 2)).reshape(-1, 4)

    def mask_prompt(self, previous: torch.Tensor) -> torch.Tensor:
        """The mask prompt made from this adapter's own previous logits (SAM takes the logits as they are)."""
        return previous

    def multimask(self, shape: PromptShape) -> bool:
        """SAM's recommendation: three candidates for a lone click, the best by predicted IoU."""
        return shape.lone_click

    def load(self, options: LoadOptions) -> None:
        self.options = options
        with seeded(options.seed):
            model = self.build()
        self.model = prepare(model, options, self.strip_prefixes, skip_objects=self.skip_objects)

    def preprocess_batch(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Frame]]:
        """Several images as one encoder input ``(B, 3, S, S)`` and their frames: each preprocessed alone,
        concatenated (one image: its input as it is, so its memory layout, and the encoder's numerics, stay)."""
        prepared = [self.preprocess(image) for image in images]
        frames = [frame for _, frame in prepared]
        if len(prepared) == 1:
            return prepared[0][0], frames
        return torch.cat([tensor for tensor, _ in prepared]), frames

    def _encode(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        with inference(self.options):
            batch, frames = self.preprocess_batch(images)
            embeddings = self.model.image_encoder(batch)
        return [EncodedImage(embeddings[i : i + 1], frame) for i, frame in enumerate(frames)]

    def encode(self, image: np.ndarray) -> EncodedImage:
        return self._encode([image])[0]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        if self.encoder_batches:
            return self._encode(images)
        return [self.encode(image) for image in images]

    def predict(
        self, state: EncodedImage, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        def decode(shape: PromptShape, group: list[Prompt]) -> GroupAnswer:
            logits, iou = self._decode(state, shape, group)
            masks = self.postprocess(logits, state.frame).cpu().numpy()
            return GroupAnswer(masks, iou.cpu().numpy(), list(logits))

        with inference(self.options):
            return decode_by_shape(self.meta, prompts, state.frame.original, decode)

    def _decode(
        self, state: EncodedImage, shape: PromptShape, prompts: list[Prompt]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder call for prompts of one shape (inside :func:`inference`): the chosen logits
        ``(N, 1, s, s)`` and their predicted IoU."""
        device = self.options.device
        frame = state.frame
        points = boxes = mask_input = None
        if shape.points:
            coords, labels = stacked_points(prompts)
            points = (
                torch.as_tensor(frame.to_input(coords), dtype=torch.float, device=device),
                torch.as_tensor(labels, dtype=torch.int, device=device),
            )
        if shape.box:
            corners = self.boxes_to_input(stacked_boxes(prompts), frame)
            boxes = torch.as_tensor(corners, dtype=torch.float, device=device)
        if shape.mask:
            mask_input = self.mask_prompt(torch.stack([p.previous for p in prompts]).float())
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        logits, iou = self.model.mask_decoder(
            image_embeddings=state.embedding,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask(shape),
        )
        best_iou, best_logits = pick_best(iou.float(), logits.float())
        return best_logits[:, None], best_iou
