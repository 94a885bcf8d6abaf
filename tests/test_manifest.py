"""The typed seams of a run: run.json's format version and the upgrade of older files, the one row
schema, and the store's answer to "which units are pending"."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import polars as pl
import pytest

from segbench import plugins
from segbench.errors import SegbenchError
from segbench.measuring.metric_table import BUILTIN_METRICS, MetricSpec
from segbench.running import rows
from segbench.running.manifest import FORMAT_VERSION, AdapterRecord, RunManifest
from segbench.running.plan import WorkUnit
from segbench.running.store import RunStore
from segbench.running.unit_result import UnitResult

# run.json as segbench wrote it before it had a format version (a quick run of box and otsu, made by the
# code before issue 15; its paths and host replaced)
V1 = Path(__file__).parent / "fixtures" / "run-v1.json"

# the columns and types of cases.parquet before the row schema was declared once (main before issue 15)
SCHEMA_BEFORE = (
    "run_id:String unit_id:String adapter:String task:String task_version:String case_id:String label:String "
    "prompt:String step:Int32 instances:Int32 dice:Float64 nsd:Float64 hd95:Float64 unit:String diagonal:Float64 "
    "truth_area:Int64 pred_area:Int64 encode_ms:Float64 decode_ms:Float64 total_ms:Float64 peak_mem_mb:Float64 "
    "peak_rss_mb:Float64 probe_ms:Float64 device:String threads:Int32 host:String gpu:String weights:String "
    "status:String error:String prompt_json:String support_size:Int32"
)


def test_a_version_1_run_json_reads_typed_and_upgrades_in_memory(tmp_path: Path) -> None:
    raw = json.loads(V1.read_text())
    assert "format_version" not in raw  # what today's files look like
    run = tmp_path / raw["run_id"]
    run.mkdir()
    shutil.copy(V1, run / "run.json")
    store = RunStore(run)
    manifest = store.manifest()
    assert manifest.format_version == FORMAT_VERSION == 2
    assert (run / "run.json").read_text() == V1.read_text()  # reading never rewrites the file
    # typed fields hold the file's values
    assert manifest.run_id == raw["run_id"] and manifest.status == raw["status"] == "complete"
    assert manifest.device == raw["config"]["device"] and manifest.config == raw["config"]
    assert set(manifest.adapters) == set(raw["adapters"]) == {"box", "otsu"}
    box = manifest.adapter("box")
    assert box.family == raw["adapters"]["box"]["family"] and box.capabilities == raw["adapters"]["box"]["capabilities"]
    assert manifest.tasks["phantom"].labels == raw["tasks"]["phantom"]["labels"]
    assert manifest.planned_units() == {
        (pair.split("/")[0], pair.split("/")[1], case) for pair, cases in raw["planned"].items() for case in cases
    }
    [session] = manifest.sessions
    assert session.ended == raw["sessions"][0]["ended"] and session.pending_units == raw["sessions"][0]["pending_units"]
    assert session.git is not None and session.git.commit == raw["sessions"][0]["git"]["commit"]
    assert manifest.machine.gpu_names == [] and manifest.machine.host == raw["machine"]["host"]
    assert manifest.datasets["phantom"].files == raw["datasets"]["phantom"]["files"]
    # nothing is lost: the upgraded file is the old one with its version first
    assert manifest.to_dict() == {"format_version": 2, **raw}
    assert list(manifest.to_dict())[1:] == list(raw)
    store.write_manifest(manifest)
    written = json.loads((run / "run.json").read_text())
    assert written == {"format_version": 2, **raw} and store.read_manifest() == written


def test_unknown_fields_are_kept_and_fields_known_only_at_the_end_are_left_out(tmp_path: Path) -> None:
    data = {"run_id": "r", "status": "running", "from_the_future": {"x": 1}, "sessions": [{"started": "t", "note": 2}]}
    manifest = RunManifest.from_json(data)
    assert manifest.extra == {"from_the_future": {"x": 1}} and manifest.sessions[0].extra == {"note": 2}
    out = manifest.to_dict()
    assert out["from_the_future"] == {"x": 1} and out["sessions"][0]["note"] == 2
    # counts and a session's end are written once known, as before: a running run's file has none
    assert not {"rows", "units", "cases_sha256", "warnings"} & set(out) and "ended" not in out["sessions"][0]
    assert out["adapters"] == {} and out["planned"] is None
    assert AdapterRecord.from_dict({"checkpoint": {"sha256": "ab"}}).checkpoint_sha256 == "ab"


def test_a_newer_format_is_refused_naming_both_versions(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "run_id": "r"}))
    with pytest.raises(SegbenchError, match=f"format version {FORMAT_VERSION + 1}.*up to {FORMAT_VERSION}"):
        RunStore(run).manifest()
    (run / "run.json").write_text(json.dumps({"format_version": "two"}))
    with pytest.raises(SegbenchError, match="not a version"):
        RunStore(run).manifest()


def test_the_row_schema_is_todays_and_other_metrics_get_a_column_where_rows_carry_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # today's columns unchanged, then the adapter's declared input (issue 17.3) and the interaction cost
    # and the time-limit flag of the challenge protocols (issue 16.1, 16.3)
    # and the drawn prompts' cost (issue 18.1: scribbles and lassos)
    added = " input:String boxes:Int32 clicks:Int32 prompted_slices:Int32 over_time_limit:Boolean"
    added += " scribbles:Int32 lassos:Int32"
    assert " ".join(f"{name}:{dtype}" for name, dtype in rows.case_schema().items()) == SCHEMA_BEFORE + added
    defaults = rows.row_defaults()
    assert list(defaults) == list(rows.case_schema())
    assert defaults["status"] == "ok" and defaults["label"] == "*" and defaults["step"] == 0
    assert all(math.isnan(defaults[name]) for name in ("dice", "nsd", "hd95", "encode_ms", "diagonal"))
    extra = MetricSpec("iou", "IoU", "", True, 3, "both empty 1", lambda s: 0.0, 0.0)
    monkeypatch.setattr(plugins, "metrics", lambda: {spec.name: spec for spec in (*BUILTIN_METRICS, extra)})
    assert "iou" not in rows.case_schema()  # a run whose rows never score it has no column for it
    schema = rows.case_schema(carried={"iou", "adapter"})
    names = list(schema)
    assert names[names.index("hd95") + 1] == "iou" and schema["iou"] == pl.Float64
    assert list(schema).count("adapter") == 1


def test_the_store_says_which_units_are_pending(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    units = [WorkUnit(f"u{i}", "box", "t", f"case-{i}") for i in range(4)]

    def result(unit: WorkUnit, status: str) -> UnitResult:
        return UnitResult([{**rows.row_defaults(), "unit_id": unit.unit_id, "adapter": unit.adapter, "status": status}])

    store.write_unit("u0", result(units[0], "ok"))
    store.write_unit("u1", result(units[1], "failed"))
    (store.parts / "u3.ok.parquet").write_bytes(b"not parquet")  # a damaged part: its unit has to run again
    assert store.pending(units) == [units[2], units[3]]
    assert store.pending(units, retry_failed=True) == [units[1], units[2], units[3]]
    store.write_unit("u1", result(units[1], "ok"))  # a retry that succeeded replaces the failed part
    assert store.pending(list(reversed(units)), retry_failed=True) == [units[3], units[2]]
