"""Task definitions shipped with segbench: TOML data files, one per task (see README.md here)."""
