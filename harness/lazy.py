"""Modules imported on first use, so that declaring an adapter costs nothing.

Listing adapters, validating a command line and planning a run read only each adapter's class and its
``meta``; torch, OpenCV, segment_anything and sam2 take seconds of CPU and hundreds of MB to import. An
adapter module therefore binds its heavy libraries with :func:`lazy_import` (``torch =
lazy_import("torch")``) and writes its code as usual: the library is imported the first time one of its
attributes is read, in ``load()``, ``encode()`` or a helper they call. What must exist when the module
is executed (a subclass of ``torch.nn.Module``, a decorator from the library) lives in a separate model
module that the adapter imports inside ``load()`` and names in its ``code_modules``, so that its source
still counts in the adapter's fingerprint (:func:`segbench.running.plan.adapter_code`).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """A stand-in for the module ``name`` that imports it when an attribute is first read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self) -> ModuleType:
        module = self.__dict__["_lazy_target"]
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = module
        return module

    def __getattr__(self, attribute: str) -> Any:
        # only called for attributes not found on the stand-in itself (everything of the real module)
        return getattr(self._load(), attribute)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        loaded = "loaded" if self.__dict__["_lazy_target"] is not None else "not imported yet"
        return f"<lazy module {self.__name__!r} ({loaded})>"


def lazy_import(name: str) -> Any:
    """The module ``name`` if it is already imported, else a stand-in that imports it on first use."""
    return sys.modules.get(name) or LazyModule(name)
