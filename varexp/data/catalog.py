"""Which datasets exist, what their samples look like, config checks, and loading (cached in
memory; generated datasets also on disk under the data directory)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from varexp.config import positive_int
from varexp.data import cifar10, gaussian, isbi2012, membranes, shapes
from varexp.data.sources import Images, Source, volume_splits
from varexp.errors import VarexpError, bad_value
from varexp.files import atomic_path

DATASETS = ("gaussian", "cifar10", "isbi2012", "shapes", "membranes")
SPLITS = ("train", "test")
PIPELINES = ("auto", "host", "device")  # where training batches are cut: see stream.py
TASK = {"cifar10": "classification", "shapes": "classification",
        "isbi2012": "segmentation", "membranes": "segmentation"}  # fmt: skip
# The task each architecture is built for; gaussian adapts to the architecture.
ARCH_TASK = {"mlp": "classification", "allcnnc": "classification", "unet": "segmentation"}
CLASSES = 10
GENERATOR_VERSION = 1  # bump when shapes.py or membranes.py change what they generate


@dataclass(frozen=True)
class DataInfo:
    name: str
    input_shape: tuple[int, ...]  # per sample, e.g. (3, 32, 32), (1, 128, 128), (width,)
    task: str  # "classification" | "segmentation"
    num_classes: int | None  # 10 for classification; None for segmentation


def data_dir() -> Path:
    """$VAREXP_DATA if set, else $XDG_CACHE_HOME/varexp/data (default ~/.cache/varexp/data)."""
    if os.environ.get("VAREXP_DATA"):
        return Path(os.environ["VAREXP_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "varexp" / "data"


def data_root(dataset: DictConfig) -> Path:
    if dataset.get("root"):
        return Path(str(dataset.root)).expanduser()
    return data_dir() / "isbi2012" if dataset.name == "isbi2012" else data_dir()


def check(dataset: DictConfig) -> None:
    """One line naming the key, the value and what is allowed, for the keys dataset `name` uses."""
    cfg = OmegaConf.create({"dataset": OmegaConf.to_container(dataset, resolve=True)})
    d = cfg.dataset

    def flag(key: str) -> None:
        if not isinstance(d.get(key), bool):
            raise bad_value(f"dataset.{key}", d.get(key), "must be true or false")

    def nonnegative(key: str) -> None:
        value = d.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise bad_value(f"dataset.{key}", value, "must be a number >= 0")

    workers = d.get("workers", "auto")
    if workers != "auto" and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
    ):
        raise bad_value("dataset.workers", workers, "must be auto or an integer >= 0")
    pipeline = d.get("pipeline", "auto")
    if pipeline not in PIPELINES:
        raise bad_value("dataset.pipeline", pipeline, "choose one of " + ", ".join(PIPELINES))
    if d.name in ("gaussian", "shapes", "membranes"):
        positive_int(cfg, "dataset.seed", minimum=0)
    if d.name in ("cifar10", "shapes"):
        flag("augment")
        flag("flip")
    if d.name == "gaussian":
        positive_int(cfg, "dataset.size")
        shape = d.get("shape")
        if shape is not None and not (
            OmegaConf.is_list(shape) and len(shape) > 0
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        ):  # fmt: skip
            raise bad_value("dataset.shape", shape, "must be null or a list of positive integers")
    elif d.name == "cifar10":
        flag("download")
        flag("verify")
    elif d.name == "shapes":
        positive_int(cfg, "dataset.train_size")
        positive_int(cfg, "dataset.test_size")
        flag("cache")
    else:
        crop = d.get("crop")
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 16 or crop % 16:
            raise bad_value(
                "dataset.crop", crop, "must be a positive multiple of 16 (UNet pools 4 times)"
            )
        positive_int(cfg, "dataset.val_slices", minimum=0)
        flag("augment")
        nonnegative("elastic_std")
        if d.name == "membranes":
            positive_int(cfg, "dataset.slices", minimum=2)
            positive_int(cfg, "dataset.size", minimum=16)
            flag("cache")


def data_info(dataset: DictConfig, arch: DictConfig) -> DataInfo:
    """Shape and task of the samples, after checking the dataset's keys and that `arch` can
    consume them; reads no data."""
    name = dataset.get("name")
    if name not in DATASETS:
        raise bad_value("dataset.name", name, "choose one of " + ", ".join(DATASETS))
    check(dataset)
    if name == "gaussian":
        shape, task = gaussian.input_shape(dataset, arch), gaussian.task(arch)
    elif TASK[name] == "classification":
        shape, task = (3, 32, 32), "classification"
    else:
        shape, task = (1, dataset.crop, dataset.crop), "segmentation"
    needs = ARCH_TASK.get(arch.name)
    if needs is not None and needs != task:
        fits = ", ".join(n for n in DATASETS if TASK.get(n, needs) == needs)
        raise VarexpError(
            f"arch={arch.name} needs a {needs} dataset ({fits}); dataset={name} is {task}"
        )
    return DataInfo(name, shape, task, CLASSES if task == "classification" else None)


def load_source(dataset: DictConfig, arch: DictConfig, split: str) -> Source:
    """The train or test split of the dataset, in memory (cached across calls)."""
    if split not in SPLITS:
        raise bad_value("split", split, "choose one of " + ", ".join(SPLITS))
    info = data_info(dataset, arch)
    key = json.dumps(OmegaConf.to_container(dataset, resolve=True), sort_keys=True)
    return _source(key, split, info.input_shape, info.task)


@lru_cache(maxsize=4)
def _source(key: str, split: str, shape: tuple[int, ...], task: str) -> Source:
    d = OmegaConf.create(json.loads(key))
    train = split == "train"
    if d.name == "gaussian":
        return gaussian.load(d.size, shape, task, d.seed)[split]
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
    image, membrane = _stack(key)
    splits = volume_splits(image, membrane, d.crop, d.val_slices, d.elastic_std, d.name)
    if split not in splits:
        raise VarexpError(f"dataset.val_slices=0 holds out no slices of {d.name} for a {split} "
                          "split; set dataset.val_slices=5 (say) to hold some out")
    return splits[split]


def shapes_set(n: int, seed: int, split: int, cache: bool) -> tuple[Tensor, Tensor]:
    name = f"shapes-n{n}-seed{seed}-split{split}-v{GENERATOR_VERSION}.pt"
    return cached(name, lambda: shapes.generate(n, seed, split), cache)


@lru_cache(maxsize=1)
def _stack(key: str) -> tuple[Tensor, Tensor]:
    d = OmegaConf.create(json.loads(key))
    if d.name == "isbi2012":
        return isbi2012.load(data_root(d))
    name = f"membranes-{d.slices}x{d.size}-seed{d.seed}-v{GENERATOR_VERSION}.pt"
    return cached(name, lambda: membranes.generate(d.slices, d.size, d.seed), d.cache)


def cached(
    name: str, make: Callable[[], tuple[Tensor, Tensor]], use: bool
) -> tuple[Tensor, Tensor]:
    """make(), remembered in data_dir()/generated/name when `use`; an unreadable or unwritable
    cache is only a missed shortcut (the data is regenerated), never an error."""
    if not use:
        return make()
    path = data_dir() / "generated" / name
    if path.is_file():
        try:
            x, y = torch.load(path, weights_only=True)
            return x, y
        except Exception:  # a damaged cache file: regenerate and overwrite it
            path.unlink(missing_ok=True)
    made = make()
    with suppress(OSError), atomic_path(path) as tmp:  # e.g. a read-only data directory
        torch.save(list(made), tmp)
    return made
