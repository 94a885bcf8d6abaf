"""Volume similarity as a segbench metric: VS = 1 - |P - G| / (P + G) over foreground pixel counts.

It compares sizes only, not places (Taha & Hanbury 2015, "Metrics for evaluating 3D medical image
segmentation", table 1); both masks empty gives 1 (a perfect answer), one empty gives 0. A failed or
missing case scores the penalty 0, the worst value there is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from segbench import hookimpl
from segbench.measuring.metric_table import MetricSpec, ScoringInputs


def volume_similarity(inputs: ScoringInputs) -> float:
    truth = int(np.count_nonzero(inputs.truth))
    predicted = int(np.count_nonzero(inputs.predicted))
    if truth + predicted == 0:
        return 1.0
    return 1.0 - abs(predicted - truth) / (predicted + truth)


VOLUME_SIMILARITY = MetricSpec(
    name="volume_similarity",
    label="Volume similarity",
    unit="",
    higher_is_better=True,
    digits=3,
    edge_cases="both empty 1; one empty 0",
    compute=volume_similarity,
    penalty=0.0,
)


@hookimpl
def segbench_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(VOLUME_SIMILARITY)
