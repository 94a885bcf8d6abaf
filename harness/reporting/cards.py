"""Model cards on the site, and the zero-shot marks: was a task's dataset in a model's training data?

A task names the published datasets its cases come from (``[task] origin``, recorded in the run
manifest's task record); a model's card lists the datasets it was trained on (``ModelCard.trained_on``,
recorded in the adapter record) and whether that list is complete. For one (model, task) pair:

* **not zero-shot** (``False``): a dataset of the task's origin is in the model's training list;
* **zero-shot** (``True``): none is, and the card's list is complete (a classical baseline, trained on
  nothing, is zero-shot everywhere);
* **unknown** (``None``): none is, but the card's list is not complete (its published list of source sets
  is not mapped to segbench's ids), or the task names no origin, or the run did not record either.

The leaderboard marks every pair that is not zero-shot, and an unknown one apart; the zero-shot view
hides the pairs that are not zero-shot and ranks the rest again, among themselves (:func:`zero_shot_keep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

NOT_ZERO_SHOT_MARK = "●"
UNKNOWN_MARK = "?"
LEGEND = (
    f"{NOT_ZERO_SHOT_MARK} dataset in this model's training data (a dataset of the task's origin is on the "
    f"model's card); {UNKNOWN_MARK} not known (the card's training list is not complete, or the task names no "
    "origin); unmarked: zero-shot"
)
ZERO_SHOT_VIEW_RULE = (
    "The zero-shot view hides every (model, task) pair whose task dataset is in the model's training data and "
    "ranks the remaining adapters of each column again among themselves (the same paired tests, Holm-adjusted "
    f"within the column); pairs of unknown status stay, marked {UNKNOWN_MARK}. The mean rank is over the "
    "re-ranked columns."
)


def zero_shot(origin: Any, card: Mapping[str, Any] | None) -> bool | None:
    """The pair's status (module docstring): ``origin`` is the task's list of dataset ids, ``card`` the
    adapter's recorded card (``ModelCard.describe()``)."""
    if not card or not isinstance(origin, list | tuple) or not origin:
        return None
    if set(origin) & set(card.get("trained_on") or ()):
        return False
    return True if card.get("trained_on_complete") else None


def overlap(origin: Any, card: Mapping[str, Any] | None) -> list[str]:
    """The datasets of the task's origin on the model's card (why a pair is marked)."""
    if not card or not isinstance(origin, list | tuple):
        return []
    trained = set(card.get("trained_on") or ())
    return [item for item in origin if item in trained]


def zero_shot_keep(
    cards: Mapping[str, Mapping[str, Any] | None], origins: Mapping[str, Any]
) -> Callable[[str, str], bool]:
    """``keep(adapter, task)`` of the zero-shot view: every pair except those known not to be zero-shot."""

    def keep(adapter: str, task: str) -> bool:
        return zero_shot(origins.get(task), cards.get(adapter)) is not False

    return keep


def mark(status: bool | None) -> str:
    """The mark a cell carries: none for zero-shot, ● for a dataset in the training data, ? for unknown."""
    if status is None:
        return UNKNOWN_MARK
    return "" if status else NOT_ZERO_SHOT_MARK


def flops_text(flops: Any) -> str:
    """FLOPs for a page: 1.23 TFLOPs / 456.7 GFLOPs / 12.3 MFLOPs."""
    if not isinstance(flops, int | float):
        return "not counted"
    for scale, unit in ((1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs")):
        if flops >= scale:
            return f"{flops / scale:.{1 if scale < 1e12 else 2}f} {unit}"
    return f"{int(flops)} FLOPs"


def params_text(params: Any) -> str:
    """A parameter count for a page: 93.74 M (93,735,472)."""
    if not isinstance(params, int):
        return "not measured"
    if params == 0:
        return "0 (no learned weights)"
    return f"{params / 1e6:.2f} M ({params:,})"
