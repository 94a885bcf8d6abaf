"""Strict reading of the tables of task and suite files: every key known, every value of its type.

A typo is the commonest way a configuration goes wrong without a word: ``mask_treshold = 127`` used
to be ignored and moved a task's scores. So every table names the keys it accepts; an unknown key or
table is a :class:`ConfigError` naming the file, the table and the key, with a "did you mean" for a
near miss. Values are checked by *kind* (see :data:`KINDS`) at parse time, so a wrong type never
reaches the code that uses it as a traceback.

The path kinds (``path``, ``glob``, ``template``, ``paths``) hold text that becomes a file path under
the data root. Here they are checked as text: relative, no ``..`` component, no NUL byte, templates
with plain ``{field}`` placeholders only. Where the resulting files really are (symlinks included)
is checked when they are listed or read, by :func:`segbench.data.readers.base.confined`.
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections.abc import Callable, Collection, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from segbench.errors import ConfigError

# A kind is one of the names of KINDS or a tuple of the strings a key accepts.
Kind = str | tuple[str, ...]


def closest(word: str, known: Collection[str]) -> str | None:
    """The known word closest to a misspelt ``word`` (difflib's ratio of at least 0.6), or None."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


def check_keys(
    table: Mapping[str, Any], known: Collection[str], path: Path | str, where: str, what: str = "key"
) -> None:
    """A ConfigError naming the first unknown key of ``table`` (``where`` names the table: ``[data]``)."""
    unknown = sorted(str(key) for key in table if key not in known)
    if unknown:
        first = unknown[0]
        close = closest(first, known)
        if what == "table":
            shown, hint = f"[{first}]", f" (did you mean [{close}]?)" if close else ""
        else:
            shown, hint = f"'{first}'", f" (did you mean '{close}'?)" if close else ""
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise ConfigError(path, f"{where}: unknown {what} {shown}{more}{hint}; known: {', '.join(sorted(known))}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (TOML has ``nan`` and ``inf``; no setting means either)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot name a path inside a root, or None: absolute, ``~``, ``..``, NUL, empty."""
    if not text:
        return "is empty"
    if "\0" in text:
        return "holds a NUL byte"
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive or text.startswith(("\\", "~")):
        return "is absolute; paths are relative to the data root"
    if ".." in re.split(r"[/\\]", text):
        return "has a '..' component; paths may not leave the data root"
    return None


FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def template_fields(text: str) -> list[str]:
    """The ``{field}`` names of a path template; ValueError for anything but plain placeholders
    (``{id.attr}``, ``{id[0]}``, ``{id!r}``, ``{id:>99}`` reach into objects or make huge names)."""
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not FIELD_NAME.match(name) or spec or conversion:
            raise ValueError(
                f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not a plain {{field}}"
            )
        fields.append(name)
    return fields


def _check_path(value: Any, glob: bool = False, template: bool = False) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {value!r}"
    problem = path_problem(value)
    if problem:
        return f"{problem}: {value!r}"
    if glob and any("**" in part and part != "**" for part in re.split(r"[/\\]", value)):
        return f"uses '**' inside a name: {value!r}"
    if template:
        try:
            template_fields(value)
        except ValueError as error:
            return f"is not a valid template ({error}): {value!r}"
    return None


def _check_regex(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a regular expression string, got {value!r}"
    try:
        re.compile(value)
    except re.error as error:
        return f"is not a valid regular expression ({error}): {value!r}"
    return None


def _simple(test: Callable[[Any], bool], description: str) -> Callable[[Any], str | None]:
    return lambda value: None if test(value) else f"must be {description}, got {value!r}"


KINDS: dict[str, Callable[[Any], str | None]] = {
    "string": _simple(lambda v: isinstance(v, str), "a string"),
    "integer": _simple(_is_int, "an integer"),
    "number": _simple(_is_number, "a finite number"),
    "boolean": _simple(lambda v: isinstance(v, bool), "true or false"),
    "strings": _simple(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "numbers": _simple(
        lambda v: isinstance(v, list) and bool(v) and all(_is_number(x) for x in v),
        "a non-empty list of finite numbers",
    ),
    "regex": _check_regex,
    "path": lambda v: _check_path(v),
    "glob": lambda v: _check_path(v, glob=True),
    "template": lambda v: _check_path(v, template=True),
    "paths": lambda v: (
        _simple(lambda x: isinstance(x, list) and bool(x), "a non-empty list of paths")(v)
        or next((p for p in map(_check_path, v) if p), None)
    ),
    "any": lambda v: None,  # checked by the code that owns the key (e.g. [data] spacing in taskspec)
}


def value_problem(value: Any, kind: Kind) -> str | None:
    """Why ``value`` is not of ``kind``, or None."""
    if isinstance(kind, tuple):
        return None if isinstance(value, str) and value in kind else f"must be one of {list(kind)}, got {value!r}"
    return KINDS[kind](value)


def check_value(table: Mapping[str, Any], key: str, kind: Kind, path: Path | str, where: str) -> None:
    """A ConfigError ``<file>: [table] key must be ...`` when ``table[key]`` (if present) is not of ``kind``."""
    if key in table:
        problem = value_problem(table[key], kind)
        if problem:
            raise ConfigError(path, f"{where} {key} {problem}")


def check_table(table: Mapping[str, Any], kinds: Mapping[str, Kind], path: Path | str, where: str) -> None:
    """Unknown keys, then every present value against its kind."""
    check_keys(table, kinds, path, where)
    for key, kind in kinds.items():
        check_value(table, key, kind, path, where)
