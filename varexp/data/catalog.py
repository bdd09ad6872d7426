"""Which datasets exist and their options (config group `dataset`), what their samples look
like, and loading (cached in memory; generated datasets also on disk under the data directory).

Every dataset has `workers` (the host pipeline's DataLoader processes: auto = 0 on CPU, up to 4
with CUDA) and `pipeline`, where training batches are cut. host: on the CPU by a DataLoader, each
copied to the device. device: the split is copied to the device once; batches are cut and
augmented there. auto: device with CUDA (host, with a warning, if the split needs over half the
free GPU memory), else host. Batches are the same on both, up to float rounding."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from varexp.data import cifar10, gaussian, isbi2012, membranes, shapes
from varexp.data.sources import Images, Source, volume_splits
from varexp.errors import VarexpError, bad_value
from varexp.files import atomic_path
from varexp.models import architecture
from varexp.options.dataset import DATASETS
from varexp.schema import spec_from

SPLITS = ("train", "test")
CLASSES = 10
GENERATOR_VERSION = 1  # bump when shapes.py or membranes.py change what they generate


TASK = {"cifar10": "classification", "shapes": "classification",
        "isbi2012": "segmentation", "membranes": "segmentation"}  # fmt: skip


@dataclass(frozen=True)
class DataInfo:
    name: str
    input_shape: tuple[int, ...]  # per sample, e.g. (3, 32, 32), (1, 128, 128), (width,)
    task: str  # "classification" | "segmentation"
    num_classes: int | None  # 10 for classification; None for segmentation


def dataset_spec(dataset: object) -> object:
    """The dataset's spec (a spec as it is; a config node or mapping converted and checked)."""
    return spec_from(dataset, DATASETS, "dataset")


def data_dir() -> Path:
    """$VAREXP_DATA if set, else $XDG_CACHE_HOME/varexp/data (default ~/.cache/varexp/data)."""
    if os.environ.get("VAREXP_DATA"):
        return Path(os.environ["VAREXP_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "varexp" / "data"


def home_missing() -> Path | None:
    """The home folder data_dir() would be made under, when it does not exist ($HOME pointing
    nowhere, as in some batch jobs): nothing is created there. None when $VAREXP_DATA or
    $XDG_CACHE_HOME name the place, or the home folder exists."""
    if os.environ.get("VAREXP_DATA") or os.environ.get("XDG_CACHE_HOME"):
        return None
    home = Path.home()
    return None if home.is_dir() else home


def data_root(dataset: object) -> Path:
    if getattr(dataset, "root", None):
        return Path(str(dataset.root)).expanduser()
    home = home_missing()
    if home is not None:
        raise VarexpError(
            f"dataset={dataset.name} is read from (or downloaded into) "
            f"{data_dir()}, but the home folder {home} does not exist; set "
            "VAREXP_DATA (or dataset.root) to the folder for the data"
        )
    return data_dir() / "isbi2012" if dataset.name == "isbi2012" else data_dir()


def data_info(dataset: object, arch: object) -> DataInfo:
    """Shape and task of the samples, and that `arch` can consume them; reads no data."""
    d = dataset_spec(dataset)
    if isinstance(arch, dict):
        arch = OmegaConf.create(arch)  # e.g. {"name": "allcnnc"}
    if d.name == "gaussian":
        shape, task = gaussian.input_shape(d, arch), gaussian.task(arch)
    elif TASK[d.name] == "classification":
        shape, task = (3, 32, 32), "classification"
    else:
        shape, task = (1, d.crop, d.crop), "segmentation"
    needs = architecture(arch.name).task
    if needs != task:
        fits = ", ".join(n for n in DATASETS if TASK.get(n, needs) == needs)
        raise VarexpError(
            f"arch={arch.name} needs a {needs} dataset ({fits}); dataset={d.name} is {task}"
        )
    return DataInfo(d.name, shape, task, CLASSES if task == "classification" else None)


@dataclass(frozen=True)
class Keyed:
    """A dataset spec for the in-memory caches: equal and hashed by `key`, the values of the
    fields that decide the data."""

    spec: object = field(compare=False)
    key: tuple = ()

    @staticmethod
    def of(spec: object, skip: tuple[str, ...] = ()) -> Keyed:
        values = tuple(
            (f.name, _frozen(getattr(spec, f.name)))
            for f in dataclasses.fields(spec)
            if f.name not in skip
        )
        return Keyed(spec, (type(spec).__name__, *values))


def _frozen(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def load_source(dataset: object, arch: object, split: str) -> Source:
    """The train or test split of the dataset, in memory (cached across calls)."""
    if split not in SPLITS:
        raise bad_value("split", split, "choose one of " + ", ".join(SPLITS))
    d = dataset_spec(dataset)
    info = data_info(d, arch)
    return _source(Keyed.of(d), split, info.input_shape, info.task)


@lru_cache(maxsize=4)
def _source(keyed: Keyed, split: str, shape: tuple[int, ...], task: str) -> Source:
    d, train = keyed.spec, split == "train"
    if d.name == "gaussian":
        return gaussian.load(d.size, shape, task, d.seed, d.norm_spread)[split]
    if d.name == "cifar10":
        images, labels = cifar10.load(data_root(d), train, d.download, d.verify)
        mean, std = torch.tensor(cifar10.MEAN), torch.tensor(cifar10.STD)
        return Images(images, labels, mean, std, flip=d.flip)
    if d.name == "shapes":
        train_set = shapes_set(d.train_size, d.seed, 0, d.cache)
        images, labels = train_set if train else shapes_set(d.test_size, d.seed, 1, d.cache)
        # Normalize both splits with the training set's statistics, as for CIFAR10.
        mean, std = shapes.channel_stats(train_set[0])
        return Images(images, labels, torch.tensor(mean), torch.tensor(std), flip=d.flip)
    # the slices depend on fewer fields than the crops cut from them
    image, membrane = _volume(
        Keyed.of(d, ("crop", "val_slices", "augment", "elastic_std", "workers", "pipeline"))
    )
    splits = volume_splits(image, membrane, d.crop, d.val_slices, d.elastic_std, d.name)
    if split not in splits:
        raise VarexpError(
            f"dataset.val_slices=0 holds out no slices of {d.name} for a {split} "
            "split; set dataset.val_slices=5 (say) to hold some out"
        )
    return splits[split]


def clear_caches() -> None:
    """Forget the in-memory splits (e.g. after the files under data_dir() changed)."""
    _source.cache_clear()
    _volume.cache_clear()


def shapes_set(n: int, seed: int, split: int, cache: bool) -> tuple[Tensor, Tensor]:
    name = f"shapes-n{n}-seed{seed}-split{split}-v{GENERATOR_VERSION}.pt"
    return cached(name, lambda: shapes.generate(n, seed, split), cache)


@lru_cache(maxsize=1)
def _volume(keyed: Keyed) -> tuple[Tensor, Tensor]:
    """The slices and their membrane maps."""
    d = keyed.spec
    if d.name == "isbi2012":
        return isbi2012.load(data_root(d))
    name = f"membranes-{d.slices}x{d.size}-seed{d.seed}-v{GENERATOR_VERSION}.pt"
    return cached(name, lambda: membranes.generate(d.slices, d.size, d.seed), d.cache)


def cached(
    name: str, make: Callable[[], tuple[Tensor, Tensor]], use: bool
) -> tuple[Tensor, Tensor]:
    """make(), remembered in data_dir()/generated/name when `use`; an unreadable or unwritable
    cache, or none under a home folder that does not exist, is only a missed shortcut (the data
    is regenerated), never an error."""
    if not use or home_missing() is not None:
        return make()
    path = data_dir() / "generated" / name
    if path.is_file():
        try:
            x, y = torch.load(path, weights_only=True)
            return x, y
        except Exception:  # a damaged cache file: regenerate and overwrite it
            path.unlink(missing_ok=True)
    made = make()
    # e.g. a read-only data directory, or a full disk (through a file object torch reports it
    # as an OSError)
    with suppress(OSError), atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(list(made), f)
    return made
