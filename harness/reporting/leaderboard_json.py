"""``leaderboard.json``: the site's figures for machines, beside the HTML.

Every number the pages show is here with its uncertainty (``mean``, ``low``, ``high`` of the 95%
bootstrap CI); what was not measured is ``null``. ``metrics`` describes the metric table (name, label,
unit, direction, digits, summary, edge cases, penalty); every table row carries each of them under its
name: a ``mean`` metric as an estimate, a ``median`` one as ``median``, ``low``, ``high``, and ``null``
where the task's rows did not carry the metric (never 0). Pages are named relative to the site folder and,
with ``--base-url``, also as absolute URLs. Each run says whether it is complete (``complete``,
``units_done`` of ``units_planned``); ``complete`` at the top is false when any run is not.

The document's shape is ``segbench/schemas/leaderboard.schema.json`` (JSON Schema 2020-12), shipped
with the package and checked against a real build in the tests; :data:`SCHEMA` names its version.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

from segbench.measuring.metric_table import HEADLINE, MetricSpec
from segbench.reporting.aggregate import Estimate
from segbench.reporting.pages import AdapterPage, Overview, PromptSection, RankedTable, Site, TaskPage
from segbench.reporting.publishing import Completeness
from segbench.reporting.ranking import RankedRow

SCHEMA = "segbench-leaderboard/2"
RUN_FIELDS = ("run_id", "suite", "created", "status", "segbench_version", "config_hash", "git")


def schema() -> dict[str, Any]:
    """The JSON Schema of ``leaderboard.json`` that this version writes."""
    path = resources.files("segbench.reporting") / "schemas" / "leaderboard.schema.json"
    return json.loads(path.read_text("utf-8"))


def _number(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _estimate(estimate: Estimate) -> dict[str, float | None]:
    return {"mean": _number(estimate.mean), "low": _number(estimate.low), "high": _number(estimate.high)}


def _metric_value(spec: MetricSpec, estimate: Estimate) -> dict[str, float | None]:
    if spec.summary == "median":
        return {"median": _number(estimate.mean), "low": _number(estimate.low), "high": _number(estimate.high)}
    return _estimate(estimate)


def metric_record(spec: MetricSpec) -> dict[str, Any]:
    """What the document says of one metric of the table."""
    return {
        "name": spec.name,
        "label": spec.label,
        "unit": spec.unit,
        "higher_is_better": spec.higher_is_better,
        "digits": spec.digits,
        "summary": spec.summary,
        "edge_cases": spec.edge_cases,
        "penalty": spec.penalty,
        "headline": spec.name == HEADLINE,
    }


def _row(ranked: RankedRow, table_metrics: tuple[MetricSpec, ...], metrics: tuple[MetricSpec, ...]) -> dict[str, Any]:
    """One adapter's row of a table: the figures by the aggregation rule (``aggregation_rule`` of the
    document), its rank (shared where the paired test cannot separate it from the one above), rank
    interval, and the penalised pairs (failed, missing) beside the mean. Every metric of the site's table
    (``metrics``) is a key; those the table lacks (``table_metrics``) are null."""
    row = ranked.row
    comparison = ranked.vs_next
    present = {spec.name for spec in table_metrics}
    return {
        **{spec.name: _metric_value(spec, row.metric(spec.name)) if spec.name in present else None for spec in metrics},
        "rank": ranked.rank,
        "shared_rank": ranked.shared,
        "rank_interval": None if ranked.rank_low is None else [ranked.rank_low, ranked.rank_high],
        "baseline": row.baseline,
        "adapter": row.adapter,
        "weights": row.weights,
        "pooled_dice": None if row.pooled is None else _estimate(row.pooled),
        "hd95_empty_predictions": row.hd95_empty,
        "unit": row.unit,
        "throughput_cases_per_s": _number(row.throughput),
        "median_latency_ms": _number(row.latency_ms),
        "peak_memory_mb": _number(row.peak_mem_mb),
        "slow_machine_cases": row.slow_cases,
        "cases": row.cases,
        "pairs": row.pairs,
        "failures": row.failures,
        "failed": row.failed,
        "missing": row.missing,
        "vs_next": None
        if comparison is None
        else {"pairs": comparison.pairs, "p_value_holm": comparison.p_value, "significant": comparison.significant},
    }


def _table(table: RankedTable, metrics: tuple[MetricSpec, ...]) -> list[dict[str, Any]]:
    return [_row(ranked, table.metrics, metrics) for ranked in table.rows]


def _overview(site: Site, matrix: Overview | None) -> dict[str, Any] | None:
    """The overview matrix: columns (task, protocol, label; label null for the task's headline), and per
    adapter one cell per column and its mean rank over the headline columns it is ranked in; each cell
    says whether the pair is zero-shot (``zero_shot``: true, false, or null for unknown; reporting/cards.py)."""
    if matrix is None:
        return None
    columns = matrix.columns
    return {
        "aggregation_rule": site.rule,
        "columns": [{"task": c.task.name, "prompt": c.prompt, "label": c.label} for c in columns],
        "rows": [
            {
                "adapter": r.adapter,
                "baseline": r.baseline,
                "mean_rank": _number(r.mean_rank),
                "mean_rank_over": r.ranked_in,
                "cells": [
                    None
                    if cell is None
                    else {
                        "rank": cell.rank,
                        "shared_rank": cell.shared,
                        "dice": _estimate(cell.row.dice),
                        "failures": cell.row.failures,
                        "zero_shot": site.zero_shot(r.adapter, column.task.name),
                    }
                    for cell, column in zip(r.cells, columns, strict=True)
                ],
            }
            for r in matrix.rows
        ],
    }


def _section(section: PromptSection, metrics: tuple[MetricSpec, ...]) -> dict[str, Any]:
    return {
        "prompt": section.prompt,
        "rows": _table(section.table, metrics),  # the headline: macro mean over labels
        "labels": {table.label: _table(table, metrics) for table in section.label_tables},
        "drilldown": section.overlays.record(),
    }


class Urls:
    def __init__(self, base_url: str | None):
        self.base_url = base_url

    def __call__(self, page: str) -> dict[str, str]:
        return {"page": page, **({"url": f"{self.base_url}/{page}"} if self.base_url else {})}


def _task(task: TaskPage, urls: Urls, metrics: tuple[MetricSpec, ...]) -> dict[str, Any]:
    return {
        "name": task.name,
        **urls(f"task-{task.slug}.html"),
        "family": task.family,
        "info": task.info,
        "metrics": [spec.name for spec in task.metrics],
        "protocols": [_section(section, metrics) for section in task.sections],
        "iterative": [
            {
                "prompt": s.prompt,
                "curves": [
                    {
                        "adapter": c.adapter,
                        "steps": list(c.steps),
                        "dice": [_estimate(e) for e in c.dice],
                        "dsc_auc": _estimate(c.auc) if c.auc else None,
                        "pairs": c.pairs,
                        "click_steps": list(c.click_steps),
                        "noc": [
                            {"threshold": n.threshold, "clicks": _estimate(n.mean), "never": n.never, "pairs": n.pairs}
                            for n in c.noc
                        ],
                        "interactions": [_number(v) for v in c.interactions],
                        "prompted_slices": [_number(v) for v in c.slices],
                        "not_taken": c.not_taken,
                    }
                    for c in s.curves
                ],
                "not_taken": s.not_taken,
                "cases": [
                    {
                        "adapter": case.adapter,
                        "case_id": case.case_id,
                        "classes": case.classes,
                        "dsc": [_number(v) for v in case.dsc],
                        "nsd": [_number(v) for v in case.nsd],
                        "DSC_AUC": _number(case.dsc_auc),
                        "NSD_AUC": _number(case.nsd_auc),
                        "DSC_Final": _number(case.dsc_final),
                        "NSD_Final": _number(case.nsd_final),
                        "seconds": _number(case.seconds),
                        "over_time_limit": case.over_time_limit,
                    }
                    for case in s.cases
                ],
            }
            for s in task.iterative
        ],
        "cost": [
            {
                "adapter": c.adapter,
                "prompt": c.prompt,
                "steps": list(c.steps),
                "interactions": [_number(v) for v in c.interactions],
                "prompted_slices": [_number(v) for v in c.slices],
                "dice": [_estimate(e) for e in c.dice],
            }
            for c in task.cost
        ],
        "support": [
            {
                "adapter": c.adapter,
                "protocol": c.protocol,
                "sizes": list(c.sizes),
                "dice": [_estimate(e) for e in c.dice],
            }
            for c in task.support
        ],
    }


def _card(facts: dict[str, Any]) -> dict[str, Any]:
    """The adapter's model card: measured size (params, FLOPs and what they were counted on), licence,
    links, checkpoint and the training sets with their source; null where the run did not record it."""
    card = facts.get("card") or {}
    measured = facts.get("measured") or {}
    spec = facts.get("checkpoint_spec") or {}
    return {
        "params": measured.get("params"),
        "flops": measured.get("flops"),
        "flops_per": measured.get("per"),
        "flops_sample": measured.get("sample"),
        "torch": measured.get("torch"),
        "license": facts.get("license"),
        "paper": card.get("paper") or None,
        "code": card.get("code") or None,
        "checkpoint": {"name": spec.get("name"), "filename": spec.get("filename"), "sha256": spec.get("sha256") or None}
        if spec
        else None,
        "trained_on": card.get("trained_on") if card else None,
        "trained_on_complete": card.get("trained_on_complete") if card else None,
        "trained_on_source": card.get("trained_on_source") or None,
    }


def _adapter(page: AdapterPage, urls: Urls) -> dict[str, Any]:
    return {
        "name": page.name,
        **urls(f"adapter-{page.slug}.html"),
        "adapter": page.adapter,
        "runs": [run_id for _, run_id in page.runs],
        "facts": page.facts,
        "card": _card(page.facts),
    }


def _run(manifest: dict[str, Any], state: Completeness) -> dict[str, Any]:
    """A run's record: its identity (from the publishable manifest) and how complete it is."""
    return {**{key: manifest.get(key) for key in RUN_FIELDS}, **state.record()}


def document(site: Site, title: str, base_url: str | None, version: str, states: list[Completeness]) -> dict[str, Any]:
    """The whole ``leaderboard.json``; ``states`` says per run, in the order of ``site.runs``, how complete it is."""
    urls = Urls(base_url)
    return {
        "schema": SCHEMA,
        "title": title,
        "generator": f"segbench {version}",
        **({"base_url": base_url} if base_url else {}),
        "complete": all(state.complete for state in states),
        "runs": [_run(run, state) for run, state in zip(site.runs, states, strict=True)],
        "metrics": [metric_record(spec) for spec in site.metrics],
        "tasks": [_task(task, urls, site.metrics) for task in site.tasks],
        "adapters": [_adapter(page, urls) for page in site.adapters],
        "overview": _overview(site, site.overview),
        "zero_shot_overview": _overview(site, site.zero_shot_overview),
    }
