"""Prompt protocols: seeded, derived from the ground truth, identical for every adapter.

A protocol turns a *target* (one label of a case, or one connected component of it) into a prompt:

``box``            the tight bounding box of the target;
``box_jitter``     each box coordinate moved by a uniform integer in [-px, +px] (clipped to the image);
``center_point``   one positive click at the maximum of the distance transform inside the target;
``random_points``  ``k`` positive clicks drawn uniformly from the target's pixels;
``iterative``      start from a box or a center point, then ``clicks`` correction clicks, each at the
                   maximum of the distance transform inside the largest error component (8-connected
                   in 2D, 26-connected in 3D), positive or negative by the ground truth there, as in
                   the CVPR 2025 interactive segmentation challenge (``CVPR25_iter_eval.py``);
``support``        in-context: ``k`` labelled examples of the target's label from the task's support pool,
                   ``ensemble`` such sets averaged, optionally with a ``prompt`` (one of the one-step
                   kinds above) passed together with each set. ``k = [1, 2, 4]`` in a protocol list
                   expands into one protocol per size (the support-size axis). The pool is
                   :mod:`segbench.data.support_sets`'s; the draw, :func:`segbench.protocols.kinds.support_request`.

Volume protocols (3D tasks; their geometry lives in :mod:`segbench.protocols.volume_prompts`):

``key_slice_box``  the tight 2D box of the target on one key slice (``slice = "middle"`` of the
                   target's extent along the slices, or ``"largest"`` area), plus that extent; the
                   model propagates it through the volume;
``slice_boxes``    the tight 2D box on every ``every``-th slice of the target's extent (``every = 1``:
                   the MedSAM paper's slice-by-slice protocol; ``every = 2``: Medical-SAM2's);
``iterative_3d``   a key-slice box, then ``clicks`` 3D correction clicks (26-connected error
                   components), as in the CVPR 2025 challenge.

The field's named protocols, each reproducing its source's rule click for click (``cvpr25``, ``cvpr24``,
``microsam``), are kinds of :mod:`segbench.protocols.challenge_kinds`.

Each kind is a class in :mod:`segbench.protocols.kinds` (what a kind is: :mod:`segbench.protocols.base`),
registered through the ``segbench_register_protocols`` hook like a third-party kind; this module holds
the geometry the kinds share as plain functions, the seeding, and :class:`ProtocolSpec`, the handle by
which tasks, plans and results name a protocol.

Randomness comes from :func:`target_rng`, keyed by (seed, task, case, label, instance, protocol) and
never by adapter, so every adapter receives the same prompts. Correction clicks depend on each
adapter's own errors by design; they are deterministic given its predictions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from segbench import plugins
from segbench.errors import SegbenchError
from segbench.interface import Prompt
from segbench.lazy import lazy_import
from segbench.protocols.base import ProtocolKind, Target

ndimage = lazy_import("scipy.ndimage")  # imported on first use: declaring and planning need no scipy


def known_kinds() -> dict[str, type[ProtocolKind]]:
    """The protocol kind classes by ``kind``, built-in and third-party (``segbench_register_protocols``)."""
    known: dict[str, type[ProtocolKind]] = {}
    for kind, cls in plugins.protocols().items():
        if not (isinstance(cls, type) and issubclass(cls, ProtocolKind)):
            raise SegbenchError(f"protocol kind {kind!r} is registered as {cls!r}, not a ProtocolKind subclass")
        known[kind] = cls
    return known


def kind_class(kind: str) -> type[ProtocolKind]:
    known = known_kinds()
    if kind not in known:
        raise ValueError(f"unknown protocol kind {kind!r} (known: {', '.join(known)})")
    return known[kind]


@dataclass(frozen=True)
class ProtocolSpec:
    """A protocol as a task or suite names it: its kind and the parameters the file gave (sorted;
    defaults are not filled in, so unit ids stay as they were). Everything else comes from its kind's
    class (:attr:`handler`)."""

    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    @cached_property
    def handler(self) -> ProtocolKind:
        """The kind's object with these parameters."""
        return kind_class(self.kind)(dict(self.params))

    def param(self, key: str) -> Any:
        return self.handler.param(key)

    @property
    def name(self) -> str:
        """The protocol's name in results: ``box``, ``box_jitter5``, ``points3``, ``iterative_box5``."""
        return self.handler.name

    @property
    def dim(self) -> int:
        """The dimension of the tasks the protocol applies to (2 or 3)."""
        return self.handler.dim

    @property
    def steps(self) -> int:
        return self.handler.steps

    @property
    def propagates(self) -> bool:
        """Whether the model must carry the prompt to slices that have none (volume protocols)."""
        return self.handler.propagates

    @property
    def requires(self) -> frozenset[str]:
        """Adapter capabilities this protocol needs. A 2D adapter runs the volume protocols through the
        harness's slice strategies, except boxes on only some slices, which need a model that propagates."""
        return self.handler.requires


def parse_protocol(value: str | Mapping[str, Any]) -> ProtocolSpec:
    """``"box"`` or ``{kind = "box_jitter", px = 10}``; raises ValueError naming the problem."""
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, Mapping) or "kind" not in value:
        raise ValueError(f"a protocol is a kind name or a table with 'kind', got {value!r}")
    cls = kind_class(value["kind"])
    params = {k: v for k, v in value.items() if k != "kind"}
    cls.check(params)
    return ProtocolSpec(cls.kind, tuple(sorted(params.items())))


def parse_protocols(values: Sequence[str | Mapping[str, Any]]) -> tuple[ProtocolSpec, ...]:
    """A protocol list; a list given for a kind's ``axis`` (a ``support`` protocol's ``k = [1, 2, 4]``)
    becomes one protocol per value."""
    out: list[ProtocolSpec] = []
    for value in values:
        if isinstance(value, Mapping) and "kind" in value:
            axis = kind_class(value["kind"]).axis
            sizes = value.get(axis) if axis is not None else None
            if axis is not None and isinstance(sizes, list):
                if not sizes:
                    raise ValueError(f"protocol {value['kind']!r}: {axis} must be a size or a non-empty list of sizes")
                out += [parse_protocol({**value, axis: size}) for size in sizes]
                continue
        out.append(parse_protocol(value))
    return tuple(out)


def targets_for(labels: Mapping[str, np.ndarray], mode: str) -> list[Target]:
    """One target per non-empty label, or one per connected component when ``mode == "components"``."""
    targets: list[Target] = []
    for name, mask in labels.items():
        if not mask.any():
            continue
        if mode == "components":
            components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
            targets.extend(Target(name, i, components == i + 1) for i in range(count))
        else:
            targets.append(Target(name, 0, mask))
    return targets


def target_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (stable across processes and machines)."""
    digest = hashlib.sha256("\x1f".join(map(str, keys)).encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """``(x_min, y_min, x_max, y_max)`` of a 2D mask, inclusive pixel indices."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def jitter_box(box: np.ndarray, px: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    moved = box + rng.integers(-px, px + 1, size=4)
    height, width = shape
    x0, x1 = sorted(np.clip(moved[[0, 2]], 0, width - 1))
    y0, y1 = sorted(np.clip(moved[[1, 3]], 0, height - 1))
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def interior_point(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the maximum of the distance transform inside ``mask`` (image border counts as outside);
    ties go to the first index in C order."""
    # on the mask's bounding box padded by one: the same distances (every voxel outside the box is at
    # least as far as the padding) and the same C-order ties, for a fraction of a volume's cost
    extents = [
        np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis))) for axis in range(mask.ndim)
    ]
    lows = [int(extent[0]) for extent in extents]
    crop = mask[tuple(slice(extent[0], extent[-1] + 1) for extent in extents)]
    distance = ndimage.distance_transform_edt(np.pad(crop, 1))[(slice(1, -1),) * mask.ndim]
    index = np.unravel_index(int(np.argmax(distance)), crop.shape)
    return tuple(int(v) + lo for v, lo in zip(index, lows, strict=True))


def correction_click(gt: np.ndarray, pred: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """The CVPR 2025 click: at the distance-transform maximum of the largest error component.

    Returns (index, label) with label 1 where the ground truth is foreground (a missed region) and 0
    where it is background (a false positive), or ``None`` when the prediction is already perfect.
    """
    largest = largest_error_component(gt, pred)
    if largest is None:
        return None
    index = interior_point(largest)
    return index, int(gt[index])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest fully connected (8 in 2D, 26 in 3D) component of a non-empty mask, as a bool mask (the
    first in scan order on a tie)."""
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    return np.asarray(components == int(np.argmax(sizes)))


def largest_error_component(gt: np.ndarray, pred: np.ndarray) -> np.ndarray | None:
    """The largest fully connected component (:func:`largest_component`) of the voxels where ``pred`` and
    ``gt`` differ; None when they agree everywhere."""
    error = gt != pred
    if not error.any():
        return None
    return largest_component(error)


def point_xy(index: tuple[int, ...]) -> list[float]:
    """The (x, y) point of an index's last two axes (row, column)."""
    row, col = index[-2], index[-1]
    return [float(col), float(row)]


def initial_prompt(spec: ProtocolSpec, target: Target, rng: np.random.Generator) -> Prompt:
    """The first prompt of ``spec`` for a 2D ``target`` (:meth:`segbench.protocols.base.ProtocolKind.prompt`)."""
    return spec.handler.prompt(target, rng)


def refine_prompt(prompt: Prompt, target: Target, predicted: np.ndarray, feedback: Any) -> Prompt:
    """The next iterative prompt: the previous prompt plus one correction click and the adapter's feedback."""
    click = correction_click(target.mask, predicted)
    points = prompt.points if prompt.points is not None else np.zeros((0, 2))
    labels = prompt.point_labels if prompt.point_labels is not None else np.zeros(0, dtype=np.int64)
    if click is not None:
        index, label = click
        points = np.concatenate([points, [point_xy(index)]])
        labels = np.concatenate([labels, [label]])
    return Prompt(box=prompt.box, points=points, point_labels=labels, previous=feedback)
