"""What running one work unit gives back, through every executor: its rows and the masks it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segbench.running.kept_masks import MaskSample


@dataclass
class UnitResult:
    """The rows of one unit (every protocol, step and label) and, for a kept case, its masks."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    kept_mask: MaskSample | None = None
