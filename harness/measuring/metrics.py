"""Segmentation metrics: Dice, NSD at a tolerance in mm, and HD95, for 2D and 3D masks.

Definitions (one per metric, written down):

* **Dice** = 2|G ∩ S| / (|G| + |S|).
* **NSD** (normalised surface Dice) and **HD95** follow DeepMind's ``surface-distance`` exactly:
  surface elements ("surfels") sit on the corners between voxels, each weighted by its contour length
  (2D) or area (3D) in mm from the spacing-aware marching-squares/cubes tables of that package;
  NSD(τ) is the share of both surfaces' weight lying within τ mm of the other surface; HD95 is the
  larger of the two directed 95th percentiles of surfel distance, percentiles taken over surfel weight
  ("robust Hausdorff"). This is not medpy's ``hd95``, which takes percentiles over voxel counts.

**Empty-mask policy** (prompted segmentation never has an empty ground truth, but predictions can
be empty, and 3D evaluation can meet empty slices):

* ground truth and prediction both empty: Dice 1, NSD 1, HD95 0 (a perfect answer, as in
  MetricsReloaded);
* exactly one empty: Dice 0, NSD 0, HD95 = the diagonal of the image extent in mm, the largest
  distance possible in the image (``surface-distance`` returns infinity here, which would make every
  mean infinite).

Speed: the surfel maps are computed with shifted slices on the joint bounding box only, and instead
of two distance transforms over that box, the distance from each surfel to the other surface is
found by trying voxel offsets nearest first against the other surface (most surfels lie within a few
voxels of it), with a k-d tree for the few that do not. Distances use the arithmetic of scipy's
distance transform, so the results equal ``surface-distance``'s.

**Voxel budget.** The search neighbourhood is a ball in mm, so its reach in voxels along an axis is
its radius over that axis's spacing: it depends on the spacing's anisotropy, not its scale. A spacing
of 1e-9 mm along one axis and 1 mm along the others would reach ~10^7 voxels along the first and
allocate gigabytes. :func:`spacing_problem` refuses a spacing that is not finite, not positive, or
whose neighbourhood's bounding box would hold more than ``NEIGHBOURHOOD_BUDGET`` offsets or whose
reach would add more than ``MARGIN_BUDGET`` voxels to the search grid beyond the image's own extent
(a 1 mm volume needs ~7,000 offsets; a 155x240x240 one a margin of ~3e6 voxels). Cases are checked
when they are made (:class:`segbench.data.case.Case`), and :func:`surface_distances` checks again before
it allocates anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree
from surface_distance import lookup_tables

# Part of every work unit's id (segbench.running.plan): bump it when a metric's definition or the empty-mask
# policy changes, so resumed runs score their cases again instead of mixing two definitions.
METRICS_VERSION = "1"

# Size of the neighbourhood searched directly before falling back to a k-d tree.
NEIGHBOURHOOD_OFFSETS = 3000
GATHER_BLOCK = 1 << 18
# Voxel budgets (module docstring): the neighbourhood's bounding box (int64 offsets: ~100 MiB in 3D) and
# the search grid's margin beyond the image (bool voxels: 128 MiB per grid).
NEIGHBOURHOOD_BUDGET = 1 << 22
MARGIN_BUDGET = 1 << 27


@dataclass(frozen=True)
class Scores:
    dice: float
    nsd: float
    hd95: float


@dataclass(frozen=True)
class SurfaceDistances:
    """Per-surfel distances to the other surface (mm), sorted ascending, with each surfel's weight."""

    gt_to_pred: np.ndarray
    pred_to_gt: np.ndarray
    areas_gt: np.ndarray
    areas_pred: np.ndarray


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(gt & pred)) / total


@lru_cache(maxsize=64)
def _area_table(spacing: tuple[float, ...]) -> np.ndarray:
    if len(spacing) == 2:
        return lookup_tables.create_table_neighbour_code_to_contour_length(spacing)
    return lookup_tables.create_table_neighbour_code_to_surface_area(spacing)


def _kernel(ndim: int) -> np.ndarray:
    return lookup_tables.ENCODE_NEIGHBOURHOOD_2D_KERNEL if ndim == 2 else lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL


def neighbour_codes(padded: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every 2x2(x2) window of ``padded`` (a crop with one zero layer on each
    side), equal to ``ndimage.correlate(crop, kernel, mode="constant")`` on surface-distance's crop."""
    kernel = _kernel(padded.ndim)
    out_shape = tuple(n - 1 for n in padded.shape)
    codes = np.zeros(out_shape, dtype=np.uint8)
    for offset in np.ndindex(*kernel.shape):
        window = tuple(slice(o, o + n) for o, n in zip(offset, out_shape, strict=True))
        codes |= padded[window].astype(np.uint8) * np.uint8(kernel[offset])
    return codes


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    lows, highs = [], []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        lows.append(hits[0])
        highs.append(hits[-1])
    return np.array(lows), np.array(highs)


def _lattice_distances(deltas: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Euclidean length (mm) of integer voxel offsets, with the arithmetic of scipy's distance
    transform (scale, square, sum over axes in order, square root), so values match it bit for bit."""
    scaled = deltas.astype(np.float64) * spacing
    squared = scaled * scaled
    total = squared[:, 0] + squared[:, 1]
    if spacing.size == 3:
        total = total + squared[:, 2]
    return np.sqrt(total)


def _search_reach(spacing: tuple[float, ...]) -> tuple[float, np.ndarray]:
    """The radius (mm) of a ball holding about NEIGHBOURHOOD_OFFSETS lattice points, and its reach in
    voxels along each axis (at least 1)."""
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    ball = 4 / 3 * math.pi if len(spacing) == 3 else math.pi
    radius = (NEIGHBOURHOOD_OFFSETS * float(np.prod(spacing_arr)) / ball) ** (1 / len(spacing))
    return radius, np.maximum(1, np.floor(radius / spacing_arr)).astype(np.int64)


def spacing_problem(shape: tuple[int, ...], spacing: tuple[float, ...]) -> str | None:
    """Why the surface metrics cannot use ``spacing`` for masks of ``shape`` (module docstring), or None."""
    values = [float(s) for s in spacing]
    if not all(math.isfinite(s) for s in values):
        return f"spacing {tuple(values)} is not finite"
    if any(s <= 0 for s in values):
        return f"spacing {tuple(values)} is not positive"
    ratio = max(values) / min(values)
    if ratio > NEIGHBOURHOOD_BUDGET:  # the reach alone would exceed the budget (and overflow int64 on the way)
        return f"spacing {tuple(values)} is anisotropic beyond the metrics' voxel budget (ratio {ratio:.3g})"
    _, reach = _search_reach(tuple(values))
    box = math.prod(int(2 * r + 1) for r in reach)
    margin = math.prod(int(n + 1 + 2 * r) for n, r in zip(shape, reach, strict=True)) - math.prod(
        int(n + 1) for n in shape
    )
    if box > NEIGHBOURHOOD_BUDGET or margin > MARGIN_BUDGET:
        return (
            f"spacing {tuple(values)} is anisotropic beyond the metrics' voxel budget: on a "
            f"{'x'.join(map(str, shape))} grid their search would take {box:.3g} offsets (budget "
            f"{NEIGHBOURHOOD_BUDGET:.3g}) and {margin:.3g} voxels beyond the image (budget {MARGIN_BUDGET:.3g})"
        )
    return None


@lru_cache(maxsize=64)
def _search_offsets(spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets of a neighbourhood (about NEIGHBOURHOOD_OFFSETS of them), nearest first."""
    spacing_arr = np.asarray(spacing)
    radius, reach = _search_reach(spacing)
    grids = np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    lengths = _lattice_distances(offsets, spacing_arr)
    keep = lengths <= radius
    order = np.argsort(lengths[keep], kind="stable")
    return offsets[keep][order], lengths[keep][order]


def _directed_distances(
    sources: np.ndarray, target_grid: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from each surfel ``sources`` (flat indices into ``target_grid``'s shape) to the
    nearest ``True`` of ``target_grid``, which carries a margin of the search reach on every side.

    Offsets of a neighbourhood are tried nearest first against the target grid; the first hit is the
    exact nearest distance. The few surfels with no hit in the neighbourhood go to a k-d tree.
    Also returns each distance's rank: the index of its offset (nearest first), or -1 when found by
    the k-d tree (then farther than every offset)."""
    offsets, lengths = _search_offsets(tuple(float(s) for s in spacing))
    shape = target_grid.shape
    offsets_linear = offsets @ _strides(shape)
    flat = target_grid.ravel()
    rank = np.full(len(sources), -1, dtype=np.int64)
    pending = np.arange(len(sources))
    start = 0
    while pending.size and start < len(offsets_linear):
        # a block of offsets at once, sized so the gather stays about GATHER_BLOCK elements; offset-major,
        # so each row of the gather walks the (sorted) surfels in memory order
        stop = min(len(offsets_linear), start + max(1, GATHER_BLOCK // pending.size))
        hits = np.take(flat, offsets_linear[start:stop, None] + sources[pending][None, :], mode="clip")
        found = hits.any(axis=0)
        rank[pending[found]] = start + hits[:, found].argmax(axis=0)
        pending = pending[~found]
        start = stop
    result = np.where(rank >= 0, lengths[rank], np.inf)
    if pending.size:
        targets = np.stack(np.unravel_index(np.flatnonzero(flat), shape), axis=1)
        far = np.stack(np.unravel_index(sources[pending], shape), axis=1)
        _, nearest = cKDTree(targets * spacing).query(far * spacing, k=1)
        result[pending] = _lattice_distances(targets[nearest] - far, spacing)
    return result, rank


def _sorted(distances: np.ndarray, rank: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances ascending (with their areas). Sorting by offset rank is a radix sort and gives the
    distance order; surface-distance also orders equal distances by area, which cannot change a
    percentile (the cumulative weight at the end of each group of equal distances is the same)."""
    near = np.flatnonzero(rank >= 0)
    far = np.flatnonzero(rank < 0)
    key = rank[near].astype(np.uint16) if len(near) and rank.max() < 2**16 else rank[near]
    order = np.concatenate([near[np.argsort(key, kind="stable")], far[np.argsort(distances[far], kind="stable")]])
    return distances[order], areas[order]


def _strides(shape: tuple[int, ...]) -> np.ndarray:
    return np.array([int(np.prod(shape[i + 1 :])) for i in range(len(shape))])


def surface_distances(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> SurfaceDistances:
    """Surfel distances between two bool masks (2D or 3D), equal to surface-distance's."""
    if gt.shape != pred.shape or gt.ndim != len(spacing) or gt.ndim not in (2, 3):
        raise ValueError(f"masks {gt.shape} / {pred.shape} and spacing {spacing} do not agree (2D or 3D)")
    problem = spacing_problem(gt.shape, spacing)
    if problem:
        raise ValueError(problem)
    empty = np.zeros(0)
    box = _bbox(gt | pred)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    window = tuple(slice(a, b + 1) for a, b in zip(*box, strict=True))
    spacing_key = tuple(float(s) for s in spacing)
    table = _area_table(spacing_key)
    full = 2 ** (2**gt.ndim) - 1
    # surfel codes on the box with one zero layer (for the surfels on its faces); the search grids add
    # the search reach on every side so that no offset leaves them
    reach = np.abs(_search_offsets(spacing_key)[0]).max(axis=0)
    codes = [neighbour_codes(np.pad(mask[window], 1)) for mask in (gt, pred)]
    grid_shape = tuple(int(n + 2 * r) for n, r in zip(codes[0].shape, reach, strict=True))
    grid_strides = _strides(grid_shape)
    grids, sources, areas = [], [], []
    for mask_codes in codes:
        flat_codes = mask_codes.ravel()
        surfels = np.flatnonzero((flat_codes != 0) & (flat_codes != full))
        coordinates = np.unravel_index(surfels, mask_codes.shape)
        linear = sum((c + int(r)) * int(s) for c, r, s in zip(coordinates, reach, grid_strides, strict=True))
        grid = np.zeros(grid_shape, dtype=bool)
        grid.ravel()[linear] = True
        grids.append(grid)
        sources.append(np.asarray(linear, dtype=np.int64))
        areas.append(table[flat_codes[surfels]])
    if sources[0].size == 0 or sources[1].size == 0:
        # one surface is empty: every distance from the other one is infinite
        return SurfaceDistances(np.full(len(sources[0]), np.inf), np.full(len(sources[1]), np.inf), areas[0], areas[1])
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    gt_to_pred, areas_gt = _sorted(*_directed_distances(sources[0], grids[1], spacing_arr), areas[0])
    pred_to_gt, areas_pred = _sorted(*_directed_distances(sources[1], grids[0], spacing_arr), areas[1])
    return SurfaceDistances(gt_to_pred, pred_to_gt, areas_gt, areas_pred)


def surface_dice(distances: SurfaceDistances, tolerance_mm: float) -> float:
    overlap = np.sum(distances.areas_gt[distances.gt_to_pred <= tolerance_mm]) + np.sum(
        distances.areas_pred[distances.pred_to_gt <= tolerance_mm]
    )
    return float(overlap / (np.sum(distances.areas_gt) + np.sum(distances.areas_pred)))


def _directed_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    cumulative = np.cumsum(areas) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(index, len(distances) - 1)])


def robust_hausdorff(distances: SurfaceDistances, percent: float = 95.0) -> float:
    return max(
        _directed_percentile(distances.gt_to_pred, distances.areas_gt, percent),
        _directed_percentile(distances.pred_to_gt, distances.areas_pred, percent),
    )


def image_diagonal_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


def evaluate(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float) -> Scores:
    """Dice, NSD at ``tolerance_mm`` and HD95 of two bool masks, with the empty-mask policy above."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    gt_empty, pred_empty = not gt.any(), not pred.any()
    if gt_empty and pred_empty:
        return Scores(1.0, 1.0, 0.0)
    if gt_empty or pred_empty:
        return Scores(0.0, 0.0, image_diagonal_mm(gt.shape, spacing))
    distances = surface_distances(gt, pred, spacing)
    return Scores(dice(gt, pred), surface_dice(distances, tolerance_mm), robust_hausdorff(distances))
