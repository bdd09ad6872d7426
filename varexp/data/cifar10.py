"""CIFAR10 through torchvision.datasets.CIFAR10 (Krizhevsky 2009), the paper's ALL-CNN-C task."""

from __future__ import annotations

import pickle
import socket
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from varexp.errors import VarexpError

# Per-channel mean and standard deviation of the 50000 training images.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
OFFLINE = "or run offline with dataset=shapes"
STALL_SECONDS = 60  # a download that receives nothing for this long fails instead of hanging


@cache
def torchvision_cifar10() -> type:
    """torchvision's CIFAR10 reader. Imported here, not at the top: importing torchvision
    pulls in torch._dynamo (about 2 s), which every command that never reads CIFAR10 would pay."""
    from torchvision.datasets import CIFAR10

    return CIFAR10


def files() -> list[str]:
    """The file names of the cifar-10-batches-py folder: 5 training batches, the test batch,
    the label names."""
    c = torchvision_cifar10()
    return [name for name, _ in c.train_list + c.test_list] + [c.meta["filename"]]


def checksums() -> dict[str, str]:
    c = torchvision_cifar10()
    return dict(c.train_list + c.test_list) | {c.meta["filename"]: c.meta["md5"]}


def folder_name() -> str:
    return torchvision_cifar10().base_folder


def reader(verify: bool) -> type:
    """torchvision's reader, or with `verify` false the same with the MD5 checks switched off
    (for custom copies): torchvision skips a file's hash when its md5 is None."""
    c = torchvision_cifar10()
    if verify:
        return c
    return type(
        "UncheckedCIFAR10",
        (c,),
        {
            "train_list": [[name, None] for name, _ in c.train_list],
            "test_list": [[name, None] for name, _ in c.test_list],
            "meta": {**c.meta, "md5": None},
        },
    )


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def fetch(root: Path) -> None:
    """Download and extract the archive into root (only called when no CIFAR10 file is there)."""
    from torchvision.datasets.utils import download_and_extract_archive  # deferred: see above

    c = torchvision_cifar10()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(STALL_SECONDS)
    try:
        download_and_extract_archive(c.url, str(root), filename=c.filename, md5=c.tgz_md5)
    except Exception as error:  # urllib, socket, tarfile and torchvision's own errors alike
        raise VarexpError(
            f"could not download CIFAR10 from {c.url} into {root} ({one_line(error)}); without "
            f"network, copy a {folder_name()} folder into {root} (dataset.root), {OFFLINE}"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def find_bad_file(folder: Path, verify: bool) -> str:
    """Name the first file that fails the MD5 check (verify) or does not unpickle into a CIFAR
    batch; the folder itself when every file looks fine."""
    from torchvision.datasets.utils import check_integrity  # deferred: see torchvision_cifar10

    for name in files():
        path = folder / name
        if verify and not check_integrity(str(path), checksums()[name]):
            return f"{path} fails torchvision's MD5 check (truncated, corrupt or not official)"
        key = "label_names" if name == files()[-1] else "data"
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
    folder = root / folder_name()
    present = [name for name in files() if (folder / name).is_file()]
    if not present:
        if not download:
            raise VarexpError(
                f"no CIFAR10 files in {folder}; set dataset.download=true to fetch them (170 MB) "
                f"into dataset.root={root} (default: $VAREXP_DATA), {OFFLINE}"
            )
        fetch(root)
    elif len(present) < len(files()):
        missing = next(name for name in files() if name not in present)
        # Never download over a partial copy: it may be the user's own data.
        raise VarexpError(
            f"{folder / missing} is missing; restore it, or delete {folder} and set "
            f"dataset.download=true to fetch a fresh copy, {OFFLINE}"
        )
    try:
        data = reader(verify)(str(root), train=train, download=False)
    except Exception:
        hint = "; for a custom copy set dataset.verify=false" if verify else ""
        raise VarexpError(find_bad_file(folder, verify) + hint) from None
    if data.data.dtype != "uint8":
        raise VarexpError(
            f"{folder} holds {data.data.dtype} images; CIFAR10 images are uint8 "
            "(0..255), as in the official files"
        )
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(data.targets, dtype=torch.long)
    if len(labels) != len(images) or labels.min() < 0 or labels.max() > 9:
        raise VarexpError(f"{folder}: labels must be one class id 0..9 per image")
    return images, labels
