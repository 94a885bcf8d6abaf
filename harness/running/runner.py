"""Executing work units: read the case, open its session, run every protocol's steps, score them once.

A unit's :class:`~segbench.running.session.Session` (an :class:`~segbench.running.session.ImageSession`
encoded once, or a :class:`~segbench.running.volume_runner.VolumeSession` sharing a volume's encoder
passes) runs each protocol's steps the same way for every kind, prompted, in-context or volume: all
targets of the case in one ``predict`` call per step (in-context kinds: one support set per (label,
ensemble member), drawn from the task's pool, the members' outputs averaged into one mask per label).
The steps come back as records; :meth:`UnitRunner._scored` scores them, with the task's metrics from
the metric table (:mod:`segbench.measuring.metric_table`), into one row per (protocol, step, label).

:class:`UnitRunner` is what a worker holds: one loaded adapter and the task readers. It turns a
work unit into a :class:`~segbench.running.unit_result.UnitResult` (its rows, and its masks when the case
is one kept) and never raises for a bad case: the error is recorded in the unit's rows
(naming the file where a file is at fault) and the run goes on. Scoring is inside that handling (a
protocol whose metrics raise is a failed row of that protocol), and a case none of whose labels has a
pixel is one failed row saying so: prompted segmentation has nothing to prompt there, and a case that
vanished without a row would be silent.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from segbench import plugins
from segbench.data.case import Case
from segbench.data.given_prompts import given_prompts
from segbench.data.readers import Reader
from segbench.data.readers.phantom import phantom
from segbench.data.support_sets import SupportPool
from segbench.data.taskspec import TaskSpec
from segbench.errors import DataError, SegbenchError
from segbench.interface import Adapter, InputKind, MaskError, RawImage, Support
from segbench.measuring.cost import MachineProbe, current_rss_mb, peak_memory
from segbench.measuring.metric_table import MetricSpec, ScoringInputs, score, task_metrics
from segbench.measuring.metrics import image_diagonal_mm
from segbench.protocols.base import NOT_TAKEN, ProtocolInputs, Target
from segbench.protocols.prompts import ProtocolSpec, initial_prompt, parse_protocol, target_rng
from segbench.running import environment
from segbench.running.kept_masks import MaskSample, sampled_cases
from segbench.running.manifest import RunManifest
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.prediction_writers import Geometry, UnitPredictions, resolve_format
from segbench.running.rows import unit_row
from segbench.running.session import ImageSession, ProtocolRun, Session
from segbench.running.unit_result import UnitResult
from segbench.running.volume_runner import VolumeSession

NAN = float("nan")


# The start of the error of every row of an adapter whose load() (or warm-up) raised (segbench.running.executors.worker)
LOAD_FAILED = "adapter did not load: "


def error_text(error: BaseException) -> str:
    """One line for a row's ``error``: segbench's own errors (a DataError, a CheckpointError) and a
    MaskError as they are, else the type, message and the line that raised."""
    if isinstance(error, SegbenchError | MaskError):  # they say what is wrong; the harness line would mislead
        return str(error)
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" (at {frame.filename}:{frame.lineno})" if frame else ""
    return f"{type(error).__name__}: {error}{where}"


class RecordedError(SegbenchError):
    """An error already turned into its row's text (:func:`error_text`, which gives that text back as it is).
    What a protocol or a read raised is kept so: a traceback pins the frames (and their arrays) in memory,
    and an error sent to another process loses its frame (the text's ``at file:line``) and, for errors
    whose constructor takes other arguments than the message (DataError), cannot be rebuilt there."""

    def __init__(self, text: str):
        super().__init__(text)


def _no_ground_truth(spec: TaskSpec, case: Case) -> str:
    """The error of a case none of whose labels has a pixel: prompted segmentation has nothing to prompt
    (the empty-mask policy in :mod:`segbench.measuring.metrics`), so the case is a visible failed row, not 0 rows."""
    names = ", ".join(label.name for label in spec.labels)
    where = f"{case.sources[-1]}: " if case.sources else ""
    return f"{where}no ground truth in this case (every label's mask is empty: {names}): nothing to prompt"


def case_facts(case: Case) -> dict[str, Any]:
    """The columns every row of a case that was read carries, failed rows included: the unit of its
    distances and its image diagonal in that unit (the HD95 penalty)."""
    return {"unit": case.unit, "diagonal": image_diagonal_mm(case.shape, case.spacing)}


def actual_device(device: str) -> str:
    """The device as it runs: ``cuda`` becomes ``cuda:N`` (within this process's visible GPUs)."""
    if device == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device()}"
    return device


class UnitRunner:
    """Runs the units of one adapter in one process: the adapter is built and loaded once.

    The process's RSS just before ``load`` is the CPU memory baseline: a case's ``peak_mem_mb`` on the
    CPU is its peak RSS less that baseline (torch is imported before it is taken, so the library's own
    footprint is never charged to an adapter that does not use it)."""

    def __init__(self, plan: RunPlan, adapter_name: str):
        self.plan = plan
        self.setup = plan.adapters[adapter_name]
        self.adapter: Adapter = plugins.adapter_class(adapter_name)()
        self.rss_before_load = current_rss_mb()
        self.adapter.load(self.setup.options)
        self.device = actual_device(self.setup.options.device)
        self.threads = worker_threads()
        self.readers: dict[str, Reader] = {}
        self.pools: dict[str, SupportPool] = {}
        self.host = environment.host()
        self.gpu = environment.gpu_name(self.setup.options.device)
        self.scorer = UnitScorer(plan, RowFacts(self.host, self.gpu, self.device, self.threads))
        if plan.warmup:
            warm_up(self.adapter)
        self.probe = MachineProbe(self.setup.options.device)

    def close(self, last: bool = False) -> None:
        """Drop the model and return its GPU memory, so the next adapter is measured alone. ``last``: no
        adapter follows in this process, so on a CPU the garbage collector's full pass (0.1-0.4 s with
        the libraries' objects in memory) is left to Python."""
        del self.adapter
        if not (last and self.setup.options.device == "cpu"):
            release_device_memory(self.setup.options.device)

    def _reader(self, task: str) -> Reader:
        if task not in self.readers:
            self.readers[task] = self.plan.reader(task)
        return self.readers[task]

    def _pool(self, task: str) -> SupportPool:
        if task not in self.pools:
            spec, reader = self.plan.tasks[task], self._reader(task)
            if spec.support is None:
                raise DataError(spec.source, "a support protocol needs a [support] table in the task")
            pool = spec.support.split(reader.case_ids(), spec.source)[0]
            self.pools[task] = SupportPool(reader, pool, self.adapter.meta.input, spec.modality)
        return self.pools[task]

    def _row(self, unit: WorkUnit, /, **values: Any) -> dict[str, Any]:
        return self.scorer.row(unit, **values)

    def read(self, unit: WorkUnit) -> Case | Exception:
        """The unit's case, or the error reading it raised (given to :meth:`run`, which records it)."""
        return read_case(self._reader(unit.task), unit)

    def run(self, unit: WorkUnit, case: Case | Exception | None = None) -> UnitResult:
        """All rows of one unit, and its masks when the case is one kept; a failure anywhere becomes
        ``failed`` rows with the error. ``case`` is what :meth:`read` gave, when it was read ahead."""
        return self.infer(unit, case)()

    def infer(self, unit: WorkUnit, case: Case | Exception | None = None) -> Callable[[], UnitResult]:
        """The model's part of :meth:`run`: the session and every protocol's steps. What it returns does
        the rest (scoring, rows, kept masks) without the adapter, so it may run on another thread, after
        the next unit's model work, even after :meth:`close` (a pipelined executor scores in a pool)."""
        if case is None:
            case = self.read(unit)
        if isinstance(case, Exception):  # one bad case must not stop the run
            return _given(UnitResult([self._row(unit, status="failed", error=error_text(case))]))
        spec = self.plan.tasks[unit.task]
        facts = case_facts(case)
        labels = task_labels(spec, case)
        if not any(mask.any() for mask in labels.values()):
            return _given(UnitResult([self._row(unit, status="failed", error=_no_ground_truth(spec, case), **facts)]))
        values = {label.name: label.values for label in spec.labels}
        inputs = ProtocolInputs(
            self.plan.seed,
            unit.task,
            unit.case_id,
            labels,
            spec.instances,
            lambda: self._pool(unit.task),
            partial(given_prompts, case, values),
        )
        runs: list[tuple[ProtocolSpec, ProtocolRun | Exception]] = []
        probe_ms = self.probe.ms()
        with peak_memory(self.setup.options.device, self.rss_before_load) as peak:
            try:
                session = self._session(spec, case)
            except Exception as error:
                return _given(UnitResult([self._row(unit, status="failed", error=error_text(error), **facts)]))
            for protocol in self.plan.protocols_for(unit.adapter, unit.task):
                try:
                    runs.append((protocol, session.run(protocol, inputs)))
                except Exception as error:  # a protocol that cannot run fails its labels, not the case
                    runs.append((protocol, RecordedError(error_text(error))))
        measured = dict(peak_mem_mb=peak.device_mb, peak_rss_mb=peak.rss_mb, probe_ms=probe_ms, **facts)
        return Scoring(self.scorer, unit, case, runs, measured)

    def _session(self, spec: TaskSpec, case: Case) -> Session:
        device = self.setup.options.device
        image = adapter_input(self.adapter.meta.input, spec, case)
        return (
            VolumeSession(self.adapter, image, device) if case.ndim == 3 else ImageSession(self.adapter, image, device)
        )


def task_labels(spec: TaskSpec, case: Case) -> dict[str, np.ndarray]:
    """The case's masks of the labels the task asks (every label the case has, for ``*``)."""
    if any(label.name == "*" for label in spec.labels):
        return case.labels
    return {label.name: case.labels[label.name] for label in spec.labels if label.name in case.labels}


@dataclass(frozen=True)
class RowFacts:
    """What every row of a unit says about where its model ran: the host, the GPU, the device, the threads."""

    host: str
    gpu: str
    device: str
    threads: int


Runs = list[tuple[ProtocolSpec, ProtocolRun | Exception]]


class UnitScorer:
    """The half of a unit that needs no adapter: its rows (every metric scored here and only here), its
    kept masks and the predictions to write out, from the case, the protocol runs and ``facts``. It holds
    only the plan and caches made from it, so a process that has the plan makes the same rows
    (:mod:`segbench.running.executors.pipelined` scores in worker processes)."""

    def __init__(self, plan: RunPlan, facts: RowFacts, sampled: frozenset[tuple[str, str]] | None = None):
        self.plan = plan
        self.facts = facts
        self.sampled = sampled_cases(plan.units, plan.save_masks, plan.seed) if sampled is None else sampled
        self.metric_specs: dict[str, tuple[MetricSpec, ...]] = {}

    def row(self, unit: WorkUnit, /, **values: Any) -> dict[str, Any]:
        facts = self.facts
        return unit_row(self.plan, unit, facts.host, facts.gpu, device=facts.device, threads=facts.threads, **values)

    def finish(self, unit: WorkUnit, case: Case, runs: Runs, measured: dict[str, Any]) -> UnitResult:
        """The rows of a unit whose protocols ran: scored in protocol order, and its kept masks."""
        labels = task_labels(self.plan.tasks[unit.task], case)
        rows: list[dict[str, Any]] = []
        kept: dict[str, dict[str, np.ndarray]] = {}
        for protocol, run in runs:
            if isinstance(run, Exception):
                rows += self._failed(unit, protocol, labels, run)
                continue
            if run.steps:
                kept[protocol.name] = run.steps[-1].by_label
            try:
                rows += self._scored(unit, case, labels, run)
            except Exception as error:  # scoring included: a bad case fails its protocol, not the run
                rows.append(self.row(unit, prompt=protocol.name, status="failed", error=error_text(error)))
        for row in rows:
            row.update(measured)
        return UnitResult(rows, self._kept(unit, case, kept) if rows else None, self._to_write(unit, case, kept))

    def _to_write(self, unit: WorkUnit, case: Case, kept: dict[str, dict[str, np.ndarray]]) -> UnitPredictions | None:
        """The final masks the store writes out (``--write-predictions``), at the case's full size."""
        asked = self.plan.write_predictions
        if asked is None or not kept:
            return None
        spec = self.plan.tasks[unit.task]
        every = any(label.name == "*" for label in spec.labels)
        labels = sorted(case.labels) if every else [label.name for label in spec.labels]
        geometry = Geometry.of(case)
        return UnitPredictions(
            unit.adapter, unit.task, resolve_format(asked, spec.reader), geometry, tuple(labels), kept, every
        )

    def _metrics(self, task: str) -> tuple[MetricSpec, ...]:
        """The metrics a task's rows carry: the task's choice, else Dice, NSD and HD95."""
        if task not in self.metric_specs:
            spec = self.plan.tasks[task]
            self.metric_specs[task] = task_metrics(spec.metrics, spec.source)
        return self.metric_specs[task]

    def _scored(
        self, unit: WorkUnit, case: Case, labels: dict[str, np.ndarray], run: ProtocolRun
    ) -> list[dict[str, Any]]:
        """The rows of one protocol run: one per (step, label), every metric scored here and only here."""
        spec, metrics = self.plan.tasks[unit.task], self._metrics(unit.task)
        # volume adapters encode while they propagate: no separate encoder time (NaN) to add
        total_ms = (0.0 if np.isnan(run.encode_ms) else run.encode_ms) + sum(step.decode_ms for step in run.steps)
        limit_s = run.protocol.handler.time_limit_s
        over_limit = (
            None if limit_s is None or not run.steps else total_ms > 1000 * limit_s * len(run.steps[0].by_label)
        )
        rows = []
        for step in run.steps:
            for label, mask in step.by_label.items():
                scores = score(ScoringInputs(labels[label], mask, case.spacing, spec.nsd_tolerance), metrics)
                rows.append(
                    self.row(
                        unit,
                        label=label,
                        prompt=run.protocol.name,
                        step=step.index,
                        instances=step.instances(label),
                        **scores,
                        **_areas(labels[label], mask),
                        encode_ms=run.encode_ms,
                        decode_ms=step.decode_ms,
                        total_ms=total_ms,
                        prompt_json=json.dumps(step.ask.given(label), separators=(",", ":")),
                        support_size=step.ask.size,
                        over_time_limit=over_limit,
                        **step.ask.cost(label),
                    )
                )
        failed = [
            self.row(unit, label=label, prompt=run.protocol.name, status="failed", error=error)
            for label, error in sorted(run.failed.items())
        ]
        return rows + self._not_taken(unit, run) + failed

    def _not_taken(self, unit: WorkUnit, run: ProtocolRun) -> list[dict[str, Any]]:
        """A ``not_taken`` row per (label, step) the adapter could not take (a box-only model's clicks)."""
        kind = run.protocol.handler
        if not run.steps or len(run.steps) == kind.steps:
            return []
        reason = f"not taken: the adapter lacks {sorted(kind.requires - kind.first_requires)} for steps after the first"
        return [
            self.row(unit, label=label, prompt=run.protocol.name, step=index, status=NOT_TAKEN, error=reason)
            for index in range(len(run.steps), kind.steps)
            for label in run.steps[0].by_label
        ]

    def _failed(
        self, unit: WorkUnit, protocol: ProtocolSpec, labels: dict[str, np.ndarray], error: Exception
    ) -> list[dict[str, Any]]:
        """A failed row for each present label of a protocol that could not run."""
        return [
            self.row(
                unit,
                label=name,
                prompt=protocol.name,
                support_size=protocol.handler.support_size,
                status="failed",
                error=error_text(error),
            )
            for name in sorted(name for name, mask in labels.items() if mask.any())
        ]

    def _kept(self, unit: WorkUnit, case: Case, kept: dict[str, dict[str, np.ndarray]]) -> MaskSample | None:
        """The final masks of every protocol, when the case is one sampled to keep and has any."""
        if not kept or (unit.task, unit.case_id) not in self.sampled:
            return None
        try:
            return MaskSample.of(unit, case, kept)
        except Exception as error:  # a preview that cannot be made must not cost the case its scores
            warnings.warn(f"{unit.task}/{unit.case_id}: masks not kept ({error_text(error)})", stacklevel=1)
            return None


@dataclass
class Scoring:
    """A unit whose model work is done, waiting to be scored: calling it makes the unit's result
    (:meth:`UnitScorer.finish`), without the adapter, on any thread (what :meth:`UnitRunner.infer` gives).
    Its parts are plain data, so the pipelined executor can send all but the case (which the process that
    read it still holds) to another process: :meth:`ProtocolRun.for_scoring` leaves out what scoring never
    reads."""

    scorer: UnitScorer
    unit: WorkUnit
    case: Case
    runs: Runs
    measured: dict[str, Any]

    def __call__(self) -> UnitResult:
        return self.scorer.finish(self.unit, self.case, self.runs, self.measured)

    def runs_for_scoring(self) -> Runs:
        return [(protocol, run if isinstance(run, Exception) else run.for_scoring()) for protocol, run in self.runs]


def worker_threads() -> int:
    """The ``threads`` of a row: torch's intra-op threads where torch is loaded (an adapter that uses it,
    or ``--threads``); else the CPUs this process may run on (what torch would default to, near enough),
    without importing torch for an adapter that never calls it."""
    if environment.torch_loaded():
        import torch

        return int(torch.get_num_threads())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_case(reader: Reader, unit: WorkUnit) -> Case | Exception:
    """A unit's case from its task's reader, or the error that reading raised (recorded by the runner)."""
    try:
        return reader.read(unit.case_id)
    except Exception as error:  # one bad case must not stop the run
        return error


def _given(result: UnitResult) -> Callable[[], UnitResult]:
    return lambda: result


def adapter_input(kind: InputKind, spec: TaskSpec, case: Case) -> np.ndarray | RawImage:
    """What an adapter declaring ``kind`` is handed for ``case``: the 8-bit image after the task's intensity
    policy (``rgb8``, the image every reader makes), or the case's raw pixels with its spacing and the
    task's modality (``raw``). A case whose reader keeps no raw pixels is a DataError for a raw adapter
    (its row fails saying so): the harness never passes windowed pixels off as raw ones."""
    if kind == "rgb8":
        return case.image
    if case.raw is None:
        where = case.sources[0] if case.sources else case.case_id
        raise DataError(
            where, f"the adapter takes raw intensities, and reader '{spec.reader}' keeps none for this case"
        )
    return RawImage(case.raw, case.spacing, case.unit, spec.modality, case.affine)


def warm_up(adapter: Adapter) -> None:
    """One untimed encode and decode on a phantom image, so lazy initialisation (kernel selection,
    allocator growth, first-call caches) is not charged to the first case. The decode gets what the
    adapter takes: a box (or else a point) and, for in-context adapters, a support set."""
    image, masks = phantom(seed=0, index=0)
    given: Any = image if adapter.meta.input == "rgb8" else RawImage(image[..., 0], (1.0, 1.0), "px")
    state = adapter.encode(given)
    capabilities = adapter.meta.capabilities
    target = Target("warm-up", 0, masks["organ"])
    first = "box" if capabilities.box else "center_point" if capabilities.point else None
    prompts = [initial_prompt(parse_protocol(first), target, target_rng(0))] if first else None
    support = [Support([given], [masks["organ"]])] if capabilities.support_set else None
    if prompts or support:
        adapter.predict(state, prompts, support)


def release_device_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _areas(truth: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    return {"truth_area": int(np.count_nonzero(truth)), "pred_area": int(np.count_nonzero(predicted))}


def load_failures(frame: pl.DataFrame) -> dict[str, str]:
    """Adapter → its load error, for the adapters whose load failed (rows with the ``LOAD_FAILED`` error)."""
    if frame.is_empty():
        return {}
    failed = frame.filter(pl.col("error").str.starts_with(LOAD_FAILED))
    return dict(failed.group_by("adapter", maintain_order=True).agg(pl.col("error").first()).iter_rows())


def absent_labels(plan: RunPlan, frame: pl.DataFrame) -> list[str]:
    """A warning for each label a task declares that no ok row of the task has: the label is in none of
    the cases that were read (its values match nothing in any mask), so it has no row and no score."""
    notices = []
    for name, spec in plan.tasks.items():
        ok = frame.filter((pl.col("task") == name) & (pl.col("status") == "ok"))
        if ok.is_empty():
            continue
        seen = set(ok["label"].unique().to_list())
        for label in spec.labels:
            if label.name != "*" and label.name not in seen:
                cases = ok["case_id"].n_unique()
                notices.append(
                    f"task '{name}': label '{label.name}' is in none of the {cases} case(s) scored "
                    f"(values {list(label.values) if label.values else 'nonzero'} match no mask); "
                    f"it has no rows ({spec.source})"
                )
    return notices


def report_notices(plan: RunPlan, frame: pl.DataFrame, manifest: RunManifest) -> None:
    """At a run's end: print each adapter that did not load and each label in no case, on stderr, and
    record them in the manifest (``skipped`` and ``warnings``)."""
    for adapter, reason in load_failures(frame).items():
        manifest.skipped[adapter] = reason
        print(f"skipped: {adapter}: {reason}; its units are recorded as failed", file=sys.stderr)
    notices = absent_labels(plan, frame)
    for notice in notices:
        print(f"warning: {notice}", file=sys.stderr)
    manifest.warnings = notices
