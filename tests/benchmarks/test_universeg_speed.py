"""UniverSeg's cost per query as the support set grows (a benchmark: skipped unless enabled).

    python -m pytest tests/benchmarks/test_universeg_speed.py -o addopts="" --benchmark-enable   # CUDA if seen

One ``predict`` of one 128x128 query with k support examples, random weights (the speed does not
depend on the weights), through the adapter as the runner calls it (CUDA-synchronised on a GPU).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from segbench.adapters.universeg import UniverSeg
from segbench.data.readers.phantom import phantom
from segbench.interface import LoadOptions, Support
from segbench.measuring.cost import timed

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("k", [1, 8, 64])
def test_universeg_predict(benchmark: Any, k: int) -> None:
    adapter = UniverSeg()
    adapter.load(LoadOptions(device=DEVICE, random_weights=True))
    image, _ = phantom(0, 0)
    examples = [phantom(0, i + 1) for i in range(k)]
    support = [Support([e[0] for e in examples], [e[1]["organ"] for e in examples])]
    state = adapter.encode(image)
    benchmark.extra_info.update(device=DEVICE, support_size=k)
    prediction = benchmark.pedantic(
        lambda: timed(DEVICE, adapter.predict, state, None, support)[0], rounds=3, warmup_rounds=1
    )
    assert prediction.masks.shape == (1, *image.shape[:2])
