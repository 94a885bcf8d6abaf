"""The results store: ``<out>/<run-id>/run.json`` (the manifest) and ``cases.parquet`` (the rows).

Writes are append-only and atomic: each finished work unit is written to ``parts/<unit>.<status>.parquet``
through a temporary file and a rename, so a killed run loses at most the unit in flight, and a rerun
into the same directory skips every unit that has a part. ``cases.parquet`` is the parts merged and
sorted, rewritten (atomically) at the end of every run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from segbench.errors import SegbenchError
from segbench.samples import SAMPLE_KEY, MaskSample

# One row per (run, adapter, task, case, label, prompt protocol, step).
CASE_SCHEMA: dict[str, Any] = {
    "run_id": pl.String,
    "unit_id": pl.String,
    "adapter": pl.String,
    "task": pl.String,
    "task_version": pl.String,
    "case_id": pl.String,
    "label": pl.String,
    "prompt": pl.String,
    "step": pl.Int32,
    "instances": pl.Int32,
    "dice": pl.Float64,
    "nsd": pl.Float64,
    "hd95": pl.Float64,  # in ``unit``, as is the NSD tolerance
    "unit": pl.String,  # "mm": the case's spacing came from the file or the task; "px": assumed 1.0 a pixel
    "diagonal": pl.Float64,  # the image extent's diagonal in ``unit``: HD95 of an empty mask, the failure penalty
    "truth_area": pl.Int64,  # foreground pixels/voxels of the ground truth (label, step); null on failed rows
    "pred_area": pl.Int64,  # ... and of the prediction (0: an empty prediction)
    "encode_ms": pl.Float64,
    "decode_ms": pl.Float64,
    "total_ms": pl.Float64,
    "peak_mem_mb": pl.Float64,  # the model's: CUDA allocator peak; on CPU peak RSS less the RSS before load
    "peak_rss_mb": pl.Float64,  # the whole process's peak resident set
    "probe_ms": pl.Float64,  # the machine's speed around the case (segbench.measure.MachineProbe)
    "device": pl.String,  # the device the case ran on ("cpu", "cuda:0")
    "threads": pl.Int32,  # torch.get_num_threads() in the worker that ran the case
    "host": pl.String,
    "gpu": pl.String,  # the GPU's name, "" on a CPU
    "weights": pl.String,
    "status": pl.String,
    "error": pl.String,
    "prompt_json": pl.String,
    "support_size": pl.Int32,  # examples per support set (in-context protocols); null for prompt protocols
}
SORT_KEY = ["adapter", "task", "case_id", "label", "prompt", "step"]
STATUSES = ("ok", "failed")


def _atomic_write_bytes(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_with(path: Path, write: Any) -> None:
    with path.open("wb") as handle:
        write(handle)


def rows_frame(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{k: row.get(k) for k in CASE_SCHEMA} for row in rows], schema=CASE_SCHEMA)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows written by an older segbench, with the columns added since then (as nulls), in schema order."""
    missing = [pl.lit(None, dtype=dtype).alias(name) for name, dtype in CASE_SCHEMA.items()
               if name not in frame.columns]
    if not missing:
        return frame
    extra = [name for name in frame.columns if name not in CASE_SCHEMA]
    return frame.with_columns(missing).select([*CASE_SCHEMA, *extra])


class RunStore:
    """One run directory."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.parts = self.dir / "parts"
        self.manifest_path = self.dir / "run.json"
        self.cases_path = self.dir / "cases.parquet"
        self.samples = self.dir / "samples"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise SegbenchError(f"{self.dir}: not a segbench run (no run.json)") from None
        except ValueError as error:
            raise SegbenchError(f"{self.manifest_path}: not valid JSON ({error})") from None

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=False, default=str)
        _atomic_write_bytes(self.manifest_path, lambda tmp: tmp.write_text(text))

    def done_units(self) -> dict[str, str]:
        """unit id → status of every unit with a written part."""
        done = {}
        if self.parts.is_dir():
            for path in self.parts.glob("*.parquet"):
                unit_id, status, _ = path.name.split(".", 2)
                done[unit_id] = status
        return done

    def part_stamps(self) -> dict[str, tuple[int, int]]:
        """unit id → (mtime, inode) of its part; a unit written again since a snapshot has another stamp
        (parts are replaced by a rename, never rewritten in place)."""
        stamps: dict[str, tuple[int, int]] = {}
        for path in self.parts.glob("*.parquet") if self.parts.is_dir() else ():
            try:
                stat = path.stat()
            except FileNotFoundError:  # a failed part being replaced by its retry
                continue
            unit_id = path.name.split(".", 1)[0]
            stamps[unit_id] = max(stamps.get(unit_id, (0, 0)), (stat.st_mtime_ns, stat.st_ino))
        return stamps

    def part_adapters(self, unit_ids: Iterable[str]) -> dict[str, str]:
        """unit id → the adapter its part's rows belong to."""
        out: dict[str, str] = {}
        for unit_id in unit_ids:
            for path in self.parts.glob(f"{unit_id}.*.parquet"):
                adapters = pl.read_parquet(path, columns=["adapter"])["adapter"]
                out[unit_id] = adapters[0] if len(adapters) else "?"
        return out

    def supersede(self, unit_ids: Iterable[str]) -> None:
        """Move the parts (and kept masks) of units a plan no longer holds to ``parts/superseded/`` (and
        ``samples/superseded/``): nothing consolidates them, and nothing is deleted."""
        for unit_id in unit_ids:
            moves = [(path, self.parts / "superseded") for path in self.parts.glob(f"{unit_id}.*.parquet")]
            moves += [(path, self.samples / "superseded") for path in self.samples.glob(f"{unit_id}.npz")]
            for path, folder in moves:
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(path, folder / path.name)

    def clear(self) -> None:
        """Remove everything a run wrote here (manifest, parts, kept masks, rows): ``segbench run --fresh``."""
        for folder in (self.parts, self.samples):
            shutil.rmtree(folder, ignore_errors=True)
        self.cases_path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def write_unit(self, unit_id: str, rows: list[dict[str, Any]]) -> None:
        """Write one unit's rows atomically; a unit that succeeds on retry replaces its failed part.
        A row may carry the unit's kept masks under ``SAMPLE_KEY``: they are written first."""
        sample = next((row[SAMPLE_KEY] for row in rows if SAMPLE_KEY in row), None)
        if sample is not None:
            self.write_sample(unit_id, sample)
        status = "failed" if any(row["status"] != "ok" for row in rows) else "ok"
        frame = rows_frame(rows)
        _atomic_write_bytes(self.parts / f"{unit_id}.{status}.parquet", frame.write_parquet)
        for other in STATUSES:
            if other != status:
                (self.parts / f"{unit_id}.{other}.parquet").unlink(missing_ok=True)

    def write_sample(self, unit_id: str, sample: MaskSample) -> None:
        """``samples/<unit_id>.npz`` and, once per case, ``samples/case-<key>.npz`` (see segbench.samples)."""
        case_path = self.samples / sample.case_file
        if not case_path.is_file():
            _atomic_write_bytes(case_path, lambda tmp: _write_with(tmp, sample.write_case))
        _atomic_write_bytes(self.samples / f"{unit_id}.npz", lambda tmp: _write_with(tmp, sample.write_predictions))

    def _read_parts(self) -> pl.DataFrame:
        files = sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []
        if not files:
            return rows_frame([])
        return pl.concat([conform(pl.read_parquet(f)) for f in files], how="vertical").sort(SORT_KEY)

    def consolidate(self) -> pl.DataFrame:
        """Merge the parts into ``cases.parquet`` (atomically) and return the rows."""
        frame = self._read_parts()
        _atomic_write_bytes(self.cases_path, frame.write_parquet)
        return frame

    def read_cases(self) -> pl.DataFrame:
        """All rows of the run: ``cases.parquet``, or the parts of a run that was interrupted."""
        if self.cases_path.is_file():
            newest_part = max((p.stat().st_mtime_ns for p in self.parts.glob("*.parquet")), default=0)
            if self.cases_path.stat().st_mtime_ns >= newest_part:
                return conform(pl.read_parquet(self.cases_path))
        return self._read_parts()
