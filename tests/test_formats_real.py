"""Issue 17 on real data: ``segbench tasks init`` on BraTS cases laid out as an nnU-Net raw dataset,
and on the BraTS and left-atrium folders as they are shipped. Each written task reads every case, and
the box baseline scores the same Dice on it as on the hand-written task (tasks/brats.toml,
tasks/la-heart.toml), case by case: the written task reads the same voxels and the same labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from segbench import plugins
from segbench.data.task_check import check_task
from segbench.data.taskspec import discover_tasks, load_task

from .test_formats import box_prediction, run, segbench, write_config

pytestmark = [pytest.mark.data, pytest.mark.slow]
CASES = 2


def test_written_tasks_score_as_the_hand_written_ones(data_root: Path, tmp_path: Path) -> None:
    brats = discover_tasks()["brats"]
    hand = plugins.readers()["nifti"](brats, data_root)
    ids = hand.case_ids()[:CASES]
    # BraTS as nnU-Net raw: FLAIR as channel 0, T1c as channel 1, the label with two regions
    data = tmp_path / "data"
    nn = data / "brats_nnunet"
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir()
    for index, case_id in enumerate(ids):
        image, label = hand.files(case_id)
        shutil.copy(image, nn / "imagesTr" / f"BRATS_{index:03d}_0000.nii.gz")
        shutil.copy(image.parent / "T1c_subtrMeanDivStd.nii.gz", nn / "imagesTr" / f"BRATS_{index:03d}_0001.nii.gz")
        shutil.copy(label, nn / "labelsTr" / f"BRATS_{index:03d}.nii.gz")
    labels = {"background": 0, "whole tumour": [1, 2, 3, 4], "tumour core": [1, 3, 4]}
    dataset = {"channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": labels, "file_ending": ".nii.gz"}
    (nn / "dataset.json").write_text(json.dumps({**dataset, "numTraining": CASES}))
    (tmp_path / "tasks").mkdir()
    roots = {"brats_nnunet": data, "brats_mri": data_root, "la_heart_mri": data_root}
    for name, root in roots.items():
        target = tmp_path / "tasks" / f"init-{name}.toml"
        status, _, err = segbench("tasks", "init", str(root / name), "--data-root", str(root), "--write", str(target))
        assert status == 0, err
        target.write_text(target.read_text().replace('name = "', 'name = "init-', 1))
    written = {name: load_task(tmp_path / "tasks" / f"init-{name}.toml") for name in roots}
    assert written["brats_nnunet"].reader == "nnunet_raw" and written["brats_mri"].reader == "nifti"
    assert written["la_heart_mri"].reader == "hdf5"
    assert {label.name: label.values for label in written["brats_nnunet"].labels} == {
        "whole_tumour": (1, 2, 3, 4),
        "tumour_core": (1, 3, 4),
    }
    for name, spec in written.items():
        result = check_task(spec, roots[name])
        assert result.failed == {} and result.read == result.cases > 0, spec.name

    shipped = ["brats", "la-heart", written["brats_mri"].name, written["la_heart_mri"].name]
    config = write_config(
        tmp_path,
        {"shipped": (["box"], shipped, "slice_boxes"), "nn": (["box"], [written["brats_nnunet"].name], "slice_boxes")},
    )
    rows = pl.concat(
        [run(tmp_path, config, "shipped", data_root, "--limit", str(CASES)), run(tmp_path, config, "nn", data)],
        how="diagonal",  # brats.toml scores lesion-wise metrics too: its rows carry more metric columns
    )
    assert rows.filter(pl.col("status") != "ok").height == 0

    def dice(task: str, label: str) -> list[float]:
        chosen = rows.filter((pl.col("task") == task) & (pl.col("label") == label)).sort("case_id")  # plan order
        return chosen["dice"].to_list()

    assert len(dice("brats", "whole_tumour")) == CASES
    assert dice("init-brats-nnunet", "whole_tumour") == dice("brats", "whole_tumour")
    assert dice("init-brats-nnunet", "tumour_core") == dice("brats", "tumour_core")
    assert dice("init-brats-mri", "foreground") == dice("brats", "whole_tumour")
    assert dice("init-la-heart-mri", "label_1") == dice("la-heart", "left_atrium")


def test_a_brats_prediction_is_written_over_its_source(data_root: Path, tmp_path: Path) -> None:
    import nibabel
    import numpy as np

    from segbench.running.prediction_writers import write_nifti

    brats = plugins.readers()["nifti"](discover_tasks()["brats"], data_root)
    case_id = brats.case_ids()[0]
    case = brats.read(case_id)
    prediction = box_prediction(case.labels["tumour_core"])
    written = nibabel.load(write_nifti(case, prediction, tmp_path / "pred.nii.gz"))
    source = nibabel.load(brats.files(case_id)[0])
    assert np.allclose(written.affine, source.affine) and written.shape == source.shape
    assert np.array_equal(np.asarray(written.dataobj) == 1, prediction.transpose(2, 1, 0))
