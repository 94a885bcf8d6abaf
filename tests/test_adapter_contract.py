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
# adapters whose published network needs minutes a forward pass on a CPU even with random weights (and a
# GB to build): the named test runs the full contract on a small configuration of the same class
ON_A_SMALL_CONFIGURATION = {"nninteractive": "tests/test_nninteractive.py::test_the_adapter_keeps_the_contract"}
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
    if name in ON_A_SMALL_CONFIGURATION:
        return ("meta", "refused")
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
    pretrained = run_cli("check-adapter", "tinyseg", "--weights", "pretrained", env=env).stdout
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
    """The bundled checkpoint holds exactly what make_weights.py writes; loaded (weights_only), the model
    computes its documented rule, checked here in numpy: inside the box, brighter than the box's mean."""
    torch = pytest.importorskip("torch")
    package = EXAMPLE / "segbench_example_adapter"
    subprocess.run(
        [sys.executable, "-m", "segbench_example_adapter.make_weights", str(tmp_path / "tinyseg-v1.pt")],
        check=True,
        env={"PYTHONPATH": str(EXAMPLE), "PATH": ""},
        capture_output=True,
    )
    from segbench.weights.checkpoints import read_state_dict

    written, shipped = (
        read_state_dict(tmp_path / "tinyseg-v1.pt"),
        read_state_dict(package / "weights" / "tinyseg-v1.pt"),
    )
    assert written.keys() == shipped.keys() and all(torch.equal(written[k], shipped[k]) for k in written)

    sys.path.insert(0, str(EXAMPLE))
    try:
        from segbench_example_adapter.tinyseg import TinySeg

        from segbench.interface import LoadOptions, Prompt

        adapter = TinySeg()
        adapter.load(LoadOptions(checkpoint=package / "weights" / "tinyseg-v1.pt"))
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
