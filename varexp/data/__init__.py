"""Datasets: cifar10 and isbi2012 (the paper's, brought by the user), the embedded offline
shapes and membranes, and gaussian inputs. Probes get a fixed batch (fixed_batch), training an
endless seeded stream (Stream); data_info says what a sample looks like without loading data."""

from varexp.data.catalog import DATASETS, DataInfo, data_dir, data_info, load_source
from varexp.data.stream import Stream, fixed_batch

__all__ = ["DATASETS", "DataInfo", "Stream", "data_dir", "data_info", "load_source", "fixed_batch"]
