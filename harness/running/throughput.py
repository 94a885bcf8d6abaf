"""``segbench throughput``: images and prompts per second under batching, on fixed inputs.

For each adapter, batch size b and prompts per image p: encode b phantom images in one
``encode_batch`` call, then decode p box prompts per image in one ``predict`` call each. One untimed
warm-up per configuration, then the median of ``repeats`` timed repetitions (CUDA-synchronised);
peak memory is reset before each configuration.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import numpy as np

from segbench import plugins
from segbench.data.readers.phantom import phantom
from segbench.interface import Adapter, Precision, Prompt
from segbench.measuring.cost import peak_memory, timed
from segbench.protocols.prompts import bounding_box, jitter_box, target_rng
from segbench.running.plan import setup_adapter


@dataclass(frozen=True)
class ThroughputRow:
    adapter: str
    device: str
    precision: str
    batch: int
    prompts: int
    encode_ms_per_image: float
    decode_ms_per_prompt: float
    images_per_s: float  # encode + all prompts of each image
    prompts_per_s: float  # decode alone
    peak_mem_mb: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _inputs(batch: int, prompts: int) -> tuple[list[np.ndarray], list[list[Prompt]]]:
    images, boxes = [], []
    for index in range(batch):
        image, masks = phantom(seed=1, index=index)
        images.append(image)
        rng = target_rng(1, "throughput", index)
        tight = bounding_box(masks["organ"])
        boxes.append([Prompt(box=jitter_box(tight, 5, image.shape[:2], rng)) for _ in range(prompts)])
    return images, boxes


def _measure_once(
    adapter: Adapter, device: str, images: list[np.ndarray], prompts: list[list[Prompt]]
) -> tuple[float, float]:
    states, encode_ms = timed(device, adapter.encode_batch, images)
    decode_ms = sum(
        timed(device, adapter.predict, state, image_prompts)[1]
        for state, image_prompts in zip(states, prompts, strict=True)
    )
    return encode_ms, decode_ms


def measure(
    adapter_name: str,
    device: str,
    weights: str,
    batches: list[int],
    prompts: list[int],
    repeats: int = 3,
    precision: Precision = "fp32",
) -> list[ThroughputRow]:
    setup = setup_adapter(adapter_name, weights, device, precision, 0, {})
    adapter: Adapter = plugins.adapter_class(adapter_name)()
    adapter.load(setup.options)
    if not adapter.meta.capabilities.box:
        raise ValueError(f"{adapter_name} takes no box prompts; throughput is measured with boxes")
    rows = []
    for batch in batches:
        for count in prompts:
            images, boxes = _inputs(batch, count)
            _measure_once(adapter, device, images, boxes)  # warm-up for this shape
            with peak_memory(device) as peak:
                samples = [_measure_once(adapter, device, images, boxes) for _ in range(repeats)]
            encode_ms = statistics.median(s[0] for s in samples)
            decode_ms = statistics.median(s[1] for s in samples)
            rows.append(
                ThroughputRow(
                    adapter_name,
                    device,
                    precision,
                    batch,
                    count,
                    encode_ms / batch,
                    decode_ms / (batch * count),
                    images_per_s=1000 * batch / (encode_ms + decode_ms),
                    prompts_per_s=1000 * batch * count / decode_ms,
                    peak_mem_mb=peak.device_mb,
                )
            )
    return rows
