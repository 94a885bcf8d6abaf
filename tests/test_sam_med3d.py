"""SAM-Med3D (issue 18.2): its preprocessing against a numpy/scipy/nibabel restatement on a real anisotropic
volume, its masks against the official flow driven by hand with the same random weights and clicks, its
checkpoint layout, its click protocol, and the adapter contract.

Speed. The official encoder pads its 8³ tokens to 14³ windows: one 128³ forward of the real architecture
takes about a minute on two shared CPU cores (measured: 53-67 s). So the forward passes here use medim's
SAM-Med3D with a two-block encoder (both blocks global, so no window padding); everything the adapter does
around the encoder (the crop, the clicks, the feedback, the way back) is the same code, and the real
architecture is built (not run) for the checkpoint round trip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segbench import plugins
from segbench.interface import LoadOptions, RawImage
from segbench.protocols.base import ProtocolInputs
from segbench.protocols.prompts import parse_protocol
from segbench.protocols.sammed3d import ClickPrompt, SamMed3DClicks, bounding_box_3d

torch = pytest.importorskip("torch")
tio = pytest.importorskip("torchio")
pytest.importorskip("medim")
nib = pytest.importorskip("nibabel")

from segbench.adapters import sam_med3d  # noqa: E402
from segbench.running.adapter_check import check_adapter  # noqa: E402
from segbench.running.plan import supported_protocols  # noqa: E402

SHALLOW = {"encoder_depth": 2, "encoder_global_attn_indexes": [0, 1], "encoder_embed_dim": 192, "prompt_embed_dim": 96}
CASE = "brats2015TrainingData/test/brats_2013_pat0001_1"


class ShallowTurbo(sam_med3d.SamMed3DTurbo):
    config = SHALLOW


@pytest.fixture(scope="module")
def anisotropic(data_root: Path) -> tuple[RawImage, np.ndarray]:
    """A real BraTS FLAIR volume made anisotropic (every second axial slice: 2 x 1 x 1 mm) and its whole tumour."""
    from segbench.data.readers.volume_files import load_image

    folder = data_root / "brats_mri" / CASE
    pixels, spacing, affine = load_image(folder / "Flair_subtrMeanDivStd.nii.gz")
    labels, _, _ = load_image(folder / "OTMultiClass.nii.gz")
    affine = np.array(affine)
    affine[:3, 0] *= 2  # the slice axis (index 0) now steps 2 mm
    raw = RawImage(pixels[::2], (2 * spacing[0], spacing[1], spacing[2]), "mm", "MRI", affine)
    return raw, labels[::2] > 0


def restated_canonical(volume: np.ndarray, affine: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """torchio's Resample(1.5) + ToCanonical restated: a grid of floor(extent / 1.5) voxels centred on the
    source's centre along the source's own axes, sampled linearly (``order=1``) or at the nearest voxel
    (``order=0``, rounding half up as ITK does); then nibabel's reorientation to RAS+."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    size = np.array(volume.shape)
    new_size = np.floor(size * spacing / 1.5).astype(int)
    step = 1.5 / spacing
    first = (size - 1) / 2 - (new_size - 1) / 2 * step  # the new grid's first voxel in source indices
    axes = [first[a] + np.arange(new_size[a]) * step[a] for a in range(3)]
    if order == 1:
        grid = np.meshgrid(*axes, indexing="ij")
        resampled = ndimage.map_coordinates(volume.astype(np.float64), grid, order=1, mode="nearest")
    else:
        nearest = [np.clip(np.floor(a + 0.5).astype(int), 0, n - 1) for a, n in zip(axes, size, strict=True)]
        resampled = volume[np.ix_(*nearest)]
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * step
    new_affine[:3, 3] = (affine @ np.r_[first, 1])[:3]
    orientation = nib.orientations.io_orientation(new_affine)
    data = nib.orientations.apply_orientation(resampled, orientation)
    return data, new_affine @ nib.orientations.inv_ornt_aff(orientation, resampled.shape)


def restated_window(data: np.ndarray, start: np.ndarray) -> np.ndarray:
    padded = np.pad(data, [(128, 128)] * 3)
    return padded[tuple(slice(s + 128, s + 256) for s in start)]


@pytest.mark.data
def test_preprocessing_equals_a_restatement_on_a_real_anisotropic_volume(anisotropic) -> None:
    raw, truth = anisotropic
    volume = sam_med3d.canonical(raw)
    expected, expected_affine = restated_canonical(raw.pixels.astype(np.float32), raw.affine, order=1)
    assert volume.data.shape == expected.shape
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-6)
    np.testing.assert_allclose(volume.data, expected, atol=1e-5)

    # the official crop: centred on the bounding box of the nearest-resampled truth, CropOrPad's start
    label, _ = restated_canonical(truth.astype(np.uint8), raw.affine, order=0)
    first, last = (np.array(corner) for corner in bounding_box_3d(label > 0))
    start = (first + last + 1) // 2 - 64
    assert start.tolist() == sam_med3d.start_from_box(volume, bounding_box_3d(truth)).tolist()
    assert np.any(start < 0) or np.any(start + 128 > np.array(volume.data.shape))  # padding is exercised

    window = restated_window(expected, start)
    positive = window[window > 0]
    restated = (window - positive.mean()) / positive.std(ddof=1)  # torch's std is the unbiased one
    ours = sam_med3d.znormalise(sam_med3d.crop(volume.data, start))
    np.testing.assert_allclose(ours, restated, atol=1e-5)

    # the default crop: on the first click, the canonical voxel nearest to it
    click = np.array([[40.0, 101.0, 77.0]])
    index = (np.linalg.inv(expected_affine) @ raw.affine @ np.r_[click[0], 1])[:3]
    assert sam_med3d.start_from_point(volume.to_canonical(click)[0]).tolist() == (np.floor(index + 0.5) - 64).tolist()


def official_clicks(gt: np.ndarray, predicted: np.ndarray | None, rng: np.random.RandomState) -> tuple[np.ndarray, int]:
    """The official ``random`` click on the crop, restated: uniform over the error region (argwhere order,
    ``randint``), positive on a false negative; over the truth when there is no error."""
    missed = gt & ~predicted if predicted is not None else gt
    errors = missed | (predicted & ~gt) if predicted is not None else gt
    region = errors if errors.any() else gt
    voxels = np.argwhere(region)
    point = voxels[rng.randint(len(voxels))]
    return point, int(missed[tuple(point)]) if errors.any() else 1


@pytest.mark.data
def test_masks_equal_the_official_flow_with_the_same_weights_and_clicks(anisotropic) -> None:
    raw, truth = anisotropic
    adapter = ShallowTurbo()
    adapter.load(LoadOptions(random_weights=True, seed=3))
    model = adapter.model

    # the official flow on the truth (infer_utils' data_preprocess, sam_model_infer, data_postprocess), by hand
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=torch.from_numpy(raw.pixels[None].astype(np.float32)), affine=raw.affine),
        label=tio.LabelMap(tensor=torch.from_numpy(truth[None].astype(np.uint8)), affine=raw.affine),
    )
    subject = tio.ToCanonical()(tio.Resample(1.5)(subject))
    canonical_affine = subject["image"].affine
    roi = tio.CropOrPad(mask_name="label", target_shape=(128, 128, 128))(subject)
    image = tio.ZNormalization(masking_method=lambda x: x > 0)(roi["image"].data)[None]
    gt = roi["label"].data[0].numpy() > 0
    rng = np.random.RandomState(233)
    points, labels, expected = [], [], []
    with torch.inference_mode():
        embedding = model.image_encoder(image)
        low_res, predicted = torch.zeros(1, 1, 32, 32, 32), None
        for _ in range(2):
            point, label = official_clicks(gt, predicted, rng)
            points.append(point)
            labels.append(label)
            sparse, dense = model.prompt_encoder(
                points=[torch.tensor(np.array(points)[None], dtype=torch.float32), torch.tensor([labels])],
                boxes=None,
                masks=low_res,
            )
            low_res, _ = model.mask_decoder(
                image_embeddings=embedding,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
            )
            upsampled = torch.nn.functional.interpolate(low_res, size=(128,) * 3, mode="trilinear", align_corners=False)
            predicted = (torch.sigmoid(upsampled) > 0.5)[0, 0].numpy()
            back = tio.Resample((truth.shape, raw.affine), image_interpolation="nearest")(
                tio.LabelMap(tensor=torch.from_numpy(predicted[None].astype(np.uint8)), affine=roi["image"].affine)
            )
            expected.append(back.data[0].numpy() > 0)

    # the adapter, told the same clicks (mapped to the case's grid) and the truth's box (the official replay)
    to_source = np.linalg.inv(raw.affine) @ roi["image"].affine
    clicks = tuple((tuple((to_source @ np.r_[p, 1])[:3]), label) for p, label in zip(points, labels, strict=True))
    state = adapter.encode_volume(raw)
    shift = np.eye(4)
    shift[:3, 3] = sam_med3d.start_from_box(state.volume, bounding_box_3d(truth))
    assert np.allclose(roi["image"].affine, canonical_affine @ shift)  # the adapter's crop is CropOrPad's
    previous = None
    for step in range(2):
        prompt = ClickPrompt({}, 0, (0, 0), previous, clicks=clicks[: step + 1], crop_box=bounding_box_3d(truth))
        prediction = adapter.predict_volume(state, [prompt])
        previous = prediction.feedback[0]
        assert expected[step].any() and np.array_equal(prediction.masks[0], expected[step]), f"step {step + 1}"
    assert len(state.embeddings) == 1  # one crop, encoded once for both steps


def test_random_weights_in_the_official_layout_load_with_no_missing_or_unexpected_key(tmp_path: Path) -> None:
    from segbench.weights.checkpoints import apply_state_dict, read_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        official = sam_med3d.build_model()  # vit_b_ori, the real architecture
    state = official.state_dict()
    path = tmp_path / "sam_med3d_turbo.pth"
    # the layout of SAM-Med3D's train.py save_checkpoint, with its pickled argparse namespace
    torch.save({"epoch": 1, "model_state_dict": state, "args": argparse.Namespace(model_type="vit_b_ori")}, path)
    loaded = read_state_dict(path, skip_objects=True)
    assert loaded.keys() == state.keys() and len(loaded) == 324
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    apply_state_dict(official, loaded, path)  # strict: raises on any missing, unexpected or mis-shaped key


def test_the_click_protocol_draws_official_clicks_and_flags_the_truth_crop() -> None:
    truth = np.zeros((12, 20, 20), bool)
    truth[3:9, 5:15, 6:12] = True
    inputs = ProtocolInputs(0, "task", "case", {"organ": truth})
    plain, replay = SamMed3DClicks({"clicks": 3}), SamMed3DClicks({"clicks": 3, "crop": "truth"})
    assert (plain.name, replay.name, SamMed3DClicks().name) == ("sammed3d_3", "sammed3d_gtcrop_3", "sammed3d")
    assert plain.steps == 3 and plain.requires == {"point", "volume"}
    first, official = plain.first(inputs).prompts[0], replay.first(inputs).prompts[0]
    assert first.clicks == official.clicks and first.clicks[0][1] == 1 and truth[first.clicks[0][0]]
    assert first.describe()["localisation_aid"] is False and "crop_box" not in first.describe()
    assert official.describe()["localisation_aid"] is True
    assert official.describe()["crop_box"] == [[3, 5, 6], [8, 14, 11]]
    # a prediction that misses the lower half and spills outside: the next click is an error voxel, labelled by it
    predicted = np.zeros_like(truth)
    predicted[6:9, 5:15, 6:16] = True
    ask = plain.first(inputs)
    for _ in range(5):
        ask = plain.refine(ask, predicted[None], [None])
        (z, y, x), label = ask.prompts[0].clicks[-1]
        assert truth[z, y, x] != predicted[z, y, x] and label == int(truth[z, y, x])
    assert ask.prompts[0].z_range == (0, 11) and len(ask.prompts[0].clicks) == 6
    # a perfect prediction: a truth voxel, positive
    perfect = plain.refine(plain.first(inputs), truth[None], [None]).prompts[0].clicks[-1]
    assert truth[perfect[0]] and perfect[1] == 1

    kinds = plugins.protocols()
    assert kinds["sammed3d"] is SamMed3DClicks
    protocols = [parse_protocol("sammed3d"), parse_protocol({"kind": "sammed3d", "clicks": 5, "crop": "truth"})]
    assert supported_protocols(protocols, plugins.adapter_class("litemedsam").meta.capabilities) == ()
    assert len(supported_protocols(protocols, plugins.adapter_class("sam-med3d-turbo").meta.capabilities)) == 2
    with pytest.raises(ValueError, match="crop must be one of"):
        SamMed3DClicks.check({"crop": "centre"})


def test_the_adapter_keeps_the_contract_with_a_shallow_encoder() -> None:
    """The full contract (test_adapter_contract runs only the forward-free checks for the real encoder)."""
    results = check_adapter(ShallowTurbo)
    failed = [result.line() for result in results if result.status == "fail"]
    assert not failed, "\n".join(failed)
    ran = {result.name for result in results if result.status == "pass"}
    assert {"point", "iterative", "volume"} <= ran


def test_both_adapters_declare_their_card_checkpoint_and_raw_input() -> None:
    turbo, base = plugins.adapter_class("sam-med3d-turbo").meta, plugins.adapter_class("sam-med3d").meta
    assert turbo.input == base.input == "raw" and turbo.capabilities == base.capabilities
    assert turbo.checkpoint.fetchable and len(turbo.checkpoint.sha256) == 64
    assert not base.checkpoint.fetchable and base.checkpoint.manual_download
    for meta in (turbo, base):
        assert meta.card.paper.endswith("2310.15161") and meta.card.code.endswith("uni-medical/SAM-Med3D")
        assert {"brats2021", "lascarqs22", "amos22", "totalsegmentator"} <= set(meta.card.trained_on)
        assert all(name == name.lower() and " " not in name for name in meta.card.trained_on)
