"""A third-party adapter, installed as a real package with an entry point, is found and run; the built-ins come
from segbench's own module list, each once, and every hook is documented. The host calls hooks through
pluggy one plugin at a time: what a plugin registers is checked, a plugin that breaks the contract is
listed as broken and the others still register; a report plugin adds a page to the site."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

import segbench.adapters
from segbench import hookimpl, hookspecs, plugins
from segbench.errors import SegbenchError
from segbench.interface import Adapter

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


def test_every_adapter_module_is_built_in_and_segbench_declares_no_entry_points() -> None:
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
    assert not own  # entry points are for third parties: the built-ins come from DEFAULT_PLUGINS alone
    assert builtin >= set(plugins.ADAPTER_MODULES)
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


DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_hook_is_documented_in_the_plugin_guide() -> None:
    """As datasette's test_plugin_hooks_are_documented: each hook has a section of docs/plugins.md."""
    guide = (DOCS / "plugins.md").read_text()
    headings = {line.lstrip("#").strip().strip("`") for line in guide.splitlines() if line.startswith("### ")}
    specs = {name for name in dir(hookspecs) if name.startswith("segbench_")}
    assert specs <= headings, f"hooks without a section in docs/plugins.md: {sorted(specs - headings)}"
    assert not {h for h in headings if h.startswith("segbench_")} - specs, (
        "docs/plugins.md documents a hook that is gone"
    )


class _Plugin:
    """A plugin object registering ``values`` (or raising ``error``) from the adapter hook."""

    def __init__(self, *values: object, error: Exception | None = None):
        self.values, self.error = values, error

    @hookimpl
    def segbench_register_adapters(self, register: Callable[[object], None]) -> None:
        for value in self.values:
            register(value)
        if self.error:
            raise self.error


def _adapter(name: str) -> type[Adapter]:
    """The box baseline under another name."""
    box = plugins.adapter_class("box")
    return type(f"Renamed_{name}", (box,), {"meta": dataclasses.replace(box.meta, name=name)})


def _manager(**named: _Plugin) -> plugins.SegbenchPluginManager:
    manager = plugins.SegbenchPluginManager()
    for name, plugin in named.items():
        manager.register(plugin, name=name)
    return manager


def test_hooks_are_called_through_pluggy_and_each_plugin_is_isolated() -> None:
    called: list[tuple[str, list[str]]] = []
    manager = _manager(
        good=_Plugin(_adapter("good-one")),
        not_a_class=_Plugin(_adapter("lost-with-its-plugin"), "clicks"),
        raising=_Plugin(_adapter("also-lost"), error=RuntimeError("offline")),
    )
    manager.add_hookcall_monitoring(
        lambda hook, impls, kwargs: called.append((hook, [impl.plugin_name for impl in impls])), lambda *a: None
    )
    found = plugins.collect(plugins.ADAPTERS, manager)
    assert "good-one" in found and {"box", "otsu"} <= set(found)  # the built-ins joined, as in plugin_manager()
    assert not {"lost-with-its-plugin", "also-lost"} & set(found)  # a broken plugin registers nothing
    broken = {b.name: b for b in manager.broken}
    assert set(broken) == {"not_a_class", "raising"}
    assert broken["raising"].error == "RuntimeError: offline"
    assert "plugin 'not_a_class'" in broken["not_a_class"].error
    assert "registered 'clicks', which is not a subclass of segbench.interface.Adapter" in broken["not_a_class"].error
    # every plugin's hook went through pluggy's caller, alone
    assert all(hook == "segbench_register_adapters" and len(impls) == 1 for hook, impls in called)
    assert {"good", "not_a_class", "raising", "segbench.adapters.baselines"} <= {impls[0] for _, impls in called}


def test_a_name_registered_by_two_plugins_names_both() -> None:
    manager = _manager(lab_a=_Plugin(_adapter("twin")), lab_b=_Plugin(_adapter("twin")))
    with pytest.raises(SegbenchError, match=r"'twin' is registered twice \(lab_a and lab_b\)"):
        plugins.collect(plugins.ADAPTERS, manager)


def test_registries_check_what_they_are_given() -> None:
    class Readers:
        @hookimpl
        def segbench_register_readers(self, register: Callable[[str, object], None]) -> None:
            register("dict-reader", dict)

    class Metrics:
        @hookimpl
        def segbench_register_metrics(self, register: Callable[[object], None]) -> None:
            register({"name": "dice2"})

    manager = plugins.SegbenchPluginManager()
    manager.register(Readers(), name="readers_lab")
    manager.register(Metrics(), name="metrics_lab")
    assert "dict-reader" not in plugins.collect(plugins.READERS, manager)
    assert "dice" in plugins.collect(plugins.METRICS, manager)
    errors = {b.name: b.error for b in manager.broken}
    assert "registered dict, which is not a subclass of segbench.data.readers.base.Reader" in errors["readers_lab"]
    assert "which is not an instance of segbench.measuring.metric_table.MetricSpec" in errors["metrics_lab"]


class _GalleryPlugin:
    """A report plugin adding a page, one file per task, with a link in the navigation."""

    def __init__(self, templates: Path):
        self.templates = templates

    @hookimpl
    def segbench_report_template_dirs(self) -> list[str]:
        return [str(self.templates)]

    @hookimpl
    def segbench_register_pages(self, register: Callable[[object], None]) -> None:
        from segbench.reporting.site_pages import Page

        register(
            Page(
                "gallery",
                "gallery.html",
                lambda site: [(f"gallery-{task.slug}.html", {"task": task}) for task in site.tasks],
                nav="Gallery",
            )
        )


@pytest.fixture(scope="module")
def box_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = run_cli("run", "--adapters", "box", "--limit", "1", "--out", str(out), "--no-progress")
    return Path(result.stdout.strip().splitlines()[-1])


def test_a_report_plugin_adds_a_page_to_the_site(box_run: Path, tmp_path: Path) -> None:
    from segbench.reporting.report import SITE_MANIFEST, build_site

    run = box_run
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "gallery.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>Gallery of {{ task.name }}</h1>{% endblock %}'
    )
    plugin = _GalleryPlugin(templates)
    plugins.report_plugin_manager().register(plugin, name="gallery_lab")
    try:
        assert list(plugins.pages()) == ["index", "task", "cases", "adapter", "runs", "zero-shot", "gallery"]
        index = build_site([run], tmp_path / "site")
    finally:
        plugins.report_plugin_manager().unregister(plugin)
    site = index.parent
    listed = json.loads((site / SITE_MANIFEST).read_text())["files"]
    tasks = json.loads((site / "leaderboard.json").read_text())["tasks"]
    assert tasks
    for task in tasks:
        page = site / f"gallery-{task['page'].removeprefix('task-')}"
        assert page.name in listed and f"<h1>Gallery of {task['name']}</h1>" in page.read_text()
    first = f"gallery-{tasks[0]['page'].removeprefix('task-')}"
    assert f'<a href="{first}">Gallery</a>' in index.read_text()  # every page links to it
    # without the plugin, the next build removes its files (they were listed as the build's own)
    build_site([run], site)
    assert not list(site.glob("gallery-*")) and "Gallery" not in index.read_text()


def test_two_pages_writing_one_file_stop_the_build(box_run: Path, tmp_path: Path) -> None:
    from segbench.reporting.report import build_site
    from segbench.reporting.site_pages import Page

    class Clash:
        @hookimpl
        def segbench_register_pages(self, register: Callable[[object], None]) -> None:
            register(Page("my-runs", "runs.html", lambda site: [("runs.html", {})]))

    plugin = Clash()
    plugins.report_plugin_manager().register(plugin, name="clash_lab")
    try:
        with pytest.raises(SegbenchError, match="page 'my-runs' writes runs.html, which the page 'runs' writes"):
            build_site([box_run], tmp_path / "site")
    finally:
        plugins.report_plugin_manager().unregister(plugin)
