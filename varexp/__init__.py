"""varexp: sample variance decay in randomly initialized networks (Luther & Seung 2019).

As a library: `varexp.probe(model, x)` (the per-layer statistics of any PyTorch model),
`varexp.init.scale_bias_`, `scale_`, `lsuv_` (data-dependent inits for any model) and
`varexp.load(path)` (runs and their tables as pandas DataFrames)."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["init", "load", "probe"]


def __getattr__(name: str) -> object:
    # Loaded on first use: `import varexp` stays light, and the library's modules, which import
    # the package's other modules, form no import cycle with it.
    if name == "probe":
        return importlib.import_module("varexp.library").probe
    if name == "load":
        return importlib.import_module("varexp.dataframes").load
    if name == "init":
        return importlib.import_module("varexp.init")
    raise AttributeError(f"module 'varexp' has no attribute {name!r}")
