"""The harness ceiling: how many rows a second segbench's own path can produce when the model costs nothing.

The ``box`` baseline (the prompt box, filled) and a ``null`` adapter registered here (the prompt box as
one slice assignment, no checks) run through :class:`~segbench.running.runner.UnitRunner` on generated
2D cases at 256², 512² and 1024² (an organ and a lesion each, the ``box`` protocol) and on one BraTS-size
155x240x240 volume (``slice_boxes``); each unit's rows are then written through the atomic store, as an
executor does. Every stage is wrapped in a CPU-time counter (``time.process_time``, exclusive: a stage
called inside another is charged to itself alone):

* read: the reader's ``read`` (generating the case: what a real reader spends decoding a file)
* encode / decode: the adapter's ``encode`` and ``predict`` (nothing, for these adapters)
* score: Dice, NSD and HD95 of every row
* store: ``RunStore.write_unit`` (a parquet part written, fsynced and renamed)
* probe: the machine probe's products (every 10 s, at most 1% of the wall time)
* other: the rest of the unit (prompts, masks by label, rows, timers, memory probes)

and printed as CPU-ms per row, with rows/s over wall time. The model-bound case: LiteMedSAM (its
bundled weights: random weights predict speckle, whose surfaces cost scoring what no real model's would)
on a few 256² cases, where the harness's share (everything but the adapter's own calls) must stay within
2% of the model's time.

    python -m pytest tests/benchmarks/test_harness_ceiling.py -o addopts="" -s
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segbench import plugins
from segbench.data.case import Case
from segbench.data.readers.base import Reader
from segbench.data.suites import Suite
from segbench.data.taskspec import load_task
from segbench.interface import Adapter, AdapterMeta, Capabilities, LoadOptions, Prediction, Prompt, Support
from segbench.running import runner as runner_module
from segbench.running.plan import RunOptions, make_plan
from segbench.running.runner import UnitRunner
from segbench.running.store import RunStore

STAGES = ("read", "encode", "decode", "score", "store", "probe", "other")
MODEL_BOUND_LIMIT = 0.02


class CeilingCases(Reader):
    """Generated cases of a fixed size: ``size`` (2D side or volume in-plane side), ``depth`` (0: 2D)."""

    DATA_KEYS = {"cases": "integer", "size": "integer", "depth": "integer"}

    def case_ids(self) -> list[str]:
        return [f"case-{i:03d}" for i in range(self.option("cases", int, default=4))]

    def read(self, case_id: str) -> Case:
        index, size, depth = int(case_id.rsplit("-", 1)[1]), self.option("size", int), self.option("depth", int, 0)
        rng = np.random.default_rng(index)
        shape = (depth, size, size) if depth else (size, size)
        grid = np.ogrid[tuple(slice(0, n) for n in shape)]
        centre = [n * rng.uniform(0.4, 0.6) for n in shape]
        radii = [n * f for n, f in zip(shape, (0.3, 0.25, 0.2)[-len(shape) :], strict=True)]
        organ = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        lesion = sum(((g - c) / (r / 4)) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        grey = (40 + 80 * organ - 40 * lesion + rng.normal(0, 6, shape)).clip(0, 255).astype(np.uint8)
        image = grey if depth else np.repeat(grey[..., None], 3, axis=-1)
        labels = {"organ": organ, "lesion": lesion & organ}
        return Case(case_id, image, {spec.name: labels[spec.name] for spec in self.task.labels}, (1.0,) * len(shape))


class NullAdapter(Adapter):
    """The prompt box as the mask and nothing else: the floor under any adapter's cost."""

    meta = AdapterMeta(
        name="null", family="baseline", version="1", description="the prompt box", capabilities=Capabilities(box=True)
    )

    def load(self, options: LoadOptions) -> None:
        self.options = options

    def encode(self, image: np.ndarray) -> tuple[int, ...]:
        return image.shape[:2]

    def predict(
        self, state: tuple[int, ...], prompts: Sequence[Prompt] | None = None, support: Sequence[Support] | None = None
    ) -> Prediction:
        assert prompts is not None
        masks = np.zeros((len(prompts), *state), dtype=bool)
        for mask, prompt in zip(masks, prompts, strict=True):
            assert prompt.box is not None
            x0, y0, x1, y1 = (int(v) for v in prompt.box)
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return Prediction(masks, None, [None] * len(prompts))


class Stages:
    """Exclusive CPU time per stage: a stage's time less that of the stages called inside it."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._stack.append([time.process_time(), 0.0])
        try:
            yield
        finally:
            start, inner = self._stack.pop()
            spent = time.process_time() - start
            self.cpu[name] += spent - inner
            if self._stack:
                self._stack[-1][1] += spent

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed


def write_task(directory: Path, name: str, size: int, depth: int, cases: int) -> Path:
    labels = 'organ = "nonzero"\n' + ('lesion = "nonzero"\n' if not depth else "")
    protocol = "slice_boxes" if depth else "box"
    text = (
        f'[task]\nname = "{name}"\nversion = "1"\ndescription = "ceiling"\nmodality = "synthetic"\nlicense = "n/a"\n'
        + ("dim = 3\n" if depth else "")
        + f'\n[data]\nreader = "ceiling"\ncases = {cases}\nsize = {size}\ndepth = {depth}\n'
        + f'\n[labels]\n{labels}\n[prompts]\nprotocols = ["{protocol}"]\n'
    )
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader and the null adapter registered for this test alone (the registries are cached dicts)."""
    monkeypatch.setitem(plugins.readers(), "ceiling", CeilingCases)
    monkeypatch.setitem(plugins.adapters(), "null", NullAdapter)


def measure(
    adapter: str, task_file: Path, out: Path, weights: str = "pretrained"
) -> tuple[int, float, dict[str, float], float]:
    """Rows, wall seconds, CPU seconds by stage, and the adapter's own wall seconds (encode + predict)."""
    spec = load_task(task_file)
    suite = Suite("ceiling", "", (adapter,), (spec.name,), None, 0, None, task_file)
    plan = make_plan(
        suite, {spec.name: spec}, RunOptions(device="cpu", weights=weights, run_id="ceiling", save_masks=0)
    )
    runner = UnitRunner(plan, adapter)
    runner.probe.ms()  # the machine probe's first product (then one every 10 s) is start-up, not per row
    stages = Stages()
    runner.probe._measure = stages.wrap("probe", runner.probe._measure)  # type: ignore[method-assign]
    model_wall = [0.0]
    reader = plan.reader(spec.name)
    reader.read = stages.wrap("read", reader.read)  # type: ignore[method-assign]
    runner.readers[spec.name] = reader

    def walled(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        timed = stages.wrap(name, function)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return timed(*args, **kwargs)
            finally:
                model_wall[0] += time.perf_counter() - start

        return call

    runner.adapter.encode = walled("encode", runner.adapter.encode)  # type: ignore[method-assign]
    runner.adapter.predict = walled("decode", runner.adapter.predict)  # type: ignore[method-assign]
    score = stages.wrap("score", runner_module.score)
    store = RunStore(out / adapter / spec.name)
    rows = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module, "score", score)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for unit in plan.units:
            with stages.stage("other"):
                result = runner.run(unit)
                with stages.stage("store"):
                    store.write_unit(unit.unit_id, result)
            unit_rows = result.rows
            assert all(row["status"] == "ok" for row in unit_rows), unit_rows[0].get("error")
            rows += len(unit_rows)
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    stages.cpu["other"] += cpu - sum(stages.cpu.values())  # process CPU outside any stage (none expected)
    return rows, wall, dict(stages.cpu), model_wall[0]


def table_line(name: str, rows: int, wall: float, cpu: dict[str, float]) -> str:
    per_row = "  ".join(f"{stage} {1000 * cpu.get(stage, 0.0) / rows:7.2f}" for stage in STAGES)
    return f"{name:<26} {rows:5d} rows {rows / wall:8.1f} rows/s | CPU-ms/row: {per_row}"


CASES_2D = {256: 24, 512: 16, 1024: 8}
VOLUME = (155, 240)  # depth, in-plane side: BraTS
if os.environ.get("SEGBENCH_CEILING_TINY"):  # scripts/gpu_check.py --dry-run: the steps, not the figures
    CASES_2D, VOLUME = {64: 2}, (8, 64)


@pytest.mark.parametrize("adapter", ["box", "null"])
def test_harness_ceiling(benchmark, ceiling: None, adapter: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    depth, side = VOLUME
    grid = [(f"{size}x{size}", size, 0, cases) for size, cases in CASES_2D.items()]
    grid.append((f"{depth}x{side}x{side}", side, depth, 1))
    lines = []

    def run_grid() -> None:
        for name, size, depth, cases in grid:
            task = write_task(tmp_path, f"ceiling-{size}-{depth}", size, depth, cases)
            rows, wall, cpu, _ = measure(adapter, task, tmp_path / "runs")
            benchmark.extra_info[name] = {"rows_per_s": rows / wall, **{k: 1000 * v / rows for k, v in cpu.items()}}
            lines.append(table_line(f"{adapter} {name}", rows, wall, cpu))

    benchmark.pedantic(run_grid, rounds=1, iterations=1)
    print("\n" + "\n".join(lines))


def test_model_bound_litemedsam(benchmark, ceiling: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """LiteMedSAM's harness share on 256² cases: wall time outside the adapter's calls over the time inside
    (CPU-ms per row by stage counts every thread, torch's pool too)."""
    task = write_task(tmp_path, "ceiling-litemedsam", 256, 0, 4)
    figures: list[tuple[int, float, dict[str, float], float]] = []
    benchmark.pedantic(lambda: figures.append(measure("litemedsam", task, tmp_path / "runs")), rounds=1)
    rows, wall, cpu, model = figures[0]
    share = (wall - model) / model
    benchmark.extra_info.update(harness_share=share, model_s=model, wall_s=wall)
    print(
        f"\n{table_line('litemedsam 256x256', rows, wall, cpu)}\n"
        f"litemedsam: model {model:.2f} s of {wall:.2f} s wall; the harness's share {share:+.2%} "
        f"(limit {MODEL_BOUND_LIMIT:.0%})"
    )
    assert share <= MODEL_BOUND_LIMIT
