"""UniverSeg (JJGO/UniverSeg): in-context segmentation told by a support set, no prompts.

UniverSeg is not on PyPI; the network is segbench's own implementation of the published architecture
(:mod:`segbench.adapters.universeg_net`), with the parameter names of the released
``universeg_v1_nf64_ss64_STA.pt``, which loads strictly through the checkpoint registry.

Preprocessing follows the official example (``example_data/wbc.py``): the RGB image is resized to
128x128 with Pillow's bilinear filter, converted to grey with Pillow's ``"L"`` (ITU-R 601 luma) and
divided by 255, for the query and every support image alike; support masks are resized with nearest
neighbour to 128x128 as 0/1 floats. The logits go through a sigmoid; the probabilities are resized
bilinearly to the query's size and thresholded at 0.5. Tasks defined at 128x128 (``[data] resize``)
need no resizing at all.

Memory grows with the support set (about 2 GB of activations for 64 examples at 128x128 on a CPU), so
a batch of targets is run in chunks of at most ``MAX_SUPPORT_ITEMS`` support examples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from PIL import Image

from segbench.data.readers.decode import resize_nearest
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
)
from segbench.lazy import lazy_import
from segbench.weights.torch_models import inference, prepare, seeded

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

INPUT_SIZE = 128
MAX_SUPPORT_ITEMS = 64

# The authors publish no sha256 (nor size) for the release asset; see CheckpointSpec on unpinned files.
CHECKPOINT = CheckpointSpec(
    name="universeg",
    filename="universeg_v1_nf64_ss64_STA.pt",
    url="https://github.com/JJGO/UniverSeg/releases/download/weights/universeg_v1_nf64_ss64_STA.pt",
    sha256="",
    size=0,
)


def grey_input(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (128, 128) float32 in [0, 1]: bilinear resize, then Pillow luma, / 255."""
    resized = Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized.convert("L"), dtype=np.float32) / 255.0


def label_input(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool → (128, 128) float32 0/1, nearest neighbour."""
    return resize_nearest(mask.astype(bool), (INPUT_SIZE, INPUT_SIZE)).astype(np.float32)


@dataclass
class EncodedQuery:
    query: torch.Tensor  # (1, 128, 128) on the device
    original: tuple[int, int]


class UniverSeg(Adapter):
    meta = AdapterMeta(
        name="universeg",
        family="universeg",
        description="UniverSeg: in-context segmentation from a support set of labelled examples (ICCV 2023)",
        capabilities=Capabilities(support_set=True),
        version="1",
        license="Apache-2.0 (code); weights OpenRAIL++-M, research use only",
        input_size=INPUT_SIZE,
        checkpoint=CHECKPOINT,
        preprocessing="RGB bilinear to 128x128 (Pillow), luma grey, /255; support masks nearest to 128; "
        "sigmoid, bilinear back to the query size, > 0.5",
        reference="https://github.com/JJGO/UniverSeg",
        card=ModelCard(
            paper="https://arxiv.org/abs/2304.06131",
            code="https://github.com/JJGO/UniverSeg",
            trained_on=("megamedical",),
            trained_on_source="Butoi et al. 2023 (ICCV; arXiv:2304.06131): trained from scratch on MegaMedical, 53 "
            "open-access medical segmentation sets (the paper's dataset table), some held out for evaluation",
            notes="MegaMedical's 53 sets and the paper's held-out split are not mapped to segbench's ids",
        ),
    )
    code_modules: ClassVar[tuple[str, ...]] = ("segbench.adapters.universeg_net",)

    def load(self, options: LoadOptions) -> None:
        from segbench.adapters.universeg_net import UniverSegNet

        self.options = options
        with seeded(options.seed):
            self.net = prepare(UniverSegNet(), options)

    def encode(self, image: np.ndarray) -> EncodedQuery:
        query = torch.from_numpy(grey_input(image))[None].to(self.options.device)
        return EncodedQuery(query, image.shape[:2])

    def predict(
        self, state: EncodedQuery, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        if prompts:
            raise ValueError("universeg takes no prompts, only support sets")
        if not support or any(len(s) == 0 for s in support):
            raise ValueError("universeg needs a non-empty support set per target")
        probabilities = np.empty((len(support), *state.original), dtype=np.float32)
        by_size: dict[int, list[int]] = defaultdict(list)
        for index, examples in enumerate(support):
            by_size[len(examples)].append(index)
        for size, indices in by_size.items():
            chunk = max(1, MAX_SUPPORT_ITEMS // size)
            for start in range(0, len(indices), chunk):
                part = indices[start : start + chunk]
                probabilities[part] = self._probabilities(state, [support[i] for i in part])
        return Prediction(probabilities > 0.5, None, [None] * len(support), probabilities)

    def _probabilities(self, state: EncodedQuery, supports: list[Support]) -> np.ndarray:
        """Sigmoid outputs for targets that share a support-set size, at the query's original size."""
        images = np.stack([[grey_input(image) for image in s.images] for s in supports])
        labels = np.stack([[label_input(mask) for mask in s.masks] for s in supports])
        device = self.options.device
        support_images = torch.from_numpy(images)[:, :, None].to(device)
        support_labels = torch.from_numpy(labels)[:, :, None].to(device)
        query = state.query[None].expand(len(supports), -1, -1, -1)
        with inference(self.options):
            probabilities = torch.sigmoid(self.net(query, support_images, support_labels).float())
            if state.original != (INPUT_SIZE, INPUT_SIZE):
                probabilities = F.interpolate(probabilities, size=state.original, mode="bilinear", align_corners=False)
        return probabilities[:, 0].cpu().numpy()


@hookimpl
def segbench_register_adapters(register: Callable[[type], None]) -> None:
    register(UniverSeg)
