"""What every SAM-architecture adapter shares: build, load, one encoder pass, batched prompt decoding.

A subclass says how its model is built and how its authors prepare an image (``preprocess``) and turn
low-resolution logits into masks (``postprocess``); this module does the rest the same way for all:

* ``encode`` runs the image encoder once per image; every prompt of every step reuses the embedding;
* ``predict`` decodes all prompts of a step in as few decoder calls as possible: prompts are grouped by
  their structure (box or not, number of points, previous logits or not), and each group is one batch.
  Prompts of one structure batch exactly, with no padding tokens that would change SAM's attention;
* a single click alone is ambiguous: SAM's recommendation is to ask for three masks and keep the one
  with the highest predicted IoU (``multimask``); a subclass may choose otherwise;
* the low-resolution logits of each chosen mask are returned as feedback and come back, at the next
  iterative step, as the mask prompt (``Prompt.previous``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from segbench.interface import Adapter, LoadOptions, Prediction, Prompt, Support
from segbench.lazy import lazy_import
from segbench.weights.torch_models import inference, prepare, seeded

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


@dataclass(frozen=True)
class PromptShape:
    """What a prompt is made of; prompts of one shape are decoded in one batch."""

    box: bool
    points: int
    mask: bool

    @classmethod
    def of(cls, prompt: Prompt) -> PromptShape:
        points = 0 if prompt.points is None else len(prompt.points)
        return cls(prompt.box is not None, points, prompt.previous is not None)


class SamArchitecture(Adapter):
    """Base of adapters whose model is segment_anything's ``Sam`` (or a module with its layout)."""

    strip_prefixes: ClassVar[tuple[str, ...]] = ()  # key prefixes of the official file to remove
    skip_objects: ClassVar[bool] = False  # the official file pickles objects next to the weights

    model: torch.nn.Module
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

    def mask_prompt(self, previous: torch.Tensor) -> torch.Tensor:
        """The mask prompt made from this adapter's own previous logits (SAM takes the logits as they are)."""
        return previous

    def multimask(self, shape: PromptShape) -> bool:
        """SAM's recommendation: three candidates for a lone click, the best by predicted IoU."""
        return not shape.box and shape.points == 1 and not shape.mask

    def load(self, options: LoadOptions) -> None:
        self.options = options
        with seeded(options.seed):
            model = self.build()
        self.model = prepare(model, options, self.strip_prefixes, skip_objects=self.skip_objects)

    def encode(self, image: np.ndarray) -> EncodedImage:
        with inference(self.options):
            tensor, frame = self.preprocess(image)
            embedding = self.model.image_encoder(tensor)
        return EncodedImage(embedding, frame)

    def predict(
        self, state: EncodedImage, prompts: Sequence[Prompt] | None = None, support: Support | None = None
    ) -> Prediction:
        if not prompts:
            raise ValueError(f"{self.meta.name} needs prompts")
        height, width = state.frame.original
        masks = np.zeros((len(prompts), height, width), dtype=bool)
        scores = np.zeros(len(prompts), dtype=np.float32)
        feedback: list[torch.Tensor | None] = [None] * len(prompts)
        groups: dict[PromptShape, list[int]] = defaultdict(list)
        for index, prompt in enumerate(prompts):
            groups[self._checked_shape(prompt)].append(index)
        with inference(self.options):
            for shape, indices in groups.items():
                logits, iou = self._decode(state, shape, [prompts[i] for i in indices])
                masks[indices] = self.postprocess(logits, state.frame).cpu().numpy()
                scores[indices] = iou.cpu().numpy()
                for position, index in enumerate(indices):
                    feedback[index] = logits[position]
        return Prediction(masks, scores, feedback)

    def _checked_shape(self, prompt: Prompt) -> PromptShape:
        shape = PromptShape.of(prompt)
        capabilities = self.meta.capabilities
        if shape.points and not capabilities.point:
            raise ValueError(f"{self.meta.name} takes box prompts only, got points")
        if shape.mask and not capabilities.mask:
            raise ValueError(f"{self.meta.name} takes no mask prompt, got previous logits")
        if not shape.box and not shape.points:
            raise ValueError(f"{self.meta.name}: a prompt needs a box or points")
        return shape

    def _decode(
        self, state: EncodedImage, shape: PromptShape, prompts: list[Prompt]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder call for prompts of one shape (inside :func:`inference`): the chosen logits
        ``(N, 1, s, s)`` and their predicted IoU."""
        device = self.options.device
        frame = state.frame
        points = boxes = mask_input = None
        if shape.points:
            coords = np.stack([frame.to_input(p.points) for p in prompts])  # type: ignore[arg-type]
            labels = np.stack([np.asarray(p.point_labels) for p in prompts])
            points = (
                torch.as_tensor(coords, dtype=torch.float, device=device),
                torch.as_tensor(labels, dtype=torch.int, device=device),
            )
        if shape.box:
            corners = np.stack([frame.to_input(np.asarray(p.box).reshape(2, 2)).reshape(4) for p in prompts])
            boxes = torch.as_tensor(corners, dtype=torch.float, device=device)
        if shape.mask:
            mask_input = self.mask_prompt(torch.stack([p.previous for p in prompts]).float())
        multimask = self.multimask(shape)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        logits, iou = self.model.mask_decoder(
            image_embeddings=state.embedding,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        logits, iou = logits.float(), iou.float()
        if multimask:
            best = iou.argmax(dim=1)
            rows = torch.arange(len(prompts), device=iou.device)
            return logits[rows, best][:, None], iou[rows, best]
        return logits, iou[:, 0]
