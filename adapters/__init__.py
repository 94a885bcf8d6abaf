"""Model adapters, one module per model family. Each module is a segbench plugin registered through
the ``segbench.adapters`` entry-point group, exactly as a third-party adapter package would be."""
