"""Datasets: real on-disk formats built in tmp_path and loaded through the users' code
path, augmentations, seeded streams, bad input, and learnability of the embedded datasets."""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from omegaconf import OmegaConf
from torch import nn

from varexp.data import Stream, catalog, cifar10, data_info, fixed_batch, load_source
from varexp.data.augment import crop_at, dihedral, elastic, pad_crop, sample, window_grid
from varexp.data.sources import generator
from varexp.errors import VarexpError

MLP = OmegaConf.create({"name": "mlp", "width": 20, "depth": 2})
ALLCNNC = OmegaConf.create({"name": "allcnnc"})
UNET = OmegaConf.create({"name": "unet"})


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """Every test gets its own data directory and an empty in-memory cache."""
    monkeypatch.setenv("VAREXP_DATA", str(tmp_path / "data"))
    catalog.clear_caches()
    yield
    catalog.clear_caches()


def config(name: str, **overrides):
    """dataset=<name>'s defaults with `overrides` (unchecked, as a user may write them)."""
    cfg = OmegaConf.create(dataclasses.asdict(catalog.DATASETS[name]()))
    cfg.update(overrides)
    return cfg


def take(stream: Stream, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    it = iter(stream)
    return [next(it) for _ in range(n)]


# ---------------------------------------------------------------- CIFAR10 in its on-disk format


def write_cifar(
    root, per_batch: int = 12, dtype: str = "uint8"
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A cifar-10-batches-py folder in torchvision's format with random images (a custom copy
    may hold another dtype)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in cifar10.files()[:-1]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8).astype(dtype)
        labels = rng.integers(0, 10, per_batch).tolist()
        entry = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": ["x.png"] * per_batch,
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = (data, labels)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_cifar10_files_load_through_torchvision(tmp_path):
    written = write_cifar(tmp_path)
    cfg = config("cifar10", root=str(tmp_path), download=False, verify=False)
    train = load_source(cfg, ALLCNNC, "train")
    test = load_source(cfg, ALLCNNC, "test")
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # Row-major CHW layout: pixel (c, h, w) of image n is data[n, c*1024 + h*32 + w].
    assert torch.equal(train.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert train.labels.tolist() == labels
    assert torch.equal(
        test.images, torch.from_numpy(written["test_batch"][0].reshape(-1, 3, 32, 32))
    )
    # Without augmentation a sample is the normalized image.
    x, y = train.batch(torch.tensor([7]), generator(0), augment=False)
    mean, std = torch.tensor(cifar10.MEAN), torch.tensor(cifar10.STD)
    expected = (
        torch.from_numpy(data[7].reshape(3, 32, 32)).float() / 255 - mean[:, None, None]
    ) / std[:, None, None]
    assert torch.allclose(x[0], expected) and y.item() == labels[7]


def test_cifar10_verify_rejects_files_that_fail_the_checksum(tmp_path):
    write_cifar(tmp_path)
    cfg = config("cifar10", root=str(tmp_path), download=False, verify=True)
    with pytest.raises(
        VarexpError, match=r"data_batch_1 fails torchvision's MD5.*dataset.verify=false"
    ):
        load_source(cfg, ALLCNNC, "train")


def test_cifar10_missing_folder_says_where_and_what_to_do(tmp_path):
    cfg = config("cifar10", root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(VarexpError) as error:
        Stream(cfg, ALLCNNC, 4, 0)
    message = str(error.value)
    assert "\n" not in message
    for part in (
        str(tmp_path / "nowhere" / "cifar-10-batches-py"),
        "dataset.download=true",
        "dataset=shapes",
    ):
        assert part in message


def test_cifar10_download_without_network_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(
        cifar10.torchvision_cifar10(), "url", "http://127.0.0.1:9/cifar-10-python.tar.gz"
    )  # refused
    cfg = config("cifar10", root=str(tmp_path / "fresh"), download=True)
    with pytest.raises(VarexpError, match=r"could not download CIFAR10 .*dataset=shapes") as error:
        load_source(cfg, ALLCNNC, "train")
    assert "\n" not in str(error.value)


def test_cifar10_truncated_or_partial_copy_names_the_file_and_is_left_alone(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    cfg = config("cifar10", root=str(tmp_path), download=True, verify=False)
    with pytest.raises(VarexpError, match=r"data_batch_3 is not a readable CIFAR10 batch"):
        load_source(cfg, ALLCNNC, "train")
    batch.unlink()
    with pytest.raises(VarexpError, match=r"data_batch_3 is missing"):
        load_source(cfg, ALLCNNC, "train")
    assert not batch.exists()  # download=true did not write over the user's partial copy


# ------------------------------------------------------------- ISBI2012 as a pair of TIFF stacks


def write_isbi(root, slices: int = 6, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A volume whose pixels avoid 101..159 and labels = 0 (membrane) exactly where it is dark,
    so that a label equals the thresholded image."""
    rng = np.random.default_rng(1)
    dark = rng.random((slices, size, size)) < 0.3
    volume = np.where(dark, rng.integers(0, 101, dark.shape), rng.integers(160, 256, dark.shape))
    volume = volume.astype(np.uint8)
    labels = np.where(dark, 0, 255).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "train-volume.tif", volume)
    tifffile.imwrite(root / "train-labels.tif", labels)
    return volume, labels


def isbi(root, **overrides):
    return config("isbi2012", root=str(root), crop=32, val_slices=2, **overrides)


def test_isbi2012_tiffs_load_with_membrane_as_target(tmp_path):
    volume, labels = write_isbi(tmp_path)
    train = load_source(isbi(tmp_path), UNET, "train")
    test = load_source(isbi(tmp_path), UNET, "test")
    assert len(train) == 4 and len(test) == 2
    assert torch.equal(train.membrane, torch.from_numpy(labels[:4] == 0).float())
    assert torch.equal(test.membrane, torch.from_numpy(labels[4:] == 0).float())
    assert abs(train.image.mean().item()) < 1e-5 and abs(train.image.std().item() - 1) < 1e-4


def test_isbi2012_crops_rotations_reflections_move_image_and_label_together(tmp_path):
    write_isbi(tmp_path)
    cfg = isbi(tmp_path, elastic_std=0.0)
    source = load_source(cfg, UNET, "train")
    # A level between the darkest non-membrane and the lightest membrane pixel (normalized).
    middle = (
        source.image[source.membrane == 1].max() + source.image[source.membrane == 0].min()
    ) / 2
    x, y = next(iter(Stream(cfg, UNET, 16, seed=3)))
    assert x.shape == (16, 1, 32, 32) and y.shape == (16, 1, 32, 32)
    assert torch.equal((x < middle).float(), y)


def test_isbi2012_elastic_stream_keeps_labels_binary(tmp_path):
    write_isbi(tmp_path)
    x, y = next(iter(Stream(isbi(tmp_path), UNET, 8, seed=0)))
    assert x.shape == y.shape == (8, 1, 32, 32)
    assert set(y.unique().tolist()) == {0.0, 1.0}


def smooth_images(n: int, size: int) -> torch.Tensor:
    coarse = torch.randn(n, 1, 6, 6, generator=generator(5))
    return nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)


def test_dihedral_is_the_same_for_image_and_label_and_keeps_membrane_fraction():
    image = smooth_images(64, 24)
    label = (image > 0).float()
    out_image, out_label = dihedral([image, label], generator(1))
    assert torch.equal((out_image > 0).float(), out_label)
    assert torch.equal(out_label.sum((1, 2, 3)), label.sum((1, 2, 3)))  # exactly, per sample
    # All 8 symmetries of the square occur among 64 draws (each with probability 1/8).
    same = [
        {i for i in range(64) if torch.equal(out_image[i], t(image[i]))}
        for t in (
            lambda a: a, lambda a: a.rot90(1, (-2, -1)), lambda a: a.rot90(2, (-2, -1)),
            lambda a: a.rot90(3, (-2, -1)), lambda a: a.flip(-1), lambda a: a.flip(-2),
            lambda a: a.transpose(-1, -2), lambda a: a.rot90(1, (-2, -1)).flip(-1),
        )
    ]  # fmt: skip
    assert all(same) and set().union(*same) == set(range(64))


def test_elastic_warp_moves_pixels_identically_and_keeps_labels_binary():
    n, size, crop = 8, 96, 48
    image = smooth_images(n, size)
    label = (image > 0).float()
    gen = generator(2)
    top, left = torch.randint(0, size - crop + 1, (2, n), generator=gen)
    window = window_grid(top, left, crop, size, size)
    # The unwarped grid reads exactly the crop window.
    assert torch.allclose(
        sample(image, window, "bilinear"), crop_at(image, top, left, crop), atol=1e-5
    )
    warped = elastic(window, size, size, std=10.0, generator=gen)
    moved = (warped - window).abs().amax(-1) * (size - 1) / 2  # displacement in pixels
    assert 2 < moved.mean() < 30
    out_label = sample(label, warped, "nearest")
    assert set(out_label.unique().tolist()) == {0.0, 1.0}
    assert torch.equal((sample(image, warped, "nearest") > 0).float(), out_label)
    assert (out_label != crop_at(label, top, left, crop)).float().mean() > 0.02


def test_pad_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.rand(16, 3, 32, 32, generator=generator(3)) + 1  # no zeros inside the image
    out = pad_crop(x, 4, generator(4))
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    offsets = set()
    for i in range(16):
        found = [
            (a, b)
            for a in range(9)
            for b in range(9)
            if torch.equal(out[i], padded[i, :, a : a + 32, b : b + 32])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 8  # random offsets, not one fixed shift


def test_isbi2012_missing_files_say_where_and_what_to_do(tmp_path):
    with pytest.raises(VarexpError) as error:
        Stream(isbi(tmp_path / "em"), UNET, 2, 0)
    message = str(error.value)
    assert "\n" not in message
    for part in (
        str(tmp_path / "em" / "train-volume.tif"),
        "train-labels.tif",
        "isbi_challenge",
        "dataset=membranes",
    ):
        assert part in message


def test_isbi2012_bad_files_name_the_file_and_stay_untouched(tmp_path):
    volume, labels = write_isbi(tmp_path)
    vol_path, lab_path = tmp_path / "train-volume.tif", tmp_path / "train-labels.tif"
    vol_path.write_bytes(vol_path.read_bytes()[:3000])
    truncated = vol_path.read_bytes()
    with pytest.raises(VarexpError, match=r"train-volume.tif is not a readable TIFF"):
        load_source(isbi(tmp_path), UNET, "train")
    assert vol_path.read_bytes() == truncated
    catalog.clear_caches()
    tifffile.imwrite(vol_path, volume[:5])
    with pytest.raises(
        VarexpError, match=r"train-labels.tif has shape \(6, 64, 64\) but .* has \(5, 64, 64\)"
    ):
        load_source(isbi(tmp_path), UNET, "train")
    catalog.clear_caches()
    tifffile.imwrite(vol_path, volume)
    tifffile.imwrite(lab_path, np.where(labels == 0, 0, 128).astype(np.uint8))
    with pytest.raises(
        VarexpError, match=r"train-labels.tif has values 0, 128; labels must be binary"
    ):
        load_source(isbi(tmp_path), UNET, "train")


# ------------------------------------------------------------------ seeded streams and probes


@pytest.mark.parametrize(
    "name, arch, overrides",
    [
        ("shapes", ALLCNNC, {"train_size": 300, "test_size": 50, "cache": False}),
        ("membranes", UNET, {"slices": 5, "size": 64, "val_slices": 1, "crop": 32, "cache": False}),
        ("gaussian", MLP, {"size": 100}),
    ],
)
def test_streams_are_pure_functions_of_seed_and_batch_index(name, arch, overrides):
    cfg = config(name, **overrides)
    first = take(Stream(cfg, arch, 16, seed=1), 6)
    again = take(Stream(cfg, arch, 16, seed=1), 6)
    other = take(Stream(cfg, arch, 16, seed=2), 6)
    for (x, y), (x2, y2), (x3, _) in zip(first, again, other, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert not torch.equal(x, x3)
    # Resume: two batches, save, a new stream from the saved state continues identically.
    stream = Stream(cfg, arch, 16, seed=1)
    take(stream, 2)
    state = stream.state_dict()
    resumed = Stream(cfg, arch, 16, seed=1)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(first[2:], take(resumed, 4), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert resumed.epoch == 6 * 16 // len(resumed.source)


def test_every_sample_once_per_epoch():
    cfg = config("gaussian", size=50)
    stream = Stream(cfg, MLP, 20, seed=0)
    rows = torch.cat([x for x, _ in take(stream, 5)])  # 100 samples = 2 epochs of 50
    source = stream.source.x
    index = [int((source == row).all(1).nonzero()) for row in rows]
    assert sorted(index[:50]) == list(range(50)) and sorted(index[50:]) == list(range(50))
    assert index[:50] != index[50:]  # a fresh order each epoch
    assert stream.epoch == 2


def test_stream_is_the_same_with_a_worker_process():
    cfg = config("shapes", train_size=200, test_size=20, cache=False)
    inline = take(Stream(cfg, ALLCNNC, 8, seed=0), 3)
    cfg.workers = 1
    worker = take(Stream(cfg, ALLCNNC, 8, seed=0), 3)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(inline, worker, strict=True)
    )


def batches_in_this_process(cfg: dict, n: int) -> tuple[str, list]:
    """The default start method here (loky's own inside a loky worker) and n batches of a
    stream with one DataLoader worker."""
    stream = Stream(OmegaConf.create(cfg), ALLCNNC, 8, seed=0)
    assert stream.workers == 1
    return multiprocessing.get_start_method(), take(stream, n)


def test_stream_with_a_worker_process_inside_a_joblib_loky_worker():
    """hydra/launcher=joblib runs each job in a loky worker, whose default start method is loky's
    own; a DataLoader worker started from there gives the batches of the main process."""
    cfg = config("shapes", train_size=200, test_size=20, cache=False)
    inline = take(Stream(cfg, ALLCNNC, 8, seed=0), 3)
    cfg.workers = 1
    jobs = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(batches_in_this_process)(OmegaConf.to_container(cfg), 3) for _ in range(2)
    )
    for method, batches in jobs:
        assert method == "loky"
        assert all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            for a, b in zip(inline, batches, strict=True)
        )


def test_fixed_batch_is_fixed_unaugmented_and_distinct():
    cfg = config("shapes", train_size=300, test_size=50, cache=False)
    x = fixed_batch(cfg, ALLCNNC, 40, seed=0)
    assert x.shape == (40, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, fixed_batch(cfg, ALLCNNC, 40, seed=0))
    assert not torch.equal(x, fixed_batch(cfg, ALLCNNC, 40, seed=1))
    source = load_source(cfg, ALLCNNC, "train")
    all_x, _ = source.batch(torch.arange(len(source)), generator(0), augment=False)
    matches = [int((all_x == row).flatten(1).all(1).nonzero()) for row in x]
    assert len(set(matches)) == 40
    g = fixed_batch(config("gaussian"), MLP, 500, seed=0)
    assert g.shape == (500, 20) and abs(g.mean()) < 0.05 and abs(g.var() - 1) < 0.05
    seg = fixed_batch(
        config("membranes", slices=3, size=64, val_slices=1, crop=32, cache=False), UNET, 5, 0
    )
    assert seg.shape == (5, 1, 32, 32)


# ------------------------------------------------------------------------ configs and shapes


def test_data_info_and_arch_compatibility():
    assert data_info(config("gaussian"), MLP).input_shape == (20,)
    assert data_info(config("gaussian"), UNET).task == "segmentation"
    assert data_info(config("cifar10"), ALLCNNC).num_classes == 10
    assert data_info(config("membranes", crop=64), UNET).input_shape == (1, 64, 64)
    with pytest.raises(
        VarexpError,
        match=r"^arch=unet needs a segmentation dataset \(gaussian, isbi2012, membranes\); "
        r"dataset=cifar10 is classification$",
    ):
        data_info(config("cifar10"), UNET)
    with pytest.raises(VarexpError, match=r"^arch=allcnnc needs a classification dataset"):
        data_info(config("isbi2012"), ALLCNNC)
    with pytest.raises(VarexpError, match=r"dataset.crop=100 .*multiple of 16"):
        data_info(config("membranes", crop=100), UNET)
    with pytest.raises(VarexpError, match=r"dataset.val_slices=30 leaves no training slices"):
        load_source(
            config("membranes", size=32, crop=16, val_slices=30, cache=False), UNET, "train"
        )
    with pytest.raises(VarexpError, match=r"dataset.augment='yes'"):
        data_info(config("shapes", augment="yes"), ALLCNNC)


def test_generated_datasets_are_deterministic_and_cached_on_disk(tmp_path):
    cfg = config("shapes", train_size=100, test_size=20, cache=True)
    first = load_source(cfg, ALLCNNC, "train")
    assert len(list((tmp_path / "data" / "generated").glob("shapes-n100-seed0-split0-*.pt"))) == 1
    catalog.clear_caches()
    again = load_source(cfg, ALLCNNC, "train")
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    fresh = load_source(
        config("shapes", train_size=100, test_size=20, cache=False), ALLCNNC, "train"
    )
    assert torch.equal(first.images, fresh.images)
    other = load_source(
        config("shapes", train_size=100, test_size=20, seed=1, cache=False), ALLCNNC, "train"
    )
    assert not torch.equal(first.images, other.images)
    assert fresh.images.dtype == torch.uint8 and set(fresh.labels.tolist()) == set(range(10))


# --------------------------------------------------------------------------------- learnability


def tiny_cnn(channels: int, outputs: int, head: nn.Module) -> nn.Sequential:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    c = channels
    return nn.Sequential(
        *block(3, c),
        nn.MaxPool2d(2),
        *block(c, 2 * c),
        nn.MaxPool2d(2),
        *block(2 * c, 2 * c),
        head,
        nn.Linear(2 * c, outputs),
    )


def train(net: nn.Module, stream: Stream, steps: int, loss_fn, lr: float) -> list[float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr)
    losses = []
    for x, y in itertools.islice(stream, steps):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def one_thread():
    """Small ops on a shared 2-core machine run faster without intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_shapes_is_learnable_but_not_instantly(one_thread):
    torch.manual_seed(0)
    cfg = config("shapes", train_size=2000, test_size=500, cache=False)
    net = tiny_cnn(8, 10, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    losses = train(net, Stream(cfg, ALLCNNC, 32, seed=0), 300, nn.functional.cross_entropy, 1e-2)
    chance = math.log(10)
    assert np.mean(losses[20:40]) > 0.95 * chance  # not learned in a few steps
    net.eval()
    with torch.no_grad():
        x, y = next(iter(Stream(cfg, ALLCNNC, 500, seed=0, split="test")))
        test_loss = nn.functional.cross_entropy(net(x), y).item()
    assert test_loss < 1.2  # well below chance ln(10) = 2.30, on held-out images


def test_membranes_are_learnable(one_thread):
    torch.manual_seed(0)
    cfg = config("membranes", slices=6, size=128, val_slices=2, crop=48, cache=False)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(8, 1, 3, padding=1),
    )  # fmt: skip
    bce = nn.functional.binary_cross_entropy_with_logits
    train(net, Stream(cfg, UNET, 8, seed=0), 150, bce, 1e-2)
    with torch.no_grad():
        x, y = next(iter(Stream(cfg, UNET, 32, seed=0, split="test")))
        p = y.mean()
        constant = -(p * p.log() + (1 - p) * (1 - p).log())  # best constant predictor's BCE
        assert 0.05 < p < 0.5
        assert bce(net(x), y) < 0.5 * constant


def test_isbi_trains_on_every_slice_by_default_and_can_hold_some_out(tmp_path):
    """Fig. 4 shows training loss, as the paper does: every slice trains unless some are held
    out, and asking for a test split that was not held out is one line."""
    volume, _ = write_isbi(tmp_path)
    cfg = config("isbi2012", root=str(tmp_path), crop=32)
    assert cfg.val_slices == 0
    assert len(load_source(cfg, UNET, "train")) == len(volume)
    with pytest.raises(
        VarexpError,
        match=r"dataset.val_slices=0 holds out no slices of "
        r"isbi2012 for a test split",
    ):
        load_source(cfg, UNET, "test")
    assert len(load_source(isbi(tmp_path), UNET, "test")) == 2


def test_norm_spread_scales_each_gaussian_input_keeping_the_average_power():
    """dataset.norm_spread=s: x_t = exp(s n_t - s^2) z_t, so E[x^2] = 1 and the inputs' norms
    spread; s = 0 is the same draw as without the option."""
    arch = {"name": "mlp", "width": 64}
    plain = fixed_batch({"name": "gaussian"}, arch, 16, seed=3)
    torch.testing.assert_close(
        fixed_batch({"name": "gaussian", "norm_spread": 0.0}, arch, 16, seed=3), plain
    )
    spread = fixed_batch({"name": "gaussian", "norm_spread": 0.5}, arch, 4000, seed=3)
    power = spread.square().mean(dim=1)
    assert spread.square().mean().item() == pytest.approx(1.0, abs=0.05)
    # log of each input's power: 2 s n + log(chi^2_64 / 64), variance 4 s^2 + 2 / 64
    assert power.log().std().item() == pytest.approx(math.sqrt(4 * 0.25 + 2 / 64), rel=0.1)


def test_spreading_the_input_norms_lowers_effective_samples_and_the_gradient_growth():
    """The intervention behind `varexp probe experiment=slopes_inputs`: at the same width and T,
    scale+bias MLPs on inputs with spread norms have fewer effective samples and a shallower
    gradient slope (width 100, T = 30, depth 20, 6 networks each; measured: slope -0.37 ->
    -0.15, effective samples at layer 10 from 0.67 to 0.11 of T)."""
    from varexp.results.aggregate import grad_fit
    from varexp.sampled import sampled_mlp
    from varexp.threads import one_thread

    arch, networks = {"name": "mlp", "width": 100}, 6
    result = {}
    for s in (0.0, 1.0):
        rows = []
        for n in range(networks):
            x = fixed_batch({"name": "gaussian", "norm_spread": s}, arch, 30, seed=n)
            g = torch.Generator().manual_seed(n)
            with one_thread():  # small products: a second thread only waits on a busy machine
                layers = sampled_mlp(x, 20, 100, init="scale+bias", generator=g)[0]
            rows += [
                dict(
                    network=n,
                    layer=r["layer"],
                    grad_sq=float(r["grad_sq"]),
                    effective=float(r["effective_samples"]),
                )
                for r in layers
            ]
        table = pd.DataFrame(rows)
        slopes = [grad_fit(t)[0] for _, t in table.groupby("network")]
        result[s] = (
            np.mean(slopes),
            np.std(slopes, ddof=1) / math.sqrt(networks),
            table[table.layer == 10].effective.mean() / 30,
        )
    (flat, flat_error, flat_eff), (spread, spread_error, spread_eff) = result[0.0], result[1.0]
    assert spread_eff < flat_eff / 2
    assert spread - flat > 2 * math.hypot(flat_error, spread_error)  # less negative


def test_a_home_folder_that_does_not_exist_grows_no_tree(tmp_path, monkeypatch):
    """HOME=/nonexistent/x (some batch jobs): the generated data is made but not cached there,
    and a dataset read from the default data folder says where to put it, in one line."""
    home = tmp_path / "nonexistent" / "x"
    monkeypatch.delenv("VAREXP_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    images, labels = catalog.shapes_set(20, 0, 0, cache=True)
    assert images.shape == (20, 3, 32, 32) and not (tmp_path / "nonexistent").exists()
    with pytest.raises(
        VarexpError,
        match=rf"dataset=cifar10 is read from \(or downloaded "
        rf"into\) {home}/.cache/varexp/data, but the home folder {home} does not "
        "exist; set VAREXP_DATA",
    ):
        catalog.load_source(config("cifar10"), ALLCNNC, "train")
    assert not (tmp_path / "nonexistent").exists()
