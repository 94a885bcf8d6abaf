"""Every 2D adapter on volumes: slice by slice, LiteMedSAM-style propagation, and shared encoder passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segbench.adapters.baselines import BoxBaseline
from segbench.adapters.litemedsam import CHECKPOINT, LiteMedSAM
from segbench.interface import LoadOptions
from segbench.measuring.metrics import evaluate
from segbench.protocols.base import ProtocolInputs
from segbench.protocols.prompts import bounding_box, parse_protocol, targets_for
from segbench.protocols.propagation import MARGIN_AT_256, SliceStrategy, widened_box
from segbench.protocols.slice_cache import SliceEncodings, nbytes
from segbench.protocols.volume_prompts import initial_volume_prompt, slice_extent
from segbench.running.volume_runner import VolumeSession
from segbench.weights import checkpoints

from .volumes import crop_around, read_case

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def tumour(data_root: Path):
    """A real BraTS tumour whose core starts and ends inside the crop (empty slices around it)."""
    return crop_around(read_case(data_root, "brats"), "tumour_core", slices=72, margin=8)


def test_propagation_carries_the_previous_slices_box_within_the_extent(tumour) -> None:
    box_adapter = BoxBaseline()
    box_adapter.load(LoadOptions())
    targets = targets_for(tumour.labels, "label")
    prompts = [initial_volume_prompt(parse_protocol("key_slice_box"), t) for t in targets]
    encodings = SliceEncodings(box_adapter.encode, tumour.image, "cpu")
    strategy = SliceStrategy(box_adapter, encodings, propagate=True)
    masks = strategy.predict(prompts).masks
    margin = MARGIN_AT_256 * max(tumour.image.shape[1:]) / 256
    for i, (target, prompt) in enumerate(zip(targets, prompts, strict=True)):
        first, last = slice_extent(target.mask)
        assert prompt.z_range == (first, last)
        decoded = np.flatnonzero(masks[i].any(axis=(1, 2)))
        assert decoded.tolist() == list(range(first, last + 1))  # exactly the extent, both ways from the key
        key = prompt.key_slice
        assert strategy.boxes[i][key].tolist() == bounding_box(target.mask[key]).tolist()
        for z in range(first, last + 1):
            if z != key:
                previous = masks[i, z - 1] if z > key else masks[i, z + 1]
                assert np.array_equal(strategy.boxes[i][z], widened_box(previous, margin))
    # all targets move through the slices together: every slice is encoded once
    assert (
        encodings.misses
        == len(strategy.touched)
        == len(set().union(*(range(p.z_range[0], p.z_range[1] + 1) for p in prompts)))
    )


def test_slice_cache_stays_within_its_budget_and_reencodes_what_it_dropped(tumour) -> None:
    adapter = BoxBaseline()
    adapter.load(LoadOptions())
    slice_bytes = nbytes(adapter.encode(np.zeros((*tumour.image.shape[1:], 3), np.uint8)))
    encodings = SliceEncodings(adapter.encode, tumour.image, "cpu", budget=3 * slice_bytes)
    for z in (0, 1, 2, 3, 0):
        encodings.get(z)
    assert encodings.misses == 5 and encodings.hits == 0  # slice 0 was evicted by slice 3
    encodings.get(3)
    assert (
        encodings.hits == 1 and encodings.cost_ms({0, 3}) == encodings.first_encode_ms[0] + encodings.first_encode_ms[3]
    )


@pytest.fixture(scope="module")
def litemedsam() -> LiteMedSAM:
    adapter = LiteMedSAM()
    adapter.load(LoadOptions("cpu", checkpoints.resolve(CHECKPOINT).path))
    return adapter


def test_litemedsam_runs_both_strategies_on_a_real_volume_sharing_its_encoder_passes(tumour, litemedsam) -> None:
    # 6 slices through the middle of the tumour: both labels on every slice (6 encoder passes)
    case = crop_around(tumour, "tumour_core", slices=6, margin=0)
    targets = targets_for(case.labels, "label")
    session = VolumeSession(litemedsam, case.image, "cpu")
    inputs = ProtocolInputs(0, "brats", case.case_id, case.labels)  # its targets: `targets`, in that order
    slicewise_run = session.run(parse_protocol("slice_boxes"), inputs)
    slicewise, encode_slicewise = slicewise_run.steps, slicewise_run.encode_ms
    misses = session.encodings.misses
    propagated_run = session.run(parse_protocol("key_slice_box"), inputs)
    propagated, encode_propagated = propagated_run.steps, propagated_run.encode_ms
    assert session.encodings.misses == misses == len(case.image)  # the second strategy encodes nothing new
    assert encode_propagated == pytest.approx(encode_slicewise)  # each is charged the slices it used
    for index, target in enumerate(targets):
        with_boxes = evaluate(target.mask, slicewise[0].masks[index], case.spacing, 2.0)
        carried = evaluate(target.mask, propagated[0].masks[index], case.spacing, 2.0)
        assert with_boxes.dice > 0.5  # a tight box on every slice: far from chance for a working model
        assert 0 < carried.dice <= 1 and 0 < carried.nsd <= 1
        # on the key slice both strategies decode the same box (up to batch-size rounding in the decoder)
        key = propagated[0].prompts[index].key_slice
        assert (propagated[0].masks[index, key] != slicewise[0].masks[index, key]).mean() < 1e-3
    assert len(slicewise) == len(propagated) == 1 and all(s.decode_ms > 0 for s in slicewise + propagated)
