"""Encode and decode of every installed adapter on a fixed input (a phantom scan, 4 box prompts).

Adapters run with their checkpoint where it is present and with random weights otherwise (the same
architecture, so the same cost). Select adapters with SEGBENCH_BENCH_ADAPTERS=a,b (default: all).
Run: python -m pytest tests/benchmarks/test_bench_adapters.py --benchmark-only
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from segbench import plugins
from segbench.data.readers.phantom import phantom
from segbench.interface import Adapter, Prompt
from segbench.protocols.prompts import bounding_box, jitter_box, target_rng
from segbench.running.plan import setup_adapter
from segbench.weights import checkpoints

DEVICE = os.environ.get("SEGBENCH_BENCH_DEVICE", "cpu")
SELECTED = [n for n in os.environ.get("SEGBENCH_BENCH_ADAPTERS", "").split(",") if n] or list(plugins.adapters())
BOX_ADAPTERS = [name for name in SELECTED if plugins.adapter_class(name).meta.capabilities.box]


def fixed_input() -> tuple[np.ndarray, list[Prompt]]:
    image, masks = phantom(seed=3, index=0)
    tight = bounding_box(masks["organ"])
    rng = target_rng(3, "bench")
    return image, [Prompt(box=jitter_box(tight, 8, image.shape[:2], rng)) for _ in range(4)]


def loaded(name: str) -> Adapter:
    spec = plugins.adapter_class(name).meta.checkpoint
    weights = "pretrained"
    if spec is not None:
        try:
            checkpoints.resolve(spec)
        except checkpoints.CheckpointMissing:
            weights = "random"
    adapter: Adapter = plugins.adapter_class(name)()
    adapter.load(setup_adapter(name, weights, DEVICE, "fp32", 0, {}).options)
    return adapter


@pytest.mark.parametrize("name", BOX_ADAPTERS)
def test_encode(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    adapter = loaded(name)
    image, _ = fixed_input()
    benchmark.group = "encode"
    benchmark.pedantic(adapter.encode, args=(image,), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("name", BOX_ADAPTERS)
def test_decode_four_boxes(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    adapter = loaded(name)
    image, prompts = fixed_input()
    state = adapter.encode(image)
    benchmark.group = "decode x4"
    prediction = benchmark.pedantic(adapter.predict, args=(state, prompts), rounds=10, warmup_rounds=1)
    assert prediction.masks.shape == (4, *image.shape[:2])
