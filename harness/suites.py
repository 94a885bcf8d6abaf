"""Suites from ``benchmark.toml``: which adapters run on which tasks, with which prompt protocols.

``segbench run`` reads the ``benchmark.toml`` shipped with segbench unless ``--config FILE`` names
another; a config may add ``task_dirs`` (relative to the file) holding a lab's own task files.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segbench.errors import ConfigError
from segbench.prompts import ProtocolSpec, parse_protocols
from segbench.samples import DEFAULT_SAVE_MASKS

DEFAULT_SUITE = "quick"


def default_config() -> Path:
    return Path(str(importlib.resources.files("segbench").joinpath("benchmark.toml")))


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    adapters: tuple[str, ...]
    tasks: tuple[str, ...]
    protocols: tuple[ProtocolSpec, ...] | None  # None: each task's own protocols
    seed: int
    limit: int | None
    source: Path
    save_masks: int | None = DEFAULT_SAVE_MASKS  # cases per task whose masks are kept, None: all (segbench.samples)


@dataclass(frozen=True)
class SuiteConfig:
    path: Path
    suites: dict[str, Suite]
    task_dirs: tuple[Path, ...]

    def suite(self, name: str) -> Suite:
        if name not in self.suites:
            raise ConfigError(self.path, f"no suite '{name}' (suites: {', '.join(self.suites)})")
        return self.suites[name]


def _names(table: Mapping[str, Any], key: str, path: Path, where: str) -> tuple[str, ...]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, f"[{where}] '{key}' must be a non-empty list of names")
    return tuple(value)


def _parse_suite(name: str, table: Mapping[str, Any], path: Path) -> Suite:
    where = f"suites.{name}"
    known = {"description", "adapters", "tasks", "protocols", "seed", "limit", "save_masks"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(path, f"[{where}] unknown key(s) {sorted(unknown)} (known: {sorted(known)})")
    protocols = None
    if "protocols" in table:
        try:
            protocols = parse_protocols(table["protocols"])
        except (ValueError, TypeError) as error:
            raise ConfigError(path, f"[{where}] protocols: {error}") from None
    seed = table.get("seed", 0)
    limit = table.get("limit")
    if not isinstance(seed, int) or (limit is not None and (not isinstance(limit, int) or limit < 1)):
        raise ConfigError(path, f"[{where}] seed must be an integer and limit a positive integer")
    save_masks = table.get("save_masks", DEFAULT_SAVE_MASKS)
    if save_masks == "all":
        save_masks = None
    elif save_masks is not None and (not isinstance(save_masks, int) or isinstance(save_masks, bool) or save_masks < 0):
        raise ConfigError(path, f"[{where}] save_masks must be an integer >= 0 or \"all\", got {save_masks!r}")
    return Suite(name, str(table.get("description", "")), _names(table, "adapters", path, where),
                 _names(table, "tasks", path, where), protocols, seed, limit, path, save_masks)


def load_config(path: Path | None = None) -> SuiteConfig:
    path = Path(path) if path is not None else default_config()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "config file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
    suites_table = document.get("suites")
    if not isinstance(suites_table, Mapping) or not suites_table:
        raise ConfigError(path, "no [suites.NAME] table")
    task_dirs = tuple((path.parent / d).resolve() for d in document.get("task_dirs", []))
    suites = {name: _parse_suite(name, table, path) for name, table in suites_table.items()}
    return SuiteConfig(path, suites, task_dirs)
