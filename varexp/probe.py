"""`varexp probe`: N random networks on one fixed batch of T inputs -> probe.csv, neurons.csv
(paper Sec. 3.2 and 4: Fig. 1 right, Fig. 2, Fig. 3).

Network i is seeded from (seed, i); the batch is the same for all networks (seeded from seed).
Data-dependent inits (scale, scale+bias, lsuv) are fitted on the probe batch itself, so
init.batches is not used here. BatchNorm normalizes with the batch statistics (paper Sec. 4).
With probe.method=auto, Gaussian-weight MLPs wider than 2 T are sampled exactly in O(n T^2) per
layer (varexp.sampled); everything else runs the dense model (varexp.stats hooks).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from varexp import memory
from varexp.config import check_probe, resolve_device
from varexp.data import data_info, probe_batch
from varexp.errors import VarexpError
from varexp.inits import initialize
from varexp.models import build_model
from varexp.models.base import weight_layers
from varexp.results import claim
from varexp.results.tables import NEURONS, PROBE
from varexp.sampled import sampled_mlp, unsupported
from varexp.stats import STAT_NAMES, network_stats

log = logging.getLogger(__name__)



def network_seed(seed: int, network: int) -> int:
    return int(np.random.SeedSequence([seed, network]).generate_state(1)[0])


def check(cfg: DictConfig) -> None:
    """Every key a probe reads, and that one network fits in memory on the dense path."""

    check_probe(cfg)
    if choose_method(cfg) != "dense":
        return  # the sampled path holds O(width T) per layer
    info = data_info(cfg.dataset, cfg.arch)
    params, outputs = memory.count(cfg.arch, info.input_shape, num_classes(cfg), cfg.init.name,
                                   cfg.probe.samples)
    memory.refuse_if_too_big(
        memory.probe_bytes(params, outputs), resolve_device(cfg.device), "one network",
        f"{memory.amount(params)} weights, {memory.amount(outputs)} layer outputs for T = "
        f"{cfg.probe.samples}", "probe narrower or shallower networks, fewer samples, or with "
        "probe.method=auto where the exact sampled path applies")


def choose_method(cfg: DictConfig) -> str:
    """dense or sampled; `probe.method=auto` samples when it is exact and width > 2 T.

    bench/bench_probe.py (T = 100, idle 2-core CPU) measured the two paths even at width 200-300,
    the dense one faster below (1.7x at 150) and the sampled one faster above (15x at 3000). The
    dense path stays the reference, and the only path where width <= T."""

    method = cfg.probe.method
    if method != "auto":
        return method
    if unsupported(cfg.arch, cfg.init) is None and cfg.arch.width > 2 * cfg.probe.samples:
        return "sampled"
    return "dense"


def dense_network(cfg: DictConfig, x: Tensor, generator: torch.Generator, neurons: bool):
    """Build and initialize the model (torch's global RNG, seeded by the caller), then record."""

    with torch.device(x.device):  # build on the device: no host copy of the weights
        model = build_model(cfg.arch, tuple(x.shape[1:]), num_classes(cfg), cfg.init.name)
    init_cfg = OmegaConf.merge(cfg.init, {"batches": 1}) if "batches" in cfg.init else cfg.init
    initialize(model, init_cfg, activation=cfg.arch.get("activation", "relu"), batches=[x])
    keep_u = (1, len(weight_layers(model))) if neurons else ()
    return network_stats(model, x, cfg.probe.grad, generator, keep_u)


def num_classes(cfg: DictConfig) -> int | None:
    """The probe's MLP is the paper's Eq. 1 network, x^L = f(u^L) with no readout; CNNs keep
    their output layer (ALL-CNN-C's fc is a weight layer of Fig. 2 middle)."""

    return None if cfg.arch.name == "mlp" else data_info(cfg.dataset, cfg.arch).num_classes


def probe_network(cfg: DictConfig, x: Tensor, network: int, method: str):
    """(per-layer rows, {layer: u^l (T, features)} at layers 1 and L) for network `network`."""

    seed = network_seed(cfg.seed, network)
    torch.manual_seed(seed)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    neurons = cfg.probe.neurons > 0
    if method == "dense":
        return dense_network(cfg, x, generator, neurons)
    return sampled_mlp(
        x, cfg.arch.depth, cfg.arch.width, cfg.arch.activation, cfg.init.name,
        gain=cfg.init.get("gain"), eps=cfg.init.get("eps", 1e-5), grad=cfg.probe.grad,
        generator=generator, keep_u=(1, cfg.arch.depth) if neurons else (),
    )


def neuron_rows(network: int, kept: dict[int, Tensor], count: int, seed: int) -> pd.DataFrame:
    """`count` random neurons' raw pre-activations over the batch at each kept layer."""
    gen = np.random.default_rng([seed, network, 1])
    frames = []
    for layer, u in sorted(kept.items()):
        u = u.cpu().numpy()
        picks = np.sort(gen.choice(u.shape[1], size=min(count, u.shape[1]), replace=False))
        T = u.shape[0]
        frames.append(pd.DataFrame({
            "network": network, "layer": layer, "neuron": np.repeat(picks, T),
            "sample": np.tile(np.arange(T), len(picks)), "value": u[:, picks].T.reshape(-1),
        }))
    return pd.concat(frames, ignore_index=True)


def run(cfg: DictConfig) -> None:

    check(cfg)
    with claim("probe", cfg) as out_dir:
        probe(cfg, out_dir)


def probe(cfg: DictConfig, out_dir: Path) -> None:
    """Probe the networks `cfg` describes and write probe.csv (and neurons.csv) into out_dir."""

    device = resolve_device(cfg.device)
    method = choose_method(cfg)
    x = probe_batch(cfg.dataset, cfg.arch, cfg.probe.samples, cfg.seed, device)
    start = time.perf_counter()
    tables, neurons = [], []
    bar = tqdm(range(cfg.probe.networks), desc="probe", unit="net",
               disable=None if cfg.probe.progress else True)
    for i in bar:
        rows, kept = probe_network(cfg, x, i, method)
        tables.append(check_finite(_to_frame(i, rows), cfg))
        if cfg.probe.neurons > 0:
            neurons.append(neuron_rows(i, kept, cfg.probe.neurons, cfg.seed))
    table = pd.concat(tables, ignore_index=True)
    path = PROBE.write(table, out_dir)
    if neurons:
        NEURONS.write(pd.concat(neurons, ignore_index=True), out_dir)
    last = table[table.layer == table.layer.max()]
    log.info(
        "probe: %d networks x %d layers, %s path, %.1f s -> %s (layer %d: mean ratio m/v %.4g)",
        cfg.probe.networks, table.layer.max(), method, time.perf_counter() - start, path,
        table.layer.max(), last.ratio.mean(),
    )


def check_finite(frame: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """A network whose pre-activations overflow float32 (a large init.gain over many layers)
    stops the probe with the first such layer, instead of NaN rows."""
    bad = frame[~np.isfinite(frame["second_moment"])]
    if not bad.empty:
        row = bad.iloc[0]
        raise VarexpError(f"network {row.network}, layer {row.layer} ({row['name']}): the "
                          f"pre-activations overflow float32 (second moment "
                          f"{row.second_moment}); init={cfg.init.name}, init.gain="
                          f"{cfg.init.get('gain')}: use a smaller gain or fewer layers")
    return frame


def _to_frame(network: int, rows: list[dict]) -> pd.DataFrame:
    """One device-to-host copy for all of a network's statistics (grad_sq NaN without grad)."""
    keys = [*STAT_NAMES, "grad_sq"]
    nan = torch.full((), float("nan"), dtype=torch.float64, device=rows[0]["ratio"].device)
    values = torch.stack(
        [torch.stack([nan if r[k] is None else r[k] for k in keys]) for r in rows]
    ).cpu().numpy()
    frame = pd.DataFrame(values, columns=keys)
    frame.insert(0, "features", [r["features"] for r in rows])
    frame.insert(0, "name", [r["name"] for r in rows])
    frame.insert(0, "layer", [r["layer"] for r in rows])
    frame.insert(0, "network", network)
    return frame
