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

from segbench.data.taskspec import check_protocol_tables
from segbench.errors import ConfigError
from segbench.names import name_problem
from segbench.protocols.prompts import ProtocolSpec, parse_protocols
from segbench.strict import Kind, check_table, closest

DEFAULT_SUITE = "quick"
SUITE_KEYS: dict[str, Kind] = {
    "description": "string",
    "adapters": "any",
    "tasks": "any",
    "protocols": "any",
    "seed": "integer",
    "limit": "integer",
    "save_masks": "any",
}

DEFAULT_SAVE_MASKS: int | None = None  # every case


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
    save_masks: int | None = DEFAULT_SAVE_MASKS  # cases per task whose masks are kept, None: all (kept_masks)


@dataclass(frozen=True)
class SuiteConfig:
    path: Path
    suites: dict[str, Suite]
    task_dirs: tuple[Path, ...]

    def suite(self, name: str) -> Suite:
        if name not in self.suites:
            close = closest(name, self.suites)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConfigError(self.path, f"no suite '{name}'{hint} (suites: {', '.join(self.suites)})")
        return self.suites[name]


def _names(table: Mapping[str, Any], key: str, path: Path, where: str) -> tuple[str, ...]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, f"[{where}] '{key}' must be a non-empty list of names")
    return tuple(value)


def _parse_suite(name: str, table: Any, path: Path) -> Suite:
    where = f"suites.{name}"
    problem = name_problem(name)
    if problem:  # the suite name starts the run id, the run directory's name
        raise ConfigError(path, f"[{where}] suite name {problem}")
    if not isinstance(table, Mapping):
        raise ConfigError(path, f"[{where}] must be a table")
    check_table(table, SUITE_KEYS, path, f"[{where}]")
    protocols = None
    if "protocols" in table:
        if not isinstance(table["protocols"], list) or not table["protocols"]:
            raise ConfigError(path, f"[{where}] protocols must be a non-empty list")
        check_protocol_tables(table["protocols"], path, f"[{where}]")
        try:
            protocols = parse_protocols(table["protocols"])
        except (ValueError, TypeError) as error:
            raise ConfigError(path, f"[{where}] protocols: {error}") from None
    seed = table.get("seed", 0)
    limit = table.get("limit")
    if limit is not None and limit < 1:
        raise ConfigError(path, f"[{where}] limit must be a positive integer, got {limit!r}")
    save_masks = table.get("save_masks", DEFAULT_SAVE_MASKS)
    if save_masks == "all":
        save_masks = None
    elif save_masks is not None and (not isinstance(save_masks, int) or isinstance(save_masks, bool) or save_masks < 0):
        raise ConfigError(path, f'[{where}] save_masks must be an integer >= 0 or "all", got {save_masks!r}')
    return Suite(
        name,
        table.get("description", ""),
        _names(table, "adapters", path, where),
        _names(table, "tasks", path, where),
        protocols,
        seed,
        limit,
        path,
        save_masks,
    )


def load_config(path: Path | None = None) -> SuiteConfig:
    path = Path(path) if path is not None else default_config()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, f"cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
    check_table(document, {"suites": "any", "task_dirs": "strings"}, path, "top level")
    suites_table = document.get("suites")
    if not isinstance(suites_table, Mapping) or not suites_table:
        raise ConfigError(path, "no [suites.NAME] table")
    task_dirs = tuple((path.parent / d).resolve() for d in document.get("task_dirs", []))
    suites = {name: _parse_suite(name, table, path) for name, table in suites_table.items()}
    return SuiteConfig(path, suites, task_dirs)
