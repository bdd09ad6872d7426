"""varexp's Hydra configs, shipped as the package `varexp.conf` (see pyproject.toml)."""
