"""SAM family checkpoints: each official layout (real architecture, random weights) loads strictly into
its adapter with zero missing and zero unexpected keys; a wrong layout is a clear error."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from segment_anything import sam_model_registry

from segbench import plugins
from segbench.adapters.sam_med2d import SamMed2D, build_sam_med2d
from segbench.interface import LoadOptions
from segbench.weights import checkpoints
from segbench.weights.checkpoints import CheckpointError


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The layout of sam_vit_b_01ec64.pth and medsam_vit_b.pth: the plain state dict of SAM's ViT-B."""
    torch.manual_seed(7)
    state = sam_model_registry["vit_b"]().state_dict()
    path = tmp_path_factory.mktemp("vit_b") / "vit_b.pth"
    torch.save(state, path)
    return path, state


def load(name: str, path: Path):
    adapter = plugins.adapter_class(name)()
    adapter.load(LoadOptions("cpu", path))  # strict: any missing or unexpected key raises
    return adapter


def assert_same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert own.keys() == state.keys()
    for key in (
        "image_encoder.blocks.3.attn.qkv.weight",
        "prompt_encoder.point_embeddings.1.weight",
        "mask_decoder.iou_token.weight",
    ):
        assert torch.equal(own[key], state[key])


@pytest.mark.parametrize("name", ["sam-vit-b", "medsam", "medicosam"])
def test_plain_vit_b_state_dict_loads_strictly(name: str, vit_b_file) -> None:
    path, state = vit_b_file
    assert_same_weights(load(name, path).model, state)


def test_medicosam_torch_em_layout_loads(vit_b_file, tmp_path: Path) -> None:
    """torch_em / micro_sam training layout: {"model_state": {"sam.<key>": ...}, "decoder_state": ...}."""
    _, state = vit_b_file
    path = tmp_path / "vit_b_medicosam.pt"
    torch.save(
        {"model_state": {f"sam.{k}": v for k, v in state.items()}, "decoder_state": {"base.weight": torch.zeros(2)}},
        path,
    )
    assert_same_weights(load("medicosam", path).model, state)


@pytest.mark.parametrize("backbone", ["vit_l", "vit_h"])
def test_large_backbones_have_the_official_names_and_shapes(backbone: str, tmp_path: Path) -> None:
    """ViT-L/H (1.2 / 2.5 GB): names and shapes only, on the meta device, from a file of broadcast zeros."""
    with torch.device("meta"):
        official = sam_model_registry[backbone]().state_dict()
        adapter = plugins.adapter_class(f"sam-{backbone.replace('_', '-')}")()
        model = adapter.build()
    path = tmp_path / "official.pth"
    torch.save({k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in official.items()}, path)
    state = checkpoints.read_state_dict(path)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in official.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # copying into meta tensors is a no-op, by design here
        checkpoints.apply_state_dict(model, state, path)  # strict: raises on any missing/unexpected/mis-shaped


def samed2d_official_layout() -> dict[str, tuple[int, ...]]:
    """sam-med2d_b.pth's names and shapes, stated from the official code: SAM ViT-B's layout with the
    positional embedding at 256/16 = 16 tokens a side, global-attention (blocks 2, 5, 8, 11) relative
    position tables of 2*16-1 = 31, the prompt encoder's mask input at 4*16, and in every block an
    ``Adapter`` with LayerNorm ``norm``, ``channel.0`` (192x768) / ``channel.2`` (768x192) without bias,
    ``spatial.0`` Conv2d 768->768 3x3 and ``spatial.2`` ConvTranspose2d 768->768 4x4, without bias."""
    with torch.device("meta"):
        layout = {k: tuple(v.shape) for k, v in sam_model_registry["vit_b"]().state_dict().items()}
    layout["image_encoder.pos_embed"] = (1, 16, 16, 768)
    for block in (2, 5, 8, 11):
        for axis in ("h", "w"):
            layout[f"image_encoder.blocks.{block}.attn.rel_pos_{axis}"] = (31, 64)
    for block in range(12):
        prefix = f"image_encoder.blocks.{block}.Adapter."
        layout.update(
            {
                prefix + "norm.weight": (768,),
                prefix + "norm.bias": (768,),
                prefix + "channel.0.weight": (192, 768),
                prefix + "channel.2.weight": (768, 192),
                prefix + "spatial.0.weight": (768, 768, 3, 3),
                prefix + "spatial.2.weight": (768, 768, 4, 4),
            }
        )
    return layout


def test_samed2d_module_has_the_official_names_and_shapes() -> None:
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in build_sam_med2d().state_dict().items()}
    assert ours == samed2d_official_layout()


def test_samed2d_file_with_a_pickled_optimizer_loads_only_the_model(tmp_path: Path) -> None:
    """The official file is {"model": state_dict, "optimizer": <torch.optim.Adam object>} (train.py)."""
    torch.manual_seed(3)
    model = build_sam_med2d()
    path = tmp_path / "sam-med2d_b.pth"
    torch.save({"model": model.state_dict(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-4)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        checkpoints.read_state_dict(path)  # by default, a pickled object is refused, never run
    assert_same_weights(load("sam-med2d", path).model, model.state_dict())


def test_wrong_layouts_are_clear_errors(vit_b_file, tmp_path: Path) -> None:
    path, state = vit_b_file
    with pytest.raises(CheckpointError, match=r"missing key\(s\): image_encoder\.blocks\.0\.Adapter.*wrong shape"):
        SamMed2D().load(LoadOptions("cpu", path))  # plain SAM ViT-B is not SAM-Med2D
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"sam.{k}": v for k, v in state.items()}, prefixed)
    with pytest.raises(CheckpointError, match=r"prefixed\.pth: layout does not match Sam: .*missing.*unexpected"):
        load("sam-vit-b", prefixed)  # only MedicoSAM's loader knows torch_em's "sam." prefix
