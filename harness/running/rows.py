"""The result row: one per (run, adapter, task, case, label, prompt protocol, step), declared once.

Every column is declared here with its polars type and the value a row has when nothing sets it; the
store's schema (:func:`case_schema`, the columns and types of ``cases.parquet`` and of every part) and
the runner's rows (:func:`unit_row`) both derive from this one list, so a column cannot be added to one
and forgotten in the other. The metric columns are not listed: there is one ``Float64`` column per
metric of the metric table (:func:`segbench.plugins.metrics`, named ``spec.name``, NaN until scored),
placed after ``instances``: Dice, NSD and HD95 in every row (the leaderboard's defaults), then each
other metric that a row carries (a task's ``[evaluation] metrics``), in the table's order. So a metric
added by a plugin gets its column without a change here, and a run that never scores it has none.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from segbench import plugins
from segbench.measuring.metric_table import DEFAULT_NAMES

if TYPE_CHECKING:
    from segbench.running.plan import RunPlan, WorkUnit

NAN = float("nan")


@dataclass(frozen=True)
class Column:
    """One row column: its name, polars type and the value of a row that does not set it."""

    name: str
    dtype: Any  # a polars data type (pl.String, pl.Int32, ...)
    default: Any = None


# the columns before the metric columns: who made the row and what it scores
IDENTITY = (
    Column("run_id", pl.String),
    Column("unit_id", pl.String),
    Column("adapter", pl.String),
    Column("task", pl.String),
    Column("task_version", pl.String),
    Column("case_id", pl.String),
    Column("label", pl.String, "*"),  # "*": the row is the whole unit's (a case that failed before any label)
    Column("prompt", pl.String, "*"),
    Column("step", pl.Int32, 0),
    Column("instances", pl.Int32, 0),
)
# the columns after the metric columns: distances' unit, areas, cost, where it ran, status
FACTS = (
    Column("unit", pl.String),  # "mm": the case's spacing came from the file or the task; "px": assumed 1.0 a pixel
    Column("diagonal", pl.Float64, NAN),  # the image extent's diagonal in ``unit``: HD95 of an empty mask
    Column("truth_area", pl.Int64),  # foreground pixels/voxels of the ground truth (label, step); null on failed rows
    Column("pred_area", pl.Int64),  # ... and of the prediction (0: an empty prediction)
    Column("encode_ms", pl.Float64, NAN),
    Column("decode_ms", pl.Float64, NAN),
    Column("total_ms", pl.Float64, NAN),
    Column(
        "peak_mem_mb", pl.Float64, NAN
    ),  # the model's: CUDA allocator peak; on CPU peak RSS less the RSS before load
    Column("peak_rss_mb", pl.Float64, NAN),  # the whole process's peak resident set
    Column("probe_ms", pl.Float64, NAN),  # the machine's speed around the case (segbench.measuring.cost.MachineProbe)
    Column("device", pl.String),  # the device the case ran on ("cpu", "cuda:0")
    Column("threads", pl.Int32),  # torch.get_num_threads() in the worker that ran the case
    Column("host", pl.String),
    Column("gpu", pl.String),  # the GPU's name, "" on a CPU
    Column("weights", pl.String),
    Column("status", pl.String, "ok"),
    Column("error", pl.String),
    Column("prompt_json", pl.String),
    Column("support_size", pl.Int32),  # examples per support set (in-context protocols); null for prompt protocols
    Column("input", pl.String, "rgb8"),  # what the adapter's encoders got (AdapterMeta.input): "rgb8" or "raw"
    # the interaction cost of the step, what the protocol gave the label's targets so far (Ask.cost): boxes,
    # clicks (points) and slices carrying either; null on failed rows and on rows of runs before them
    Column("boxes", pl.Int32),
    Column("clicks", pl.Int32),
    Column("prompted_slices", pl.Int32),
    # the case's model time (total_ms) over its protocol's limit (ProtocolKind.time_limit_s, per label: the
    # CVPR 2025 challenge's 90 s per class); null where the protocol sets none
    Column("over_time_limit", pl.Boolean),
    # the drawn part of the step's cost (Ask.cost): scribbles and lassos so far (nnInteractive's kinds); they
    # count in prompted_slices too; null on failed rows and on rows of runs before them
    Column("scribbles", pl.Int32),
    Column("lassos", pl.Int32),
)


def metric_columns(carried: Collection[str] = ()) -> tuple[Column, ...]:
    """A ``Float64`` column, NaN until the row is scored, for Dice, NSD and HD95 and for each other metric
    of the table named in ``carried``."""
    names = [*DEFAULT_NAMES, *(name for name in plugins.metrics() if name in carried and name not in DEFAULT_NAMES)]
    return tuple(Column(name, pl.Float64, NAN) for name in names)


def columns(carried: Collection[str] = ()) -> tuple[Column, ...]:
    """Every column of a row, in the order of ``cases.parquet`` (``carried``: see :func:`metric_columns`)."""
    return (*IDENTITY, *metric_columns(carried), *FACTS)


def case_schema(carried: Collection[str] = ()) -> dict[str, Any]:
    """Column name → polars type: the schema of ``cases.parquet`` and of every part whose rows carry the
    metrics of ``carried`` beyond the defaults."""
    return {column.name: column.dtype for column in columns(carried)}


def row_defaults() -> dict[str, Any]:
    """Column name → the value of a row that does not set it (no scores, status ``ok``)."""
    return {column.name: column.default for column in columns()}


def unit_row(plan: RunPlan, unit: WorkUnit, host: str, gpu: str, /, **values: Any) -> dict[str, Any]:
    """A row of ``unit`` run on ``host``/``gpu``: every column at its default, the unit's identity, then
    ``values`` (positional-only parameters: ``unit`` is also a column, the unit of distances). Executors
    use it to record a unit whose worker died as ``failed`` (its case unread: no unit, no diagonal)."""
    setup = plan.adapters[unit.adapter]
    row = row_defaults()
    row.update(
        run_id=plan.run_id,
        unit_id=unit.unit_id,
        adapter=unit.adapter,
        task=unit.task,
        task_version=plan.tasks[unit.task].version,
        case_id=unit.case_id,
        device=setup.options.device,
        host=host,
        gpu=gpu,
        weights=setup.weights,
    )
    adapter = plugins.adapters().get(unit.adapter)
    if adapter is not None:  # a plan's adapters are registered; a row made for a test's plan may name none
        row["input"] = adapter.meta.input
    row.update(values)
    return row
