"""The SAM family from the command line: listing, checkpoint status, the offline error, and the
`sam-family` suite on a CPU (skipped with reasons without checkpoints; running with random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from .conftest import run_cli

FAMILY = {"sam-vit-b", "sam-vit-l", "sam-vit-h", "medsam", "medicosam", "sam-med2d"}
PROMPTABLE = "box,point,mask,iterative,multimask"


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, str]:
    return {"SEGBENCH_CACHE": str(tmp_path / "cache")}


def test_adapters_lists_the_family_with_capabilities_and_checkpoint_status(cache: dict[str, str]) -> None:
    folder = Path(cache["SEGBENCH_CACHE"]) / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "sam-med2d_b.pth").write_bytes(b"no checksum is published for this file")
    (folder / "sam_vit_b_01ec64.pth").write_bytes(b"not the official file")
    listed = {a["name"]: a for a in json.loads(run_cli("adapters", "--json", env=cache).stdout)}
    assert FAMILY <= set(listed)
    assert {name: listed[name]["capabilities"] for name in FAMILY} == {
        **{name: PROMPTABLE for name in FAMILY},
        "medsam": "box",
    }
    assert listed["sam-vit-h"]["checkpoint"] == "missing"
    assert listed["sam-vit-h"]["checkpoint_path"] == str(folder / "sam_vit_h_4b8939.pth")
    assert listed["sam-med2d"]["checkpoint"] == "present (cache, unverified: no published checksum)"
    assert (
        listed["sam-vit-b"]["checkpoint"].startswith("bad: ")
        and "does not match the pinned ec2df627" in listed["sam-vit-b"]["checkpoint"]
    )


def test_weights_list_shows_every_family_checkpoint(cache: dict[str, str]) -> None:
    listed = {w["name"]: w for w in json.loads(run_cli("weights", "list", "--json", env=cache).stdout)}
    assert FAMILY <= set(listed)
    assert all(listed[name]["status"] == "missing" for name in FAMILY)
    assert listed["sam-vit-h"]["url"] == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
    assert listed["sam-vit-h"]["sha256"].startswith("a7bf3b02") and listed["sam-vit-h"]["size_mb"] == 2565
    assert listed["medsam"]["sha256"].startswith("34b34b78") and listed["medsam"]["size_mb"] == 375
    assert listed["sam-med2d"]["sha256"] == "" and listed["sam-med2d"]["size_mb"] is None
    assert listed["medicosam"]["path"] == str(Path(cache["SEGBENCH_CACHE"]) / "checkpoints" / "vit_b_medicosam.pt")


def test_offline_fetch_names_the_url_and_the_exact_path(cache: dict[str, str]) -> None:
    offline = {**cache, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": ""}
    target = Path(cache["SEGBENCH_CACHE"]) / "checkpoints" / "sam_vit_b_01ec64.pth"
    result = run_cli("weights", "fetch", "sam-vit-b", env=offline, check=False)
    assert result.returncode == 2
    assert "could not download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in result.stderr
    assert f"put it at {target}" in result.stderr and not target.exists()
    manual = run_cli("weights", "fetch", "sam-med2d", env=cache, check=False)
    assert manual.returncode == 2
    assert "https://drive.google.com/file/d/1ARiB5RkSsWmAB_8mqWnwDF8ZKTtFwsjl" in manual.stderr
    assert str(Path(cache["SEGBENCH_CACHE"]) / "checkpoints" / "sam-med2d_b.pth") in manual.stderr


@pytest.mark.data
def test_suite_without_checkpoints_skips_the_family_with_reasons(
    cache: dict[str, str], data_root: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "run",
        "--suite",
        "sam-family",
        "--tasks",
        "wbc",
        "--limit",
        "1",
        "--data-root",
        str(data_root),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        env=cache,
    )
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    skipped = json.loads((run_dir / "run.json").read_text())["skipped"]
    assert set(skipped) == FAMILY
    assert "put it at" in skipped["sam-vit-l"] and "sam_vit_l_0b3195.pth" in skipped["sam-vit-l"]
    assert all(f"skipped: {reason}" in result.stderr for reason in skipped.values())
    cases = pl.read_parquet(run_dir / "cases.parquet")
    assert set(cases["adapter"]) == {"litemedsam", "box"} and (cases["status"] == "ok").all()


@pytest.mark.data
@pytest.mark.slow
def test_suite_with_random_weights_runs_and_records_speed_and_memory(
    cache: dict[str, str], data_root: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "run",
        "--suite",
        "sam-family",
        "--tasks",
        "wbc",
        "--limit",
        "1",
        "--adapters",
        "sam-med2d",
        "--weights",
        "random",
        "--device",
        "cpu",
        "--data-root",
        str(data_root),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        env=cache,
    )
    cases = pl.read_parquet(Path(result.stdout.strip().splitlines()[-1]) / "cases.parquet")
    assert (cases["status"] == "ok").all() and (cases["weights"] == "random").all()
    assert cases.filter(pl.col("encode_ms").is_nan() | (pl.col("encode_ms") <= 0)).is_empty()
    assert cases.filter(pl.col("decode_ms").is_nan() | (pl.col("peak_rss_mb") <= 0)).is_empty()
    protocols = cases.group_by("adapter").agg(pl.col("prompt").unique().sort())
    assert dict(protocols.iter_rows()) == {"sam-med2d": ["box", "center_point", "iterative_box3"]}
    assert sorted(cases.filter(pl.col("prompt") == "iterative_box3")["step"].unique()) == [0, 1, 2, 3]
