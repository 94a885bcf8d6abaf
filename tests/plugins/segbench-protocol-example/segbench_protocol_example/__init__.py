"""A loose box: the target's tight box widened by ``px`` pixels on every side (clipped to the image),
the way an annotator's quick box overshoots. A whole prompt protocol kind in one class, registered
through segbench's ``segbench_register_protocols`` hook; task files name it
``{ kind = "box_margin", px = 8 }`` and results call it ``box_margin8``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from segbench import hookimpl
from segbench.interface import Prompt
from segbench.protocols.base import Target
from segbench.protocols.kinds import PromptKind
from segbench.protocols.prompts import bounding_box


class BoxMargin(PromptKind):
    kind = "box_margin"
    defaults = {"px": 10}
    needs = frozenset({"box"})

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)  # unknown keys, non-negative integers
        if params.get("px", 10) > 256:
            raise ValueError("protocol 'box_margin': px must be at most 256")

    @property
    def name(self) -> str:
        return f"box_margin{self.param('px')}"

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        height, width = target.mask.shape
        x0, y0, x1, y1 = bounding_box(target.mask)
        px = int(self.param("px"))
        box = [max(0, x0 - px), max(0, y0 - px), min(width - 1, x1 + px), min(height - 1, y1 + px)]
        return Prompt(box=np.array(box, dtype=np.float64))


@hookimpl
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    register(BoxMargin)
