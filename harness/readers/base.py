"""The reader contract: list the cases of a task and read one as a :class:`~segbench.case.Case`."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from segbench.case import Case
from segbench.errors import ConfigError
from segbench.taskspec import TaskSpec


class Reader(ABC):
    """Reads one task's cases from ``data_root / task.dataset``.

    Subclasses validate their ``[data]`` options in ``__init__`` (raising :class:`ConfigError`
    naming the task file), list case ids cheaply in ``case_ids`` and do the I/O in ``read``.
    """

    def __init__(self, task: TaskSpec, data_root: Path | None):
        self.task = task
        if task.needs_data_root:
            if data_root is None:
                raise ConfigError(task.source, f"task '{task.name}' reads files: give --data-root or set "
                                               "SEGBENCH_DATA")
            self.root = Path(data_root) / task.dataset
            if not self.root.is_dir():
                raise ConfigError(task.source, f"dataset folder {self.root} does not exist "
                                               f"(data root {data_root}, dataset '{task.dataset}')")
        else:
            self.root = Path(".")

    def option(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if key not in self.task.data:
            if required:
                raise ConfigError(self.task.source, f"[data] reader '{self.task.reader}' needs '{key}'")
            return default
        value = self.task.data[key]
        if not isinstance(value, kind):
            raise ConfigError(self.task.source, f"[data] '{key}' has the wrong type: {value!r}")
        return value

    @abstractmethod
    def case_ids(self) -> list[str]:
        """All case ids of the task in a stable order (exclusions applied)."""

    @abstractmethod
    def read(self, case_id: str) -> Case:
        """Read one case; raises :class:`~segbench.errors.DataError` naming the bad file."""

    def files(self, case_id: str) -> list[Path]:
        """The files a case is read from (for dataset checksums in the run manifest)."""
        return []


class GlobCases:
    """Case ids from a glob of image files, with template fields for the files that go with each.

    Fields: ``{id}`` (path relative to the dataset without suffix), ``{dir}``, ``{stem}``, ``{name}``,
    plus the named groups of an optional ``case_pattern`` regex matched against the relative path.
    """

    def __init__(self, reader: Reader, pattern_key: str = "images"):
        self.reader = reader
        self.glob = reader.option(pattern_key, str, required=True)
        exclude = reader.option("exclude", list, default=[])
        regex = reader.option("case_pattern", str)
        self.regex = re.compile(regex) if regex else None
        found = sorted(p for p in reader.root.glob(self.glob) if p.is_file())
        self.paths = self._by_case_id(found)
        for case_id in exclude:
            self.paths.pop(case_id, None)

    def _by_case_id(self, found: list[Path]) -> dict[str, Path]:
        """The files by case id; two files with one id (``022.bmp`` and ``022.png``) are an error naming
        both, never one silently winning."""
        paths: dict[str, Path] = {}
        for path in found:
            case_id = self.case_id(path)
            if case_id in paths:
                raise ConfigError(self.reader.task.source, f"files {paths[case_id]} and {path} both make case "
                                                           f"'{case_id}'; narrow [data] '{self.glob}' or remove one")
            paths[case_id] = path
        return paths

    def case_id(self, path: Path) -> str:
        return path.relative_to(self.reader.root).with_suffix("").as_posix()

    def fields(self, case_id: str) -> dict[str, str]:
        path = self.paths[case_id]
        relative = path.relative_to(self.reader.root)
        fields = {"id": case_id, "dir": relative.parent.as_posix(), "stem": path.stem, "name": path.name}
        if self.regex is not None:
            match = self.regex.search(relative.as_posix())
            if match is None:
                raise ConfigError(self.reader.task.source, f"case_pattern does not match {relative}")
            fields.update(match.groupdict())
        return fields

    def resolve(self, template: str, case_id: str) -> Path:
        try:
            return self.reader.root / template.format(**self.fields(case_id))
        except KeyError as error:
            raise ConfigError(self.reader.task.source, f"template {template!r} uses unknown field {error}") from None
