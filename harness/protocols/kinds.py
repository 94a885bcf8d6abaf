"""Protocol kinds as registered objects (issue 15 item 1: being built; registers nothing yet)."""

from __future__ import annotations

from collections.abc import Callable

from segbench.hookspecs import hookimpl


@hookimpl
def segbench_register_protocols(register: Callable[[type], None]) -> None:
    """The built-in protocol kinds."""
