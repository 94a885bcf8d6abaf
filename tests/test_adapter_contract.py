"""The adapter contract over every registered adapter (as timm tests every model of its registry), and
``segbench check-adapter`` on the example package's adapters, one of them with a bundled checkpoint.

Random weights on a phantom image and volume (segbench.running.adapter_check). The larger variants of a
model whose code another variant already runs through every check (ViT-L/H beside ViT-B, Hiera S/B+/L
beside Hiera T, and the SAM2 fine-tunes that only change preprocessing and weights) encode a 1024 x 1024
input on CPU for tens of seconds each; they run the checks that need no forward pass, plus the checks
that run a method they override, so that the whole file stays within about two minutes of CI time on
two cores (measured: 215 CPU-seconds in all, user + sys, of which SAM ViT-B, MedSAM, MedicoSAM, Hiera T
and MedSAM2 take about 30-40 each).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segbench import plugins
from segbench.running.adapter_check import CHECKS, check_adapter, phantom_image

from .conftest import EXAMPLE, run_cli

# a larger variant -> the adapter whose full contract runs the same code
REPRESENTATIVE = {
    "sam-vit-l": "sam-vit-b",
    "sam-vit-h": "sam-vit-b",
    "medicosam": "sam-vit-b",
    "sam2.1-hiera-s": "sam2.1-hiera-t",
    "sam2.1-hiera-b+": "sam2.1-hiera-t",
    "sam2.1-hiera-l": "sam2.1-hiera-t",
    "medsam2": "sam2.1-hiera-t",
    "medical-sam2": "sam2.1-hiera-t",
}
WITHOUT_A_FORWARD_PASS = ("meta", "load", "refused")  # load builds the variant's own architecture
# adapters whose published network needs a minute or more a forward pass on two CPU cores even with random
# weights (SAM-Med3D's 3D ViT pads its 8³ tokens to 14³ windows; nnInteractive's ResEnc-L takes a GB to
# build): the checks named here, and the named test runs the full contract on the same adapter code with a
# smaller configuration of the same architecture
FULL_CONTRACT_ELSEWHERE = {
    "sam-med3d-turbo": ("tests/test_sam_med3d.py", WITHOUT_A_FORWARD_PASS),
    "sam-med3d": ("tests/test_sam_med3d.py", WITHOUT_A_FORWARD_PASS),
    "nninteractive": ("tests/test_nninteractive.py::test_the_adapter_keeps_the_contract", ("meta", "refused")),
}
# a method a variant overrides -> the checks that run it (an override not listed: the full contract)
CHECKS_OF_OVERRIDE = {
    "build": (),
    "config_path": (),
    "preprocess": ("encode", "box"),
    "postprocess_volume": ("volume",),
}


def own_methods(variant: str, representative: str) -> set[str]:
    """The methods of ``variant`` that are not its representative's."""
    one, other = plugins.adapter_class(variant), plugins.adapter_class(representative)
    return {
        name
        for name in dir(one)
        if not name.startswith("__")
        and callable(getattr(one, name))
        and getattr(one, name) is not getattr(other, name, None)
    }


def checks_for(name: str) -> tuple[str, ...]:
    if name in FULL_CONTRACT_ELSEWHERE:
        return FULL_CONTRACT_ELSEWHERE[name][1]
    if name not in REPRESENTATIVE:
        return CHECKS
    needed = set(WITHOUT_A_FORWARD_PASS)
    for method in own_methods(name, REPRESENTATIVE[name]):
        if method not in CHECKS_OF_OVERRIDE:
            return CHECKS
        needed |= set(CHECKS_OF_OVERRIDE[method])
    return tuple(check for check in CHECKS if check in needed)


def _params() -> list[object]:
    out = []
    for name in plugins.adapters():
        checks = checks_for(name)
        # a model with weights runs a network; the largest full contracts take ~40 CPU-seconds (SAM ViT-B)
        marks = [pytest.mark.slow] if plugins.adapter_class(name).meta.checkpoint is not None else []
        out.append(pytest.param(name, checks, marks=marks, id=name))
    return out


@pytest.mark.parametrize(("name", "checks"), _params())
def test_every_registered_adapter_keeps_the_contract(name: str, checks: tuple[str, ...]) -> None:
    results = check_adapter(plugins.adapter_class(name), only=checks)
    failed = [result.line() for result in results if result.status == "fail"]
    assert not failed, "\n".join(failed)
    assert [result.name for result in results] == list(checks)
    capabilities = set(plugins.adapter_class(name).meta.capabilities.names())
    ran = {result.name for result in results if result.status == "pass"}
    # a capability the adapter declares is exercised, never skipped
    assert ({"box", "point", "iterative", "support_set", "volume"} & capabilities & set(checks)) <= ran
    if {"scribble", "lasso"} & capabilities and "drawn" in checks:
        assert "drawn" in ran


def test_every_variant_has_a_representative_that_runs_the_full_contract() -> None:
    for variant, representative in REPRESENTATIVE.items():
        assert checks_for(representative) == CHECKS, f"{representative} must run the full contract"
        assert (
            plugins.adapter_class(variant).meta.capabilities == plugins.adapter_class(representative).meta.capabilities
        )


def test_a_failing_adapter_is_reported_per_check() -> None:
    box = plugins.adapter_class("box")

    class FloatMasks(box):  # type: ignore[misc, valid-type]
        def predict(self, state, prompts=None, support=None):  # type: ignore[no-untyped-def]
            prediction = super().predict(state, prompts, support)
            prediction.masks = prediction.masks.astype(np.float32)
            return prediction

    results = {result.name: result for result in check_adapter(FloatMasks)}
    assert results["box"].status == "fail" and "dtype float32" in results["box"].detail
    assert results["refused"].status == "pass"  # one failure does not hide the other checks


def test_check_adapter_on_the_example_package(plugin_path: str) -> None:
    env = {"PYTHONPATH": plugin_path}
    for name, weights in (("clicks", "random"), ("tinyseg", "random"), ("tinyseg", "pretrained")):
        result = run_cli("check-adapter", name, "--weights", weights, env=env)
        lines = result.stdout.splitlines()
        assert lines[-1] == f"{name}: passed (0 check(s) failed)"
        assert {line.split()[1] for line in lines[:-1]} == set(CHECKS)  # a line per check
    pretrained = result.stdout  # the last one: tinyseg with its bundled weights
    assert "weights: pretrained" in pretrained
    listed = json.loads(run_cli("adapters", "--json", env=env).stdout)
    assert next(a for a in listed if a["name"] == "tinyseg")["checkpoint"] == "present (bundled)"


def test_check_adapter_fails_with_exit_1(tmp_path: Path) -> None:
    plugin = tmp_path / "segbench_float_masks.py"
    plugin.write_text(
        "from segbench import hookimpl\n"
        "from segbench.adapters.baselines import BoxBaseline\n"
        "from dataclasses import replace\n"
        "class Floaty(BoxBaseline):\n"
        "    meta = replace(BoxBaseline.meta, name='floaty')\n"
        "    def predict(self, state, prompts=None, support=None):\n"
        "        p = super().predict(state, prompts, support); p.masks = p.masks.astype('uint8'); return p\n"
        "@hookimpl\n"
        "def segbench_register_adapters(register):\n"
        "    register(Floaty)\n"
    )
    code = (
        "import sys; from segbench import plugins; import segbench_float_masks as m;"
        "plugins.plugin_manager().register(m, name='floaty');"
        "from segbench.cli import main; sys.exit(main(['check-adapter', 'floaty']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path), "PATH": ""}
    )
    assert result.returncode == 1, result.stderr
    assert any(line.startswith("FAIL  box") and "dtype uint8" in line for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1] == "floaty: FAILED (1 check(s) failed)"


def test_tinyseg_ships_the_weights_its_script_writes_and_loads_them(tmp_path: Path) -> None:
    """The bundled checkpoint is byte for byte what make_weights.py writes (so its pinned sha256 is
    reproducible on any machine and torch version), holds the tensors of ``reference_state_dict``, and a
    malformed file is refused; loaded, the model computes its documented rule, checked here in numpy:
    inside the box, brighter than the box's mean."""
    torch = pytest.importorskip("torch")
    package = EXAMPLE / "segbench_example_adapter"
    shipped_path = package / "weights" / "tinyseg-v1.json"
    subprocess.run(
        [sys.executable, "-m", "segbench_example_adapter.make_weights", str(tmp_path / "tinyseg-v1.json")],
        check=True,
        env={"PYTHONPATH": str(EXAMPLE), "PATH": ""},
        capture_output=True,
    )
    assert (tmp_path / "tinyseg-v1.json").read_bytes() == shipped_path.read_bytes()

    sys.path.insert(0, str(EXAMPLE))
    try:
        from segbench_example_adapter.tinyseg import TINYSEG_V1, TinySeg
        from segbench_example_adapter.tinyseg_net import read_weights, reference_state_dict

        from segbench.interface import LoadOptions, Prompt
        from segbench.weights.checkpoints import CheckpointError, file_digest

        assert (file_digest(shipped_path, "sha256"), shipped_path.stat().st_size) == (
            TINYSEG_V1.sha256,
            TINYSEG_V1.size,
        )
        written, shipped = reference_state_dict(), read_weights(shipped_path)
        assert written.keys() == shipped.keys() and all(torch.equal(written[k], shipped[k]) for k in written)
        document = json.loads(shipped_path.read_text())
        document["tensors"]["decoder.bias"]["values"] = [1.0, 2.0]  # two values for shape [1]
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(document))
        with pytest.raises(CheckpointError, match=r"decoder\.bias: 1 values expected"):
            read_weights(bad)
        bad.write_bytes(b"\x80\x04\x95")  # a pickle's opening bytes are not read as weights
        with pytest.raises(CheckpointError, match="not a tinyseg weights file"):
            read_weights(bad)

        adapter = TinySeg()
        adapter.load(LoadOptions(checkpoint=shipped_path))
        image, labels = phantom_image(0)
        rows, cols = np.nonzero(labels["organ"])
        box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=float)
        mask = adapter.predict(adapter.encode(image), [Prompt(box=box)]).masks[0]
    finally:
        sys.path.remove(str(EXAMPLE))
    grey = image.astype(np.float32).mean(axis=2) / 255
    smoothed = ndimage.uniform_filter(grey, 3, mode="constant")  # the 3x3 mean, zero padded as the conv
    inside = np.zeros_like(mask)
    inside[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    expected = inside & (smoothed > grey[inside].mean())
    assert np.mean(mask == expected) > 0.999  # equal but for float rounding at the threshold
    dice = 2 * (mask & labels["organ"]).sum() / (mask.sum() + labels["organ"].sum())
    assert dice > 0.8  # a real, if simple, segmenter
