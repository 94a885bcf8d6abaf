"""Model weights: the checkpoint registry (download, hash, cache, safe loading) and torch model set-up."""
