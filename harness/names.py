"""Names that become file or folder names: run ids, suite names, the compare page's name.

A run directory is ``--out / run_id`` and a run id defaults to ``<suite>-<hash>``; a name holding
``/`` or ``..`` would write outside ``--out``. Names a user gives are *validated* (refused with the
rule); names read from files segbench did not write itself (a run's ``run.json``) are *slugged*
into the same alphabet, so a forged one can only ever name a file in the folder meant.
"""

from __future__ import annotations

import re

NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a file name, or None."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        return f"{name!r} is not a valid name ({NAME_RULE})"
    return None


def check_name(name: str, what: str) -> str:
    """``name``, or a ValueError ``<what> '<name>' is not a valid name (rule)``."""
    problem = name_problem(name)
    if problem:
        raise ValueError(f"{what} {problem}")
    return name


def slug(name: str, fallback: str = "run") -> str:
    """``name`` in the file-name alphabet: other characters become '-', '..' collapses, at most 100."""
    text = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", name))
    text = text.lstrip("._-")[:100]
    return text or fallback
