"""segbench's overhead per case: the whole harness path against bare LiteMedSAM calls on the same inputs.

Bare path, as a user's own script would do it: decode the image and mask files, take the tight box of
each label, LiteMedSAM's official preprocessing, the image encoder once, the prompt encoder and mask
decoder for all boxes in one batch, upsampling and threshold. segbench path: `UnitRunner.run` on the
same case, i.e. reading through the task's reader and intensity policy, seeded prompts, CUDA-synced
timers and memory probes, the adapter, Dice/NSD/HD95 for every label and the result rows. The two are
interleaved case by case (alternating which goes first) so machine drift hits both alike.

Run: python -m pytest tests/benchmarks/test_bench_overhead.py --benchmark-only -s
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segbench.adapters.litemedsam import preprocess, scale_box
from segbench.data.suites import Suite
from segbench.data.taskspec import discover_tasks
from segbench.running.plan import RunOptions, WorkUnit, make_plan
from segbench.running.runner import UnitRunner

CASES = 12
LIMIT_CPU = 0.05


def wbc_plan(data_root: Path):  # type: ignore[no-untyped-def]
    suite = Suite("overhead", "", ("litemedsam",), ("wbc",), None, 0, CASES, Path("benchmark"))
    return make_plan(suite, discover_tasks(), RunOptions(device="cpu", data_root=data_root, run_id="overhead"))


def bare_case(model: torch.nn.Module, image_path: Path, mask_path: Path) -> np.ndarray:
    image = np.asarray(Image.open(image_path).convert("RGB"))
    mask = np.asarray(Image.open(mask_path))
    boxes = []
    for label in (mask > 64, mask > 192):  # whole cell, nucleus (values 128 and 255)
        rows, cols = np.nonzero(label)
        boxes.append(scale_box(np.array([cols.min(), rows.min(), cols.max(), rows.max()]), image.shape[:2]))
    padded, (height, width) = preprocess(image)
    with torch.inference_mode():
        embedding = model.image_encoder(torch.from_numpy(np.stack([padded])).float().permute(0, 3, 1, 2))
        box_tensor = torch.as_tensor(np.stack(boxes)[:, None, :], dtype=torch.float32)
        sparse, dense = model.prompt_encoder(points=None, boxes=box_tensor, masks=None)
        logits, _ = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        upscaled = F.interpolate(
            logits[..., :height, :width], size=image.shape[:2], mode="bilinear", align_corners=False
        )
        return (torch.sigmoid(upscaled) > 0.5).numpy()


def interleaved(runner: UnitRunner, units: list[WorkUnit]) -> tuple[list[float], list[float], list[float]]:
    """Per case: bare seconds, segbench seconds, and segbench seconds outside its timed model calls."""
    reader = runner.plan.reader("wbc")
    bare, harness, outside = [], [], []
    for index, unit in enumerate(units):
        image_path, mask_path = reader.files(unit.case_id)
        order = ("bare", "harness") if index % 2 == 0 else ("harness", "bare")
        for which in order:
            start = time.perf_counter()
            if which == "bare":
                bare_case(runner.adapter.model, image_path, mask_path)  # type: ignore[attr-defined]
                bare.append(time.perf_counter() - start)
            else:
                rows = runner.run(unit).rows
                harness.append(time.perf_counter() - start)
                assert all(row["status"] == "ok" for row in rows)
                outside.append(harness[-1] - rows[0]["total_ms"] / 1000)
    return bare, harness, outside


def test_overhead_litemedsam_cpu(benchmark, data_root: Path) -> None:  # type: ignore[no-untyped-def]
    """The overhead is the median over cases of segbench / bare time, minus 1: the median of paired
    ratios, because one case's encoder pass can take 30% longer than the next on a shared machine
    (a sum lets a few such cases decide the figure)."""
    plan = wbc_plan(data_root)
    runner = UnitRunner(plan, "litemedsam")
    bare, harness, outside = benchmark.pedantic(interleaved, args=(runner, plan.units), rounds=1, iterations=1)
    overhead = float(np.median(np.array(harness) / np.array(bare))) - 1
    benchmark.extra_info.update(bare_s=sum(bare), harness_s=sum(harness), overhead=overhead)
    print(
        f"\nLiteMedSAM on CPU, {len(plan.units)} WBC cases: bare {sum(bare):.2f} s, segbench {sum(harness):.2f} s; "
        f"overhead (median of paired ratios) {overhead:+.1%} (limit {LIMIT_CPU:.0%}); segbench's own time "
        f"outside the timed model calls: median {1000 * float(np.median(outside)):.0f} ms per case"
    )
    assert overhead <= LIMIT_CPU
