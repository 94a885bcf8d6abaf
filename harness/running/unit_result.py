"""What running one work unit gives back, through every executor: its rows, the masks it keeps and the
predictions it has the store write out (``segbench run --write-predictions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segbench.running.kept_masks import MaskSample
from segbench.running.prediction_writers import UnitPredictions


@dataclass
class UnitResult:
    """The rows of one unit (every protocol, step and label), for a kept case its masks, and, when the run
    writes predictions out, the final masks at the case's full size with its geometry."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    kept_mask: MaskSample | None = None
    predictions: UnitPredictions | None = None
