"""CIFAR10 through torchvision.datasets.CIFAR10 (Krizhevsky 2009), the paper's ALL-CNN-C task."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from varexp.errors import VarexpError

# Per-channel mean and standard deviation of the 50000 training images.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
FOLDER = CIFAR10.base_folder
URL = CIFAR10.url
FILES = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
CHECKSUMS = dict(CIFAR10.train_list + CIFAR10.test_list) | {
    CIFAR10.meta["filename"]: CIFAR10.meta["md5"]
}
OFFLINE = "or run offline with dataset=shapes"


class UncheckedCIFAR10(CIFAR10):
    """torchvision's reader with the MD5 checks switched off (dataset.verify=false, for custom
    copies); torchvision skips the hash when a file's md5 is None but still requires the file."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def fetch(root: Path) -> None:
    """Download and extract the archive into root (only called when no CIFAR10 file is there)."""
    try:
        download_and_extract_archive(URL, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as error:  # urllib, socket, tarfile and torchvision's own errors alike
        raise VarexpError(
            f"could not download CIFAR10 from {URL} into {root} ({one_line(error)}); without "
            f"network, copy a {FOLDER} folder into {root} (dataset.root), {OFFLINE}"
        ) from None


def find_bad_file(folder: Path, verify: bool) -> str:
    """Name the first file that fails the MD5 check (verify) or does not unpickle into a CIFAR
    batch; the folder itself when every file looks fine."""
    for name in FILES:
        path = folder / name
        if verify and not check_integrity(str(path), CHECKSUMS[name]):
            return f"{path} fails torchvision's MD5 check (truncated, corrupt or not official)"
        key = "label_names" if name == CIFAR10.meta["filename"] else "data"
        try:
            with open(path, "rb") as f:
                readable = key in pickle.load(f, encoding="latin1")
        except Exception:
            readable = False
        if not readable:
            return f"{path} is not a readable CIFAR10 batch (truncated or corrupt)"
    return f"{folder} holds unreadable CIFAR10 data"


def load(root: Path, train: bool, download: bool, verify: bool) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, 32, 32) and class ids (N,) of the train or test split."""
    folder = root / FOLDER
    present = [name for name in FILES if (folder / name).is_file()]
    if not present:
        if not download:
            raise VarexpError(
                f"no CIFAR10 files in {folder}; set dataset.download=true to fetch them (170 MB) "
                f"into dataset.root={root} (default: $VAREXP_DATA), {OFFLINE}"
            )
        fetch(root)
    elif len(present) < len(FILES):
        missing = next(name for name in FILES if name not in present)
        # Never download over a partial copy: it may be the user's own data.
        raise VarexpError(
            f"{folder / missing} is missing; restore it, or delete {folder} and set "
            f"dataset.download=true to fetch a fresh copy, {OFFLINE}"
        )
    reader = CIFAR10 if verify else UncheckedCIFAR10
    try:
        data = reader(str(root), train=train, download=False)
    except Exception:
        hint = "; for a custom copy set dataset.verify=false" if verify else ""
        raise VarexpError(find_bad_file(folder, verify) + hint) from None
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(data.targets, dtype=torch.long)
    if len(labels) != len(images) or labels.min() < 0 or labels.max() > 9:
        raise VarexpError(f"{folder}: labels must be one class id 0..9 per image")
    return images, labels
