"""Parity: the `sam-vit-b` adapter gives segment_anything.SamPredictor's masks (same random weights) on
real images, for boxes, a lone click (multimask, best score), clicks with labels and a refinement step
that feeds the previous low-resolution logits back.

The encoder input of both is compared exactly on every image; the encoder itself (15 s a pass on two
cores) runs on both sides for the first image only, later images reuse the predictor's embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from segbench import plugins
from segbench.adapters.sam import SamViTB
from segbench.adapters.sam_base import EncodedImage
from segbench.data.taskspec import discover_tasks
from segbench.interface import LoadOptions, Prompt
from segbench.protocols.prompts import bounding_box, correction_click, interior_point

pytestmark = pytest.mark.data


def first_case(task: str, data_root: Path):
    spec = discover_tasks()[task]
    reader = plugins.readers()[spec.reader](spec, data_root)
    return reader.read(reader.case_ids()[0])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def adapter() -> SamViTB:
    sam = SamViTB()
    sam.load(LoadOptions("cpu", None, random_weights=True, seed=0))
    return sam


def official_embedding(predictor: SamPredictor, image: np.ndarray) -> torch.Tensor:
    """``predictor.set_image(image)``, returning the tensor its image encoder was given."""
    seen: list[torch.Tensor] = []
    hook = predictor.model.image_encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        predictor.set_image(image)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("task", ["wbc", "kvasir"])
def test_sam_vit_b_matches_the_official_predictor(adapter: SamViTB, task: str, data_root: Path) -> None:
    case = first_case(task, data_root)
    mask = next(iter(case.labels.values()))
    box = bounding_box(mask)
    row, col = interior_point(mask)
    (miss_row, miss_col), miss_label = correction_click(mask, np.zeros_like(mask))  # inside the object: positive
    (extra_row, extra_col), extra_label = correction_click(mask, np.ones_like(mask))  # the background: negative
    click = np.array([[col, row]], dtype=float)
    clicks = np.array([[miss_col, miss_row], [extra_col, extra_row]], dtype=float)
    labels = np.array([miss_label, extra_label])
    assert labels.tolist() == [1, 0]

    predictor = SamPredictor(adapter.model)  # the same weights
    official_input = official_embedding(predictor, case.image)
    with torch.inference_mode():
        our_input, frame = adapter.preprocess(case.image)
    assert torch.equal(our_input, official_input)
    if task == "wbc":
        state = adapter.encode(case.image)
        np.testing.assert_allclose(state.embedding.numpy(), predictor.features.numpy(), atol=1e-5)
    else:
        state = EncodedImage(predictor.features, frame)
    ours = adapter.predict(
        state,
        [Prompt(box=box), Prompt(points=click, point_labels=np.array([1])), Prompt(points=clicks, point_labels=labels)],
    )
    by_box, _, box_logits = predictor.predict(box=box, multimask_output=False)
    candidates, scores, _ = predictor.predict(point_coords=click, point_labels=np.array([1]), multimask_output=True)
    by_clicks, _, _ = predictor.predict(point_coords=clicks, point_labels=labels, multimask_output=False)
    expected = [by_box[0], candidates[int(np.argmax(scores))], by_clicks[0]]
    for index, reference in enumerate(expected):
        assert reference.any() and iou(ours.masks[index], reference) >= 0.999

    refine = Prompt(box=box, points=clicks[1:], point_labels=labels[1:], previous=ours.feedback[0])
    refined = adapter.predict(state, [refine])
    official, _, _ = predictor.predict(
        point_coords=clicks[1:], point_labels=labels[1:], box=box, mask_input=box_logits, multimask_output=False
    )
    assert iou(refined.masks[0], official[0]) >= 0.999
