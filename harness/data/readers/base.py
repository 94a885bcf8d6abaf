"""The reader contract: list the cases of a task and read one as a :class:`~segbench.data.case.Case`;
and the one gate every path a task names passes before it is read, :func:`confined`."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from segbench.data.case import Case
from segbench.data.specs import TaskSpec, check_data
from segbench.errors import ConfigError
from segbench.strict import Kind, path_problem


def confined(root: Path, relative: str | Path, task_file: Path | str, key: str, boundary: Path | None = None) -> Path:
    """``root / relative``, or a ConfigError naming ``task_file`` and ``key`` unless it stays inside
    ``boundary`` (default ``root``): as text (relative, no ``..``, no NUL) and once resolved, every
    symlink followed. Every path a reader opens or lists passes through here first."""
    text = str(relative)
    if text not in ("", "."):
        problem = path_problem(text)
        if problem:
            raise ConfigError(task_file, f"{key} {problem}: {text!r}")
    path = root / relative
    try:
        limit = (boundary if boundary is not None else root).resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop, an unreadable folder
        raise ConfigError(task_file, f"{key}: {text!r} cannot be resolved ({error})") from None
    if not resolved.is_relative_to(limit):
        raise ConfigError(
            task_file,
            f"{key}: {text!r} leads outside the data root (a symlink to another "
            "place?); segbench reads only files inside the data root",
        )
    return path


# [data] keys of readers that list cases with GlobCases, and of those that decode masks (decode.decode_mask)
GLOB_KEYS: dict[str, Kind] = {"images": "glob", "case_pattern": "regex", "exclude": "strings"}
MASK_VALUE_KEYS: dict[str, Kind] = {"mask_levels": "numbers", "mask_threshold": "number"}


class Reader(ABC):
    """Reads one task's cases from ``data_root / task.dataset``.

    ``DATA_KEYS`` declares the ``[data]`` keys the reader takes besides ``reader``, ``dataset``,
    ``spacing`` and ``resize``, each with its kind (:mod:`segbench.strict`): any other key is an
    error, so a typo never passes silently. Subclasses validate their options further in ``__init__``
    (raising :class:`ConfigError` naming the task file), list case ids cheaply in ``case_ids`` and do
    the I/O in ``read``. Every path they open comes from :meth:`confined` (or :class:`GlobCases`,
    which uses it), so a task never reads outside the data root.
    """

    DATA_KEYS: ClassVar[Mapping[str, Kind]] = {}

    def __init__(self, task: TaskSpec, data_root: Path | None):
        self.task = task
        check_data(task.data, type(self).DATA_KEYS, task.source, task.reader)
        self.data_root: Path | None = None
        if task.needs_data_root:
            if data_root is None:
                raise ConfigError(task.source, f"task '{task.name}' reads files: give --data-root or set SEGBENCH_DATA")
            self.data_root = Path(data_root)
            self.root = confined(self.data_root, task.dataset, task.source, "[data] dataset")
            if not self.root.is_dir():
                raise ConfigError(
                    task.source,
                    f"dataset folder {self.root} does not exist (data root {data_root}, dataset '{task.dataset}')",
                )
        else:
            self.root = Path(".")

    def confined(self, relative: str | Path, key: str) -> Path:
        """``self.root / relative`` if it stays inside the data root (see :func:`confined`)."""
        return confined(self.root, relative, self.task.source, key, boundary=self.data_root or self.root)

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
        problem = path_problem(self.glob)
        if problem:  # Path.glob would raise on an absolute pattern, or walk out on '..'
            raise ConfigError(reader.task.source, f"[data] {pattern_key} {problem}: {self.glob!r}")
        exclude = reader.option("exclude", list, default=[])
        regex = reader.option("case_pattern", str)
        self.regex = re.compile(regex) if regex else None
        found = []
        for match in sorted(reader.root.glob(self.glob)):  # a match may be a symlink leading out: refused
            path = reader.confined(match.relative_to(reader.root), f"[data] {pattern_key} {self.glob!r} matched")
            if path.is_file():
                found.append(path)
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
                raise ConfigError(
                    self.reader.task.source,
                    f"files {paths[case_id]} and {path} both make case "
                    f"'{case_id}'; narrow [data] '{self.glob}' or remove one",
                )
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

    def resolve(self, template: str, case_id: str, key: str) -> Path:
        """The file ``template`` (the task's ``key``) names for ``case_id``, confined to the data root."""
        try:
            relative = template.format(**self.fields(case_id))
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(self.reader.task.source, f"{key} template {template!r}: {error}") from None
        return self.reader.confined(relative, key)
