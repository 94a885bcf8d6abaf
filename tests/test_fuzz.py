"""A seeded fuzz of the task-file parser and the readers: whatever the input, only a SegbenchError
(ConfigError, DataError: one line naming the file) may come out, never a raw traceback type.

Bounded by a fixed number of iterations from fixed seeds (not by time), so a failure replays exactly:
the assertion message names the seed and the input. hypothesis is not a dependency of segbench, so the
inputs come from numpy's seeded generator: task documents built from the known keys with values of
random types, random and mutated TOML bytes, and data files of every format the readers decode holding
random bytes or valid containers of random shapes and dtypes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segbench.data.readers import BUILTIN_READERS
from segbench.data.taskspec import (
    BUILTIN_TASK_DIR,
    EVALUATION_KEYS,
    INTENSITY_KEYS,
    PROMPTS_KEYS,
    TABLES,
    TASK_KEYS,
    load_task,
    parse_task,
)
from segbench.errors import SegbenchError

SHIPPED = sorted(BUILTIN_TASK_DIR.glob("*.toml"))
DATA_KEYS = sorted(
    {key for reader in BUILTIN_READERS.values() for key in reader.DATA_KEYS}
    | {"reader", "dataset", "spacing", "resize"}
)
WORDS = [
    "",
    "box",
    "nonzero",
    "*.png",
    "images/*.png",
    "{name}",
    "{id.x}",
    "{",
    "../x",
    "/etc/hosts",
    "~",
    "a\0b",
    "[",
    "(?P<n>",
    "xyz",
    "zyx",
    "rgb8",
    "window",
    "percentile",
    "label",
    "components",
    "nearest",
    "support",
    "iterative",
    "slice_boxes",
    "key_slice_box",
    "**",
    "a**",
    "image_mask_pairs",
    "phantom",
    "nifti",
    "npz",
    "hdf5",
    "samed2d_index",
    "mask_threshold",
    "é",
    "x" * 300,
]


def _value(rng: np.random.Generator, depth: int = 0) -> Any:
    """A random TOML-representable value, biased towards the shapes task files use."""
    kind = int(rng.integers(0, 9 if depth < 2 else 6))
    if kind == 0:
        return int(rng.integers(-3, 300))
    if kind == 1:
        return float(rng.choice([0.0, -1.0, 0.5, 2.0, np.nan, np.inf, 1e-9, 1e9]))
    if kind == 2:
        return bool(rng.integers(0, 2))
    if kind in (3, 4, 5):
        return str(rng.choice(WORDS))
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return {
        str(rng.choice(["kind", "k", "px", "clicks", "start", "file", "values", "every", "slice", "zz"])): _value(
            rng, depth + 1
        )
        for _ in range(int(rng.integers(0, 4)))
    }


def _document(rng: np.random.Generator) -> dict[str, Any]:
    """A task document from the known tables and keys (plus a stray one now and then), random values."""
    keys = {
        "task": list(TASK_KEYS),
        "data": DATA_KEYS,
        "intensity": list(INTENSITY_KEYS),
        "prompts": list(PROMPTS_KEYS),
        "evaluation": list(EVALUATION_KEYS),
        "support": ["pool_fraction", "pool_glob", "pool_cases", "split_seed"],
    }
    document: dict[str, Any] = {
        "task": {"name": "fuzz"},
        "data": {"reader": str(rng.choice(sorted(BUILTIN_READERS)))},
        "labels": {"x": "nonzero"},
    }
    for table in rng.choice(list(TABLES), size=int(rng.integers(1, len(TABLES))), replace=False):
        target = document.setdefault(str(table), {})
        if table == "labels":
            target[str(rng.choice(["x", "*", "y"]))] = _value(rng)
            continue
        for key in rng.choice(keys[str(table)], size=int(rng.integers(1, 4))):
            target[str(key)] = _value(rng)
    if rng.random() < 0.1:
        document[str(rng.choice(["evalution", "zz"]))] = {}
    if rng.random() < 0.1:
        document[str(rng.choice(list(TABLES)))] = _value(rng)  # a table that is not a table
    return document


def _only_segbench_errors(call, what: str) -> Any:
    try:
        return call()
    except SegbenchError:
        return None
    except Exception as error:  # noqa: BLE001 - the point: name what escaped
        pytest.fail(f"{what}: {type(error).__name__}: {error}")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with a few files the fuzzed documents' globs may find."""
    root = tmp_path_factory.mktemp("fuzzdata")
    (root / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "images" / "a.png")
    (root / "x.png").write_bytes(b"not a png")
    return root


def test_random_task_documents_give_only_config_errors(data_root: Path) -> None:
    rng = np.random.default_rng(1400)
    parsed = 0
    # 2000 documents: the floor below then holds whatever the key lists (with 600 it held for some seeds
    # only, 4-13 parsed over eight seeds, so a new task key could break it by shifting the stream)
    for index in range(2000):
        document = _document(rng)
        spec = _only_segbench_errors(
            lambda d=document: parse_task(d, Path("fuzz.toml")), f"document {index}: {document}"
        )
        if spec is None:
            continue
        parsed += 1
        if spec.reader in BUILTIN_READERS:  # a document that parses makes a reader that fails only in words
            reader = _only_segbench_errors(
                lambda s=spec: BUILTIN_READERS[s.reader](s, data_root), f"reader of document {index}: {document}"
            )
            if reader is not None:
                for case_id in reader.case_ids()[:2]:
                    _only_segbench_errors(lambda r=reader, c=case_id: r.read(c), f"read of document {index}")
    assert parsed > 10  # the generator reaches past the first checks, not only into errors


def test_random_and_mutated_task_file_bytes_give_only_config_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1401)
    path = tmp_path / "fuzz.toml"
    for index in range(300):
        if index % 3 == 0:
            data = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        else:  # a shipped task file with bytes flipped, deleted or duplicated
            data = bytearray(SHIPPED[index % len(SHIPPED)].read_bytes())
            for _ in range(int(rng.integers(1, 6))):
                at = int(rng.integers(0, len(data)))
                operation = int(rng.integers(0, 3))
                if operation == 0:
                    data[at] = int(rng.integers(0, 256))
                elif operation == 1:
                    del data[at : at + int(rng.integers(1, 20))]
                else:
                    data[at:at] = data[at : at + int(rng.integers(1, 20))]
            data = bytes(data)
        path.write_bytes(data)
        _only_segbench_errors(lambda: load_task(path), f"bytes {index}: {data[:120]!r}")


def _random_array(rng: np.random.Generator, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Values of a random dtype (a NaN now and then), of ``shape`` or of a random one of 0 to 4 axes."""
    if shape is None:
        shape = tuple(int(s) for s in rng.integers(0, 6, size=int(rng.integers(0, 5))))
    dtype = rng.choice([np.uint8, np.int16, np.float32, np.float64, np.bool_])
    values = rng.normal(0, 100, shape)
    if dtype == np.float32 and values.size and rng.random() < 0.3:
        values.flat[0] = np.nan
    return values.astype(dtype)


def _shape(rng: np.random.Generator, dim: int) -> tuple[int, ...]:
    return tuple(int(s) for s in rng.integers(1, 9, size=dim))


SPACINGS = (np.array([1.0, 1.0, 2.0]), np.array([[1.0]]), np.array([1.0, np.nan, 0.0]), np.array(["a", "b", "c"]))


def _encode(rng: np.random.Generator, suffix: str, array: np.ndarray) -> bytes:
    """``array`` in the container of ``suffix`` (or, now and then, random bytes instead)."""
    if rng.random() < 0.2:
        return rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    if suffix in (".png", ".tif"):
        pixels = np.clip(array, 0, 255).astype(np.uint8) if rng.random() < 0.8 else array
        try:
            Image.fromarray(pixels).save(buffer, format="PNG" if suffix == ".png" else "TIFF")
        except (TypeError, ValueError, OSError, KeyError, IndexError):  # Pillow cannot store it: random bytes
            return rng.integers(0, 256, 50, dtype=np.uint8).tobytes()
    elif suffix == ".npz":
        arrays = {
            "imgs": array,
            "gts": (array > 0).astype(np.uint8) if rng.random() < 0.7 else _random_array(rng),
            "spacing": SPACINGS[int(rng.integers(0, len(SPACINGS)))],
        }
        np.savez(buffer, **{key: value for key, value in arrays.items() if rng.random() < 0.9})
    elif suffix == ".nii":
        import nibabel

        volume = array.astype(np.uint8) if array.dtype == np.bool_ else array
        volume = volume if volume.ndim else volume.reshape(1)
        image = nibabel.Nifti1Image(volume, np.eye(4))
        try:
            image.header.set_zooms([float(rng.choice([1.0, 0.5, 0.0, -1.0, np.nan, 1e-9])) for _ in range(volume.ndim)])
        except Exception:  # noqa: BLE001 - nibabel refuses some zooms itself: the file keeps its defaults
            pass
        buffer.write(image.to_bytes())
    elif suffix == ".h5":
        import h5py

        with h5py.File(buffer, "w") as handle:
            if rng.random() < 0.9:
                handle["image"] = array
            if rng.random() < 0.9:
                handle["label"] = (array > 0).astype(np.uint8) if rng.random() < 0.7 else _random_array(rng)
    return buffer.getvalue()


def _case_files(rng: np.random.Generator, suffix: str, dim: int) -> tuple[bytes, bytes]:
    """An image and its mask: mostly plausible (one shape, integer mask), sometimes anything at all."""
    shape = _shape(rng, dim)
    if dim == 2 and rng.random() < 0.4:
        shape = (*shape, int(rng.choice([1, 3, 4])))
    image = _random_array(rng, shape) if rng.random() < 0.8 else _random_array(rng)
    mask_shape = shape[:2] if dim == 2 else shape
    mask = ((rng.random(mask_shape) < 0.3) * 255).astype(np.uint8) if rng.random() < 0.8 else _random_array(rng)
    return _encode(rng, suffix, image), _encode(rng, suffix, mask)


READER_TASKS = {
    ".png": ({"reader": "image_mask_pairs", "images": "*.png", "mask": "m/{name}"}, 2),
    ".tif": ({"reader": "image_mask_pairs", "images": "*.tif", "mask": "m/{name}", "mask_threshold": 127}, 2),
    ".npz": ({"reader": "npz", "images": "*.npz"}, 3),
    ".nii": ({"reader": "nifti", "images": "*.nii", "mask": "m/{name}"}, 3),
    ".h5": ({"reader": "hdf5", "images": "*.h5", "spacing": [1.0, 1.0, 1.0]}, 3),
}


@pytest.mark.parametrize("suffix", sorted(READER_TASKS))
def test_random_data_files_give_only_data_errors(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng([1402, sum(map(ord, suffix))])
    data, dim = READER_TASKS[suffix]
    root = tmp_path / "d"
    (root / "m").mkdir(parents=True)
    count = 40
    for index in range(count):
        image, mask = _case_files(rng, suffix, dim)
        (root / f"{index:03d}{suffix}").write_bytes(image)
        (root / "m" / f"{index:03d}{suffix}").write_bytes(mask)
    outcomes = {"read": 0, "refused": 0}
    for policy in ("minmax", "percentile", "rgb8"):
        spec = parse_task(
            {
                "task": {"name": "fuzz", "dim": dim},
                "data": {**data, "dataset": "d"},
                "intensity": {"policy": policy},
                "labels": {"x": "nonzero"},
            },
            tmp_path / "fuzz.toml",
        )
        reader = BUILTIN_READERS[spec.reader](spec, tmp_path)
        assert len(reader.case_ids()) == count
        for case_id in reader.case_ids():
            case = _only_segbench_errors(lambda r=reader, c=case_id: r.read(c), f"{policy} read of {case_id}{suffix}")
            outcomes["read" if case is not None else "refused"] += 1
    assert min(outcomes.values()) > 0, outcomes  # the inputs reach the decoding, not only the first check
