"""Errors that name the file and the problem, so a user can fix their input without a traceback."""

from __future__ import annotations

from pathlib import Path


class SegbenchError(Exception):
    """Base of the errors segbench reports to the user as one line."""


class ConfigError(SegbenchError):
    """A suite or task file that cannot be used."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class DataError(SegbenchError):
    """A data file that cannot be used; one bad case is recorded as failed and the run goes on."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class DataWarning(UserWarning):
    """Data that can be used but may not mean what the task says (mask values no label claims)."""
