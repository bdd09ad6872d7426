"""varexp: sample variance decay in randomly initialized networks (Luther & Seung 2019)."""

__version__ = "0.1.0"
