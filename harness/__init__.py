"""segbench: benchmark medical image segmentation foundation models behind one prompt-and-support interface.

The data flow, one module per stage::

    benchmark.toml ─► suites ─► tasks (readers, intensity, labels) ─► prompts (seeded protocols)
        ─► units (stable ids) ─► executors ─► runner (adapter.load/encode/predict, timed)
        ─► metrics ─► store (run.json + cases.parquet) ─► report (static site) / compare
"""

from importlib.metadata import PackageNotFoundError, version

from segbench.hookspecs import hookimpl

try:
    __version__ = version("segbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "hookimpl"]
