"""ISBI 2012 EM segmentation challenge (Arganda-Carreras et al. 2015), the paper's UNet task:
30 serial-section TEM slices of 512x512 (train-volume.tif) with membrane labels
(train-labels.tif: 255 = cell interior, 0 = membrane). The model's target is membrane = 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import Tensor

from varexp.errors import VarexpError

VOLUME = "train-volume.tif"
LABELS = "train-labels.tif"
SOURCE = "the ISBI 2012 EM segmentation challenge, http://brainiac2.mit.edu/isbi_challenge/"


def read(path: Path) -> np.ndarray:
    """A uint8 stack (S, H, W) from a multi-page TIFF; one line naming the file otherwise."""
    try:
        stack = tifffile.imread(path)
    except Exception as error:  # tifffile raises ValueError, TiffFileError, OSError, ...
        reason = " ".join(str(error).split())
        raise VarexpError(
            f"{path} is not a readable TIFF stack (truncated or corrupt: {reason})"
        ) from None
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.dtype != np.uint8:
        raise VarexpError(
            f"{path} holds a {stack.dtype} array of shape {stack.shape}; "
            "expected 8-bit grayscale slices (S, H, W)"
        )
    return stack


def load(root: Path) -> tuple[Tensor, Tensor]:
    """uint8 slices (S, H, W) and membrane maps (S, H, W) as bool (True = membrane)."""
    for name in (VOLUME, LABELS):
        if not (root / name).is_file():
            raise VarexpError(
                f"{root / name} not found; put {VOLUME} and {LABELS} from {SOURCE} into "
                f"dataset.root={root} (default: $VAREXP_DATA/isbi2012), "
                "or run offline with dataset=membranes"
            )
    volume, labels = read(root / VOLUME), read(root / LABELS)
    if volume.shape != labels.shape:
        raise VarexpError(
            f"{root / LABELS} has shape {labels.shape} but {root / VOLUME} has {volume.shape}; "
            "they must match slice for slice"
        )
    values = np.unique(labels)
    if not np.isin(values, (0, 255)).all():
        shown = ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")
        raise VarexpError(
            f"{root / LABELS} has values {shown}; labels must be binary: "
            "0 = membrane, 255 = cell interior"
        )
    return torch.from_numpy(volume), torch.from_numpy(labels == 0)
