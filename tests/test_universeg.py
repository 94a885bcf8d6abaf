"""UniverSeg: the published architecture's parameter table, loading the official layout, invariances."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.adapters.universeg import CHECKPOINT, UniverSeg, grey_input
from segbench.adapters.universeg_net import CrossConv, UniverSegNet
from segbench.data.readers.phantom import phantom
from segbench.interface import LoadOptions, Support
from segbench.weights import checkpoints
from segbench.weights.checkpoints import CheckpointError

OFFICIAL_TABLE = json.loads((Path(__file__).parent / "fixtures" / "universeg_v1_state_dict.json").read_text())


@pytest.fixture(scope="module")
def net() -> UniverSegNet:
    torch.manual_seed(0)
    return UniverSegNet().eval()


def inputs(batch: int, support: int, seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random inputs; 64x64 keeps the tests fast (the network runs at any size divisible by 8)."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.rand(batch, 1, size, size, generator=generator)
    images = torch.rand(batch, support, 1, size, size, generator=generator)
    labels = (torch.rand(batch, support, 1, size, size, generator=generator) > 0.5).float()
    return query, images, labels


def test_parameter_names_shapes_and_count_are_the_official_ones(net: UniverSegNet) -> None:
    ours = {name: list(value.shape) for name, value in net.state_dict().items()}
    assert ours == OFFICIAL_TABLE["tensors"]
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_TABLE["parameters"] == 1_182_785
    assert sum(math.prod(shape) for shape in OFFICIAL_TABLE["tensors"].values()) == OFFICIAL_TABLE["parameters"]


def test_cross_conv_is_a_convolution_of_every_query_support_pair() -> None:
    """The split-weight implementation equals the definition: conv(cat([query, support_i]))."""
    torch.manual_seed(1)
    layer = CrossConv(3, 5, 4)
    query, support = torch.rand(2, 1, 3, 16, 16), torch.rand(2, 6, 5, 16, 16)
    pairs = torch.cat([query.expand(-1, 6, -1, -1, -1), support], dim=2).reshape(12, 8, 16, 16)
    expected = layer.cross_conv(pairs).reshape(2, 6, 4, 16, 16)
    assert torch.allclose(layer(query, support), expected, atol=1e-5)


def test_output_does_not_depend_on_the_order_of_the_support_set(net: UniverSegNet) -> None:
    query, images, labels = inputs(1, 5)
    order = torch.tensor([3, 0, 4, 2, 1])
    with torch.inference_mode():
        straight = net(query, images, labels)
        permuted = net(query, images[:, order], labels[:, order])
    assert torch.allclose(straight, permuted, atol=1e-4)
    assert not torch.allclose(straight, net(query, images, 1 - labels), atol=1e-3)  # labels do matter


def test_a_batch_of_queries_equals_the_queries_one_by_one(net: UniverSegNet) -> None:
    query, images, labels = inputs(3, 2, seed=2)
    with torch.inference_mode():
        batched = net(query, images, labels)
        single = torch.cat([net(query[i : i + 1], images[i : i + 1], labels[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 1, 64, 64)
    assert torch.allclose(batched, single, atol=1e-4)


def test_the_official_layout_round_trips_through_the_registry(net: UniverSegNet, tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT.filename
    torch.save(net.state_dict(), path)  # the release asset is a plain state dict
    found = checkpoints.resolve(CHECKPOINT, path)
    assert not found.official  # no published sha256 to compare with
    adapter = UniverSeg()
    adapter.load(LoadOptions(checkpoint=found.path))
    loaded = adapter.net.state_dict()
    assert loaded.keys() == net.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


def test_a_wrong_layout_names_the_offending_keys(net: UniverSegNet, tmp_path: Path) -> None:
    state = dict(net.state_dict())
    state["enc_blocks.0.cross.conv.weight"] = state.pop("enc_blocks.0.cross.cross_conv.weight")
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match=r"enc_blocks\.0\.cross\.cross_conv\.weight"):
        UniverSeg().load(LoadOptions(checkpoint=tmp_path / "renamed.pt"))


def test_an_unpinned_checkpoint_says_so_and_is_never_official(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path))
    with pytest.raises(checkpoints.CheckpointMissing, match="no published checksum") as missing:
        checkpoints.resolve(CHECKPOINT)
    assert CHECKPOINT.url in str(missing.value) and str(checkpoints.cached_path(CHECKPOINT)) in str(missing.value)
    cached = checkpoints.cached_path(CHECKPOINT)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"any file")
    found = checkpoints.resolve(CHECKPOINT)
    assert found.source == "cache" and not found.official and found.sha256 == checkpoints.sha256_file(cached)


def test_preprocessing_is_the_official_example_recipe() -> None:
    """example_data/wbc.py, restated: PIL bilinear resize to 128, convert("L"), divide by 255."""
    image, _ = phantom(3, 1)
    image = image.copy()
    image[..., 0] //= 2  # make the channels differ so the luma weights matter
    expected = np.asarray(Image.fromarray(image).resize((128, 128), Image.BILINEAR).convert("L")) / 255.0
    assert np.allclose(grey_input(image), expected, atol=1e-6)


def test_adapter_masks_come_back_at_the_query_size_and_ensemble_members_are_independent() -> None:
    adapter = UniverSeg()
    adapter.load(LoadOptions(random_weights=True, seed=0))
    image, labels = phantom(0, 0)
    examples = [phantom(0, i) for i in (1, 2)]
    support = Support([e[0] for e in examples], [e[1]["organ"] for e in examples])
    state = adapter.encode(image)
    together = adapter.predict(state, support=[support, Support(support.images[::-1], support.masks[::-1])])
    assert together.masks.shape == (2, *image.shape[:2]) and together.probabilities is not None
    assert np.allclose(together.probabilities[0], together.probabilities[1], atol=1e-4)  # same set, reordered
    alone = adapter.predict(state, support=[support])
    assert np.allclose(alone.probabilities[0], together.probabilities[0], atol=1e-4)
    with pytest.raises(ValueError, match="support set"):
        adapter.predict(state, support=[])
