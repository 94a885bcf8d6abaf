"""Support sets for in-context protocols: the pool/query split of a task, seeded draws, ensembling.

A task with a ``[support]`` table is split, deterministically, into a *support pool* and *queries*:
only queries are scored (by every protocol of the task, so prompted and in-context rows cover the same
cases), and support sets are drawn only from the pool, so no query ever sees its own labels. The split
is one of ``pool_glob`` (case ids matching any of the globs), ``pool_cases`` (a list of case ids) or
``pool_fraction`` (that share of the cases, first in the order of a hash of ``split_seed`` and the
case id: independent of the listing order, and adding cases displaces at most as many pool members).

For a query case and one of its labels, a ``support`` protocol draws ``ensemble`` sets of ``k``
distinct pool examples among the pool cases where that label is present (the request itself, sets and
prompts for every label of the case: :func:`segbench.protocols.kinds.support_request`). The generator is keyed by
(suite seed, task, case, label, k, set index) and never by adapter, so every in-context adapter sees
exactly the same sets. A label whose pool holds fewer than ``k`` examples is not asked at that size
(the plan already drops sizes larger than the whole pool, with a reason in the run manifest).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from segbench.errors import ConfigError, DataError
from segbench.interface import InputKind, Prediction, RawImage, Support
from segbench.protocols.prompts import ProtocolSpec, target_rng

if TYPE_CHECKING:
    from segbench.data.case import Case

SPLIT_KEYS = ("pool_glob", "pool_cases", "pool_fraction")


@dataclass(frozen=True)
class SupportSplit:
    """How a task's cases divide into a support pool and queries (exactly one rule is set)."""

    globs: tuple[str, ...] = ()
    cases: tuple[str, ...] = ()
    fraction: float | None = None
    seed: int = 0

    def split(self, case_ids: Sequence[str], source: Path | str) -> tuple[list[str], list[str]]:
        """(pool, queries), each in the order of ``case_ids``; a ConfigError naming ``source`` if
        either is empty or ``pool_cases`` names unknown cases."""
        if self.globs:
            in_pool = {c for c in case_ids if any(fnmatch.fnmatchcase(c, g) for g in self.globs)}
        elif self.cases:
            unknown = sorted(set(self.cases) - set(case_ids))
            if unknown:
                raise ConfigError(source, f"[support] pool_cases names unknown case(s) {unknown[:5]}")
            in_pool = set(self.cases)
        else:
            ranked = sorted(case_ids, key=lambda c: hashlib.sha256(f"{self.seed}\x1f{c}".encode()).hexdigest())
            in_pool = set(ranked[: round(len(ranked) * (self.fraction or 0.0))])
        pool = [c for c in case_ids if c in in_pool]
        queries = [c for c in case_ids if c not in in_pool]
        if not pool or not queries:
            raise ConfigError(
                source,
                f"[support] splits {len(case_ids)} cases into {len(pool)} support and "
                f"{len(queries)} query cases; both must be non-empty",
            )
        return pool, queries


def parse_support_split(table: Any, path: Path) -> SupportSplit:
    if not isinstance(table, Mapping):
        raise ConfigError(path, "[support] must be a table")
    unknown = set(table) - {*SPLIT_KEYS, "split_seed"}
    if unknown:
        raise ConfigError(path, f"[support] unknown key(s) {sorted(unknown)} (known: {[*SPLIT_KEYS, 'split_seed']})")
    given = [key for key in SPLIT_KEYS if key in table]
    if len(given) != 1:
        raise ConfigError(path, f"[support] needs exactly one of {SPLIT_KEYS}, got {given or 'none'}")
    seed = table.get("split_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(path, f"[support] split_seed must be an integer, got {seed!r}")
    value = table[given[0]]
    if given[0] == "pool_fraction":
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1:
            raise ConfigError(path, f"[support] pool_fraction must be a number between 0 and 1, got {value!r}")
        return SupportSplit(fraction=float(value), seed=seed)
    values = [value] if isinstance(value, str) and given[0] == "pool_glob" else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(path, f"[support] {given[0]} must be a non-empty list of strings, got {value!r}")
    return SupportSplit(globs=tuple(values)) if given[0] == "pool_glob" else SupportSplit(cases=tuple(values))


def unfit_reason(protocol: ProtocolSpec, task_name: str, pool_size: int | None) -> str | None:
    """Why a support protocol cannot run on a task (no pool, or a pool smaller than ``k``), else None."""
    size = protocol.handler.support_size
    if size is None:  # a prompted kind
        return None
    if pool_size is None:
        return f"{protocol.name} needs a support pool, and task '{task_name}' declares no [support] table"
    if size > pool_size:
        return (
            f"{protocol.name} needs {size} support examples; the support pool of task "
            f"'{task_name}' holds {pool_size} cases"
        )
    return None


def support_rng(seed: int, task: str, case_id: str, label: str, k: int, member: int) -> np.random.Generator:
    """The generator of one support set: keyed by everything that defines it and never by adapter."""
    return target_rng(seed, "support", task, case_id, label, k, member)


class CaseReader(Protocol):
    """What the pool needs of the task's reader (:class:`segbench.data.readers.base.Reader`, which the
    task spec's modules may not import: the readers import them)."""

    def read(self, case_id: str) -> Case: ...


class SupportPool:
    """The pool cases of one task, read once (through the task's reader, resize included) and kept.

    ``input`` is the adapter's (``AdapterMeta.input``): an ``rgb8`` adapter's support images are the 8-bit
    images after the task's intensity policy, a ``raw`` adapter's the cases' raw pixels as a
    :class:`~segbench.interface.RawImage` with their spacing and the task's ``modality``, as its queries
    come (a pool case whose reader keeps no raw pixels is a DataError: never windowed pixels passed off as
    raw ones)."""

    def __init__(self, reader: CaseReader, case_ids: Sequence[str], input: InputKind = "rgb8", modality: str = ""):
        self.reader = reader
        self.case_ids = list(case_ids)
        self.input = input
        self.modality = modality
        self._cases: dict[str, Case] | None = None

    @property
    def cases(self) -> dict[str, Case]:
        if self._cases is None:
            self._cases = {case_id: self.reader.read(case_id) for case_id in self.case_ids}
        return self._cases

    def candidates(self, label: str) -> list[str]:
        """Pool cases where ``label`` is present, in pool order."""
        return [c for c, case in self.cases.items() if label in case.labels and case.labels[label].any()]

    def draw(self, seed: int, task: str, case_id: str, label: str, k: int, members: int) -> list[list[str]]:
        """``members`` sets of ``k`` distinct pool cases holding ``label``; [] if fewer than ``k`` exist."""
        candidates = self.candidates(label)
        if len(candidates) < k:
            return []
        sets = []
        for member in range(members):
            chosen = support_rng(seed, task, case_id, label, k, member).choice(len(candidates), k, replace=False)
            sets.append([candidates[i] for i in chosen])
        return sets

    def support(self, case_ids: Sequence[str], label: str) -> Support:
        cases = [self.cases[c] for c in case_ids]
        return Support([self._image(case) for case in cases], [case.labels[label] for case in cases])

    def _image(self, case: Case) -> np.ndarray | RawImage:
        if self.input == "rgb8":
            return case.image
        if case.raw is None:
            where = case.sources[0] if case.sources else case.case_id
            raise DataError(where, "the adapter takes raw intensities, and this support case's reader keeps none")
        return RawImage(case.raw, case.spacing, case.unit, self.modality, case.affine)


def ensemble_masks(prediction: Prediction, members: int) -> np.ndarray:
    """Masks of targets asked with ``members`` consecutive support sets each: the mean of the adapter's
    probabilities (its masks, i.e. a majority vote, when it gives none) thresholded at 0.5."""
    if members == 1:
        return prediction.masks.astype(bool)
    soft = prediction.probabilities if prediction.probabilities is not None else prediction.masks
    if soft.shape != prediction.masks.shape:
        raise ValueError(f"adapter returned probabilities of shape {soft.shape}, masks of {prediction.masks.shape}")
    soft = soft.astype(np.float32)
    return soft.reshape(-1, members, *soft.shape[1:]).mean(axis=1) > 0.5
