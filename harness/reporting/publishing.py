"""What of a run may be published, and whether the run is whole.

A run's manifest (``run.json``) is written for the machine that made it: it holds the data root, the
checkpoint's path, the command line and the host names. A published site is read by anyone, so every
page and ``leaderboard.json`` show the manifest only through :func:`publishable`: host names are
dropped and every absolute path (``/…``, ``~/…``, ``file://…``, ``C:\\…``) becomes its last
component, wherever it stands (a whole value, ``--opt=/path`` in the command line, a path inside an
error text). Checkpoints and data stay identified by name and sha256, which the manifest records.
The rows go through :func:`publishable_cases`: error texts lose their paths, the ``host`` column its values.

A run is *incomplete* (:func:`completeness`) when its status is not ``complete``, when a session
never recorded its end (killed), or when units the plan held (``planned``) have no result; every page
then carries a banner "incomplete: N of M units".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from segbench.running.manifest import RunManifest, Session

HIDDEN_KEYS = frozenset({"host", "hostname", "node", "nodename"})
# An absolute path inside a string: a POSIX path (or ~/, ~user/) that starts a word, or after '=', a quote or
# a bracket (not after ':' or a letter, so URLs and "n/a" stay), a file:// URL, or a Windows drive path.
_PATH = re.compile(
    r"""file://[^\s'"]+"""
    r"""|(?<![\w.:/~\\-])~[\w.-]*/[^\s'"`,;()\[\]{}<>|]*"""
    r"""|(?<![\w.:/~\\-])/[^\s'"`,;()\[\]{}<>|]+"""
    r"""|(?<![\w])[A-Za-z]:\\[^\s'"`,;<>|]*"""
)


def last_component(path: str) -> str:
    """``/a/b/c.pth`` → ``c.pth``; ``~/data/`` → ``data``; a bare root stays what it is."""
    parts = [part for part in re.split(r"[/\\]", path.removeprefix("file://")) if part]
    return parts[-1] if parts else path


def scrub_text(text: str) -> str:
    """``text`` with every absolute path in it reduced to the path's last component."""
    return _PATH.sub(lambda match: last_component(match.group(0)), text)


def publishable(value: Any) -> Any:
    """A manifest (or any part of one) as it may be published: no host names, no absolute paths."""
    if isinstance(value, dict):
        return {
            scrub_text(key) if isinstance(key, str) else key: publishable(item)
            for key, item in value.items()
            if key not in HIDDEN_KEYS
        }
    if isinstance(value, list | tuple):
        return [publishable(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def publishable_cases(cases: pl.DataFrame) -> pl.DataFrame:
    """A run's rows as they may be published: error texts without machine paths, no host column values."""
    if "error" in cases.columns:
        errors = cases["error"].drop_nulls().unique().to_list()
        cases = cases.with_columns(
            pl.col("error").replace_strict(
                {error: scrub_text(error) for error in errors}, default=pl.col("error"), return_dtype=pl.String
            )
        )
    if "host" in cases.columns:
        cases = cases.with_columns(pl.lit(None, dtype=cases.schema["host"]).alias("host"))
    return cases


@dataclass(frozen=True)
class Completeness:
    """How much of its plan a run did."""

    run_id: str
    index: int  # 1-based position on the provenance page (runs.html#run-N)
    done: int  # planned units with a result (ok or failed)
    planned: int | None  # None: the run recorded no plan (a run of an older segbench that did not finish)
    reasons: tuple[str, ...]  # empty: the run is complete

    @property
    def complete(self) -> bool:
        return not self.reasons

    @property
    def banner(self) -> str:
        return f"incomplete: {self.done} of {self.planned if self.planned is not None else '?'} units"

    def record(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "units_done": self.done,
            "units_planned": self.planned,
            "reasons": list(self.reasons),
        }


def publishable_manifest(manifest: RunManifest) -> RunManifest:
    """A run's manifest as it may be published (:func:`publishable` over every record)."""
    return RunManifest.from_dict(publishable(manifest.to_dict()))


def completeness(run_id: str, index: int, manifest: RunManifest, cases: pl.DataFrame) -> Completeness:
    """Whether a run did its whole plan. Units are counted from ``planned`` (every case the plan held per
    adapter and task); a run without it counts its units by id against its last session's plan size."""
    have = cases.select("adapter", "task", "case_id").unique() if cases.height else None
    done_units = set(have.iter_rows()) if have is not None else set()
    planned = manifest.planned_units()
    sessions = manifest.sessions
    if planned is not None:
        total: int | None = len(planned)
        done = len(planned & done_units)
    else:
        done = cases["unit_id"].n_unique() if cases.height else 0
        last = sessions[-1] if sessions else Session()
        pending, skipped = last.pending_units, last.skipped_units
        total = pending + skipped if isinstance(pending, int) and isinstance(skipped, int) else None
        if total is None and manifest.status == "complete":
            total = done
    reasons = []
    if manifest.status != "complete":
        reasons.append(f"status '{manifest.status}'")
    unended = sum(s.ended is None for s in sessions)
    if unended:
        reasons.append(f"{unended} session(s) without an end")
    if total is not None and done < total:
        reasons.append(f"{total - done} planned unit(s) without a result")
    return Completeness(run_id, index, done, total, tuple(reasons))
