"""A third-party adapter, installed as a real package with an entry point, is found and run; the built-ins come
from segbench's own module list, each once, and every hook is documented."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import polars as pl

import segbench.adapters
from segbench import hookspecs, plugins

from .conftest import run_cli


def test_external_adapter_is_listed(plugin_path: str) -> None:
    listed = json.loads(run_cli("adapters", "--json", env={"PYTHONPATH": plugin_path}).stdout)
    clicks = next(a for a in listed if a["name"] == "clicks")
    assert clicks["family"] == "example" and clicks["capabilities"] == "box,point,iterative"


def test_external_adapter_runs_every_protocol_in_a_suite(plugin_path: str, tmp_path: Path) -> None:
    result = run_cli(
        "run", "--adapters", "clicks,box", "--out", str(tmp_path), "--no-progress", env={"PYTHONPATH": plugin_path}
    )
    cases = pl.read_parquet(Path(result.stdout.strip().splitlines()[-1]) / "cases.parquet")
    clicks = cases.filter(pl.col("adapter") == "clicks")
    assert (clicks["status"] == "ok").all()
    # it answers points, so it also gets the center-point and iterative protocols the box cannot take
    assert set(clicks["prompt"]) == {"box", "box_jitter5", "center_point", "iterative_box3"}
    assert set(cases.filter(pl.col("adapter") == "box")["prompt"]) == {"box", "box_jitter5"}
    iterative = clicks.filter(pl.col("prompt") == "iterative_box3").sort("step")
    assert iterative["step"].unique().to_list() == [0, 1, 2, 3]
    first = iterative.filter((pl.col("case_id") == "phantom-000") & (pl.col("label") == "organ"))
    clicks_per_step = [len(json.loads(p)[0].get("points", [])) for p in first["prompt_json"]]
    assert clicks_per_step == [0, 1, 2, 3]  # one correction click per step, on top of the box


def test_plugin_without_the_package_is_absent() -> None:
    listed = json.loads(run_cli("adapters", "--json").stdout)
    assert "clicks" not in {a["name"] for a in listed}


def test_every_hook_is_documented_and_every_built_in_implements_its_own() -> None:
    specs = [name for name in dir(hookspecs) if name.startswith("segbench_")]
    assert set(specs) == set(plugins.HOOKS) and set(plugins.DEFAULT_PLUGINS) <= set(specs)
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hook {name} has no docstring"
    manager = plugins.loaded_plugin_manager()
    assert not manager.broken and not manager.warnings
    for hook, modules in plugins.DEFAULT_PLUGINS.items():
        implementers = {impl.plugin_name for impl in getattr(manager.hook, hook).get_hookimpls()}
        assert set(modules) <= implementers, f"{hook}: {set(modules) - implementers} implement nothing"


def test_every_adapter_module_is_built_in_and_segbench_entry_points_are_not_registered_twice() -> None:
    adapters_dir = Path(segbench.adapters.__file__).parent
    registering = {
        f"segbench.adapters.{path.stem}"
        for path in adapters_dir.glob("*.py")
        if "def segbench_register_adapters" in path.read_text()
    }
    assert registering == set(plugins.ADAPTER_MODULES)  # a new module is seen without reinstalling
    builtin = {module for modules in plugins.DEFAULT_PLUGINS.values() for module in modules}
    own = [
        entry
        for group in plugins.ENTRY_POINT_GROUPS
        for entry in importlib.metadata.entry_points(group=group)
        if entry.dist is not None and entry.dist.name == "segbench"
    ]
    assert own and {entry.module for entry in own} <= builtin
    names = plugins.plugin_manager().list_name_plugin()
    assert not {entry.name for entry in own} & {name for name, _ in names}  # skipped: registered as modules
    assert plugins.adapters()  # an adapter registered twice would raise here


def test_model_code_kept_out_of_an_adapter_module_counts_in_its_fingerprint() -> None:
    from segbench.running.plan import adapter_code

    for name, model_module in [
        ("sam-med2d", "sam_med2d_net"),
        ("universeg", "universeg_net"),
        ("sam2.1-hiera-t", "sam2_video"),
        ("medsam2", "sam2_video"),
    ]:
        modules = adapter_code(plugins.adapter_class(name))["modules"]
        source = Path(segbench.adapters.__file__).parent / f"{model_module}.py"
        assert modules[f"segbench.adapters.{model_module}"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
