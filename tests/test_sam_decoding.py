"""The shared SAM decoding core on its own, with a stand-in decoder (no model): one call per prompt
shape, answers back in the prompts' order, the best of several candidates, capability checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segbench.adapters.sam_decoding import GroupAnswer, PromptShape, decode_by_shape, pick_best, stacked_points
from segbench.interface import AdapterMeta, Capabilities, Prompt

META = AdapterMeta("fake-sam", "sam", "a stand-in", Capabilities(box=True, point=True, mask=True, iterative=True))
SIZE = (6, 8)

PROMPTS = [
    Prompt(box=np.array([1.0, 1, 4, 3])),
    Prompt(points=np.array([[2.0, 2]]), point_labels=np.array([1])),
    Prompt(box=np.array([0.0, 0, 2, 2])),
    Prompt(points=np.array([[1.0, 1], [5, 4]]), point_labels=np.array([1, 0])),
    Prompt(points=np.array([[3.0, 3]]), point_labels=np.array([1]), previous="logits of step 1"),
    Prompt(points=np.array([[6.0, 5]]), point_labels=np.array([0])),
]


def test_one_call_per_shape_with_answers_in_prompt_order() -> None:
    calls: list[tuple[PromptShape, list[int]]] = []

    def decode(shape: PromptShape, group: list[Prompt]) -> GroupAnswer:
        indices = [next(i for i, p in enumerate(PROMPTS) if p is prompt) for prompt in group]
        calls.append((shape, indices))
        masks = np.zeros((len(group), *SIZE), dtype=bool)
        for row, index in enumerate(indices):
            masks[row, index] = True  # row `index` of the image marks which prompt this answer is for
        return GroupAnswer(masks, np.array(indices, dtype=np.float32) / 10, [f"feedback {i}" for i in indices])

    prediction = decode_by_shape(META, PROMPTS, SIZE, decode)
    assert sorted(calls, key=lambda call: call[1]) == [
        (PromptShape(box=True, points=0, mask=False), [0, 2]),
        (PromptShape(box=False, points=1, mask=False), [1, 5]),
        (PromptShape(box=False, points=2, mask=False), [3]),
        (PromptShape(box=False, points=1, mask=True), [4]),
    ]
    assert [shape.lone_click for shape, _ in sorted(calls, key=lambda call: call[1])] == [False, True, False, False]
    for index in range(len(PROMPTS)):
        assert np.flatnonzero(prediction.masks[index].any(axis=1)).tolist() == [index]
    np.testing.assert_allclose(prediction.scores, np.arange(6) / 10, rtol=1e-6)
    assert prediction.feedback == [f"feedback {i}" for i in range(6)]


def test_the_best_candidate_of_each_prompt_numpy_and_torch_alike() -> None:
    scores = np.array([[0.1, 0.9, 0.3], [0.8, 0.2, 0.5]])
    logits = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    best_scores, best_logits = pick_best(scores, logits)
    assert best_scores.tolist() == [0.9, 0.8] and best_logits.tolist() == [logits[0, 1].tolist(), logits[1, 0].tolist()]
    torch_scores, torch_logits = pick_best(torch.from_numpy(scores), torch.from_numpy(logits))
    assert torch_scores.tolist() == best_scores.tolist() and torch.equal(torch_logits, torch.from_numpy(best_logits))
    only_scores, only = pick_best(scores[:, :1], logits[:, :1])  # one candidate: itself
    assert only_scores.tolist() == [0.1, 0.8] and np.array_equal(only, logits[:, 0])


def test_points_stack_as_float_coordinates_and_labels() -> None:
    coords, labels = stacked_points([PROMPTS[1], PROMPTS[5]])
    assert coords.shape == (2, 1, 2) and coords.dtype == np.float64 and labels.tolist() == [[1], [0]]


@pytest.mark.parametrize(
    ("capabilities", "prompt", "message"),
    [
        (Capabilities(box=True), PROMPTS[1], "fake-sam takes box prompts only, got points"),
        (Capabilities(box=True, point=True), PROMPTS[4], "fake-sam takes no mask prompt, got previous logits"),
        (Capabilities(box=True), Prompt(), "fake-sam: a prompt needs a box or points"),
    ],
)
def test_prompts_the_adapter_cannot_take_are_refused(capabilities: Capabilities, prompt: Prompt, message: str) -> None:
    meta = AdapterMeta("fake-sam", "sam", "a stand-in", capabilities)
    with pytest.raises(ValueError, match=message):
        decode_by_shape(meta, [prompt], SIZE, lambda shape, group: pytest.fail("decoded"))
    with pytest.raises(ValueError, match="fake-sam needs prompts"):
        decode_by_shape(meta, [], SIZE, lambda shape, group: pytest.fail("decoded"))
