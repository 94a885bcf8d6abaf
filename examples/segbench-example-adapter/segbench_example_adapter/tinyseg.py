"""``tinyseg``: a small torch model with a checkpoint, the worked example of docs/adapters.md.

What it shows, beside the ``clicks`` adapter of this package:

* a checkpoint declared with :class:`segbench.interface.CheckpointSpec` (name, file name, sha256, size)
  and bundled inside the package (``bundled=(package, resource)``), so that ``segbench adapters``
  reports it present and segbench verifies its sha256 before every run;
* the weights read without executing anything from the file (a JSON text of numbers, read by
  :func:`segbench_example_adapter.tinyseg_net.read_weights`; a ``.pt`` file would be read with
  segbench's ``read_state_dict``, i.e. ``torch.load(weights_only=True)``) and applied strictly with
  segbench's ``apply_state_dict`` (a missing, extra or mis-shaped key is an error);
* ``random_weights`` (``segbench run --weights random``, ``segbench check-adapter``): the same
  architecture, seeded, no file needed;
* torch imported only in ``load`` (model code in ``tinyseg_net``, named in ``code_modules``), devices
  and precision from :class:`segbench.interface.LoadOptions`;
* ``encode_batch``: images of one size encoded in one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segbench.interface import (
    Adapter,
    AdapterMeta,
    Capabilities,
    CheckpointSpec,
    LoadOptions,
    Prediction,
    Prompt,
    Support,
)

# Written by make_weights.py (the same bytes on every run) and shipped in the package; a lab that publishes
# its file on the web gives its URL instead (then `segbench weights fetch tinyseg-v1` downloads and checks it).
TINYSEG_V1 = CheckpointSpec(
    name="tinyseg-v1",
    filename="tinyseg-v1.json",
    url="",
    sha256="6071fb9e0bded1e12ddc5668a5d139bf6251b919de2ed76bcc06edd658860600",
    size=628,
    bundled=("segbench_example_adapter", "weights/tinyseg-v1.json"),
    manual_download=True,  # nowhere to download it from: it comes with the package
)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class Encoded:
    """One image's encoder output (1, 2, H, W) and its grey levels (H, W) in [0, 1]."""

    features: Any  # torch.Tensor
    grey: np.ndarray


class TinySeg(Adapter):
    meta = AdapterMeta(
        name="tinyseg",
        family="example",
        description="Two-layer convolutional net from a box (example adapter with a bundled checkpoint)",
        capabilities=Capabilities(box=True),
        version="1",
        license="Apache-2.0",
        checkpoint=TINYSEG_V1,
        preprocessing="grey = mean of RGB / 255 at the image's own size",
    )
    code_modules = ("segbench_example_adapter.tinyseg_net",)

    def load(self, options: LoadOptions) -> None:
        import torch

        from segbench.weights.checkpoints import apply_state_dict
        from segbench_example_adapter.tinyseg_net import TinySegNet, read_weights

        torch.manual_seed(options.seed)  # random weights are the same on every run
        net = TinySegNet()
        if not options.random_weights:
            assert options.checkpoint is not None  # segbench resolved and verified it
            apply_state_dict(net, read_weights(options.checkpoint), options.checkpoint)
        self.torch = torch
        self.dtype = getattr(torch, DTYPES[options.precision])
        self.device = torch.device(options.device)
        self.net = net.to(self.device, self.dtype).eval()

    def _grey(self, image: np.ndarray) -> np.ndarray:
        return image.astype(np.float32).mean(axis=2) / 255.0

    def encode(self, image: np.ndarray) -> Encoded:
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[Encoded]:
        """One forward pass per group of images of the same size."""
        greys = [self._grey(image) for image in images]
        out: list[Encoded | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, grey in enumerate(greys):
            by_shape.setdefault(grey.shape, []).append(index)
        with self.torch.inference_mode():
            for indices in by_shape.values():
                batch = self.torch.from_numpy(np.stack([greys[i] for i in indices])[:, None])
                features = self.net.encode(batch.to(self.device, self.dtype))
                for row, index in enumerate(indices):
                    out[index] = Encoded(features[row : row + 1], greys[index])
        return [encoded for encoded in out if encoded is not None]

    def predict(
        self, state: Encoded, prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        if not prompts or any(prompt.box is None for prompt in prompts):
            raise ValueError("tinyseg needs a box for every target")
        height, width = state.grey.shape
        boxes = np.zeros((len(prompts), 1, height, width), dtype=np.float32)
        levels = np.zeros(len(prompts), dtype=np.float32)
        for index, prompt in enumerate(prompts):
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)  # type: ignore[union-attr]
            inside = (slice(max(y0, 0), y1 + 1), slice(max(x0, 0), x1 + 1))
            boxes[index, 0][inside] = 1.0
            levels[index] = state.grey[inside].mean() if boxes[index, 0].any() else 0.0
        torch = self.torch
        with torch.inference_mode():
            logits = self.net.decode(
                state.features,
                torch.from_numpy(boxes).to(self.device, self.dtype),
                torch.from_numpy(levels).to(self.device, self.dtype),
            )
            probabilities = torch.sigmoid(logits.float()).cpu().numpy()
        return Prediction(probabilities > 0.5, probabilities=probabilities)
