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
from segbench.plan import WorkUnit, make_plan
from segbench.runner import UnitRunner
from segbench.suites import Suite
from segbench.taskspec import discover_tasks

CASES = 12
LIMIT_CPU = 0.05


def wbc_plan(data_root: Path):  # type: ignore[no-untyped-def]
    suite = Suite("overhead", "", ("litemedsam",), ("wbc",), None, 0, CASES, Path("benchmark"))
    return make_plan(suite, discover_tasks(), device="cpu", data_root=data_root, run_id="overhead")


def bare_case(model: torch.nn.Module, image_path: Path, mask_path: Path) -> np.ndarray:
    image = np.asarray(Image.open(image_path).convert("RGB"))
    mask = np.asarray(Image.open(mask_path))
    boxes = []
    for label in (mask > 64, mask > 192):  # whole cell, nucleus (values 128 and 255)
        rows, cols = np.nonzero(label)
        boxes.append(scale_box(np.array([cols.min(), rows.min(), cols.max(), rows.max()]), image.shape[:2]))
    padded, (height, width) = preprocess(image)
    with torch.inference_mode():
        embedding = model.image_encoder(torch.from_numpy(padded).float().permute(2, 0, 1)[None])
        box_tensor = torch.as_tensor(np.stack(boxes)[:, None, :], dtype=torch.float32)
        sparse, dense = model.prompt_encoder(points=None, boxes=box_tensor, masks=None)
        logits, _ = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
        upscaled = F.interpolate(logits[..., :height, :width], size=image.shape[:2], mode="bilinear",
                                 align_corners=False)
        return (torch.sigmoid(upscaled) > 0.5).numpy()


def interleaved(runner: UnitRunner, units: list[WorkUnit]) -> tuple[float, float]:
    reader = runner.plan.reader("wbc")
    bare_s = harness_s = 0.0
    for index, unit in enumerate(units):
        image_path, mask_path = reader.files(unit.case_id)
        order = ("bare", "harness") if index % 2 == 0 else ("harness", "bare")
        for which in order:
            start = time.perf_counter()
            if which == "bare":
                bare_case(runner.adapter.model, image_path, mask_path)  # type: ignore[attr-defined]
                bare_s += time.perf_counter() - start
            else:
                rows = runner.run(unit)
                harness_s += time.perf_counter() - start
                assert all(row["status"] == "ok" for row in rows)
    return bare_s, harness_s


def test_overhead_litemedsam_cpu(benchmark, data_root: Path) -> None:  # type: ignore[no-untyped-def]
    plan = wbc_plan(data_root)
    runner = UnitRunner(plan, "litemedsam")
    bare_s, harness_s = benchmark.pedantic(interleaved, args=(runner, plan.units), rounds=1, iterations=1)
    overhead = harness_s / bare_s - 1
    benchmark.extra_info.update(bare_s=bare_s, harness_s=harness_s, overhead=overhead)
    print(f"\nLiteMedSAM on CPU, {len(plan.units)} WBC cases: bare {bare_s:.2f} s, segbench {harness_s:.2f} s, "
          f"overhead {overhead:+.1%} (limit {LIMIT_CPU:.0%})")
    assert overhead <= LIMIT_CPU
