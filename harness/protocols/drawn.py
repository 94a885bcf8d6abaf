"""Drawn prompts: a scribble along a target and a lasso around it, simulated from the ground truth.

nnInteractive takes four interaction kinds, points, boxes, scribbles and lassos, each include or exclude
(arXiv 2503.08373; the session's ``add_scribble_interaction`` and ``add_lasso_interaction`` take the drawing as
a mask of the image's shape). No challenge protocol draws scribbles or lassos (the CVPR 2025 interactive
challenge gives a box and clicks), so segbench's are its own rule, stated here and in the protocol's name, and,
like every other kind, a function of the target alone, identical for every adapter:

* **scribble**: one stroke along the target's centre line, as a user runs the pen through the middle of a
  structure. The stroke is the longest path through the skeleton (:func:`skimage.morphology.skeletonize`) of
  the target's largest 8-connected piece on the slice, its two ends found by two breadth-first searches (a
  tree's diameter); it is widened to ``radius`` pixels (a disk; the default 1 makes a stroke 3 px wide, about
  the v1.0 session's ``preferred_scribble_thickness`` of 2) and kept inside the target, so an include
  scribble never touches the background. A piece whose skeleton is a single pixel gives that pixel.
* **lasso**: the filled convex hull of the target on the slice (:func:`skimage.morphology.convex_hull_image`),
  the tightest closed outline drawn around all its pieces, as the tight box is the tightest box.

A 2D kind draws on the image; a volume kind draws on the key slice (``middle`` or ``largest``, as the key-slice
box does) and gives the target's extent, and the model propagates: a volume kind needs a 3D-native model
(``volume`` beside ``scribble`` or ``lasso``), as the harness's slice-by-slice propagation for 2D models
(:mod:`segbench.protocols.propagation`) carries boxes only. One step each: a corrective scribble
or lasso (an exclude stroke over a false positive) is not simulated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from segbench.hookspecs import hookimpl
from segbench.interface import Prompt, VolumePrompt
from segbench.protocols.base import ProtocolKind, Target
from segbench.protocols.kinds import KeySliceKind, PromptKind
from segbench.protocols.prompts import largest_component
from segbench.protocols.volume_prompts import key_slice, slice_extent

EIGHT = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _farthest(pixels: set[tuple[int, int]], start: tuple[int, int]) -> tuple[tuple[int, int], dict]:
    """The skeleton pixel farthest from ``start`` in 8-connected steps (the first found on a tie, in a
    fixed neighbour order) and the breadth-first tree that reached it."""
    parent: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    last = start
    while queue:
        last = queue.popleft()
        for dy, dx in EIGHT:
            step = (last[0] + dy, last[1] + dx)
            if step in pixels and step not in parent:
                parent[step] = last
                queue.append(step)
    return last, parent


def centre_line(mask: np.ndarray) -> np.ndarray:
    """The longest path through the skeleton of ``mask``'s largest piece, as an (H, W) bool mask."""
    from skimage.morphology import skeletonize

    piece = largest_component(mask)
    skeleton = skeletonize(piece)
    rows, cols = np.nonzero(skeleton if skeleton.any() else piece)
    pixels = set(zip(rows.tolist(), cols.tolist(), strict=True))
    first = min(pixels)
    end, _ = _farthest(pixels, first)
    other, parent = _farthest(pixels, end)
    line = np.zeros(mask.shape, dtype=bool)
    at: tuple[int, int] | None = other
    while at is not None:
        line[at] = True
        at = parent[at]
    return line


def scribble(mask: np.ndarray, radius: int) -> np.ndarray:
    """The include scribble of a 2D target: its centre line widened to ``radius`` px, kept inside it."""
    from scipy import ndimage

    line = centre_line(mask)
    if radius > 0:
        span = np.arange(-radius, radius + 1)
        disk = span[:, None] ** 2 + span[None, :] ** 2 <= radius**2
        line = ndimage.binary_dilation(line, structure=disk)
    return line & mask.astype(bool)


def lasso(mask: np.ndarray) -> np.ndarray:
    """The include lasso of a 2D target: the filled convex hull of all its pixels."""
    from skimage.morphology import convex_hull_image

    return np.asarray(convex_hull_image(mask.astype(bool)), dtype=bool) | mask.astype(bool)


def scribble_prompt(mask: np.ndarray, radius: int) -> Prompt:
    return Prompt(scribbles=scribble(mask, radius)[None], scribble_labels=np.array([1]))


def lasso_prompt(mask: np.ndarray) -> Prompt:
    return Prompt(lassos=lasso(mask)[None], lasso_labels=np.array([1]))


class ScribbleKind(ProtocolKind):
    """The scribble kinds' ``radius`` parameter: the stroke's half-width in pixels beyond its centre line."""

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        super().check(params)
        if params.get("radius", 1) > 32:
            raise ValueError(f"protocol {cls.kind!r}: radius is in pixels, at most 32")

    @property
    def radius(self) -> int:
        return int(self.param("radius"))

    @property
    def radius_suffix(self) -> str:
        """What a radius other than the default adds to the protocol's name."""
        return "" if self.radius == 1 else f"_r{self.radius}"


class Scribble(ScribbleKind, PromptKind):
    """One include scribble along the target's centre line (module docstring)."""

    kind = "scribble"
    defaults = {"radius": 1}
    needs = frozenset({"scribble"})

    @property
    def name(self) -> str:
        return "scribble" + self.radius_suffix

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        return scribble_prompt(target.mask, self.radius)


class Lasso(PromptKind):
    """One include lasso: the target's filled convex hull (module docstring)."""

    kind = "lasso"
    needs = frozenset({"lasso"})

    def prompt(self, target: Target, rng: np.random.Generator) -> Prompt:
        return lasso_prompt(target.mask)


class KeySliceDrawn(KeySliceKind):
    """A drawing on the target's key slice, with its extent; the model propagates it."""

    def draw(self, mask: np.ndarray) -> Prompt:
        raise NotImplementedError

    def volume_prompt(self, target: Target) -> VolumePrompt:
        key = key_slice(target.mask, self.param("slice"))
        return VolumePrompt({key: self.draw(target.mask[key])}, key, slice_extent(target.mask))


class KeySliceScribble(ScribbleKind, KeySliceDrawn):
    kind = "key_slice_scribble"
    defaults = {"slice": "middle", "radius": 1}
    needs = frozenset({"scribble", "volume"})
    short = "scribble"

    @property
    def name(self) -> str:
        return super().name + self.radius_suffix

    def draw(self, mask: np.ndarray) -> Prompt:
        return scribble_prompt(mask, self.radius)


class KeySliceLasso(KeySliceDrawn):
    kind = "key_slice_lasso"
    needs = frozenset({"lasso", "volume"})
    short = "lasso"

    def draw(self, mask: np.ndarray) -> Prompt:
        return lasso_prompt(mask)


DRAWN_KINDS: tuple[type[ProtocolKind], ...] = (Scribble, Lasso, KeySliceScribble, KeySliceLasso)


@hookimpl
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    """The drawn kinds: ``scribble``, ``lasso``, ``key_slice_scribble``, ``key_slice_lasso``."""
    for kind in DRAWN_KINDS:
        register(kind)
