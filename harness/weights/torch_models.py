"""Small helpers shared by the adapters that run torch models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from segbench.interface import LoadOptions
from segbench.lazy import lazy_import
from segbench.weights.checkpoints import apply_state_dict, read_state_dict

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # names of torch dtypes (torch is imported on first use)


@contextlib.contextmanager
def inference(options: LoadOptions) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast to bf16/fp16 on CUDA when the run asks for it
    (on the CPU, reduced precision is not applied: the figures would not be comparable)."""
    with torch.inference_mode():
        if options.precision != "fp32" and options.device.startswith("cuda"):
            with torch.autocast("cuda", dtype=getattr(torch, DTYPES[options.precision])):
                yield
        else:
            yield


def prepare(
    model: torch.nn.Module, options: LoadOptions, strip_prefixes: tuple[str, ...] = (), skip_objects: bool = False
) -> torch.nn.Module:
    """Load the checkpoint (or keep the seeded random initialisation) and move the model to the device.

    Build the model inside :func:`seeded` so random weights are the same on every machine. See
    :func:`read_state_dict` for ``strip_prefixes`` and ``skip_objects``."""
    if not options.random_weights and options.checkpoint is not None:
        state = read_state_dict(Path(options.checkpoint), strip_prefixes, skip_objects)
        apply_state_dict(model, state, options.checkpoint)
    return model.to(options.device).eval()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Fork torch's RNG, seeded, so building a model with random weights is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
