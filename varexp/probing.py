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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from varexp import devices, memory
from varexp.data import data_info, fixed_batch
from varexp.errors import VarexpError, bad_value
from varexp.inits import initialize, one_batch
from varexp.models import build_model
from varexp.models.base import unreached, weight_layers
from varexp.results import claim
from varexp.results.tables import NEURONS, PROBE, probe_frame
from varexp.sampled import sampled_mlp, unsupported
from varexp.schema import Common, choice, flag, integer, store, to_spec, validate
from varexp.stats import network_stats

log = logging.getLogger(__name__)
METHODS = ("auto", "dense", "sampled")



def network_seed(seed: int, network: int) -> int:
    return int(np.random.SeedSequence([seed, network]).generate_state(1)[0])


@dataclass
class ProbeOptions:
    """`varexp probe`'s own keys (the `probe:` section)."""

    networks: int = integer(30)  # N random initializations
    samples: int = integer(100, minimum=2)  # T inputs in the fixed batch
    method: str = choice("auto", METHODS)  # sampled: exact O(n T^2) sampling of Gaussian MLPs
    neurons: int = integer(3, minimum=0)  # per network, saved to neurons.csv at layers 1 and L
    grad: bool = flag(True)  # grad_sq of the random linear loss L = w . x^L (paper Fig. 3)
    progress: bool = flag(True)  # a progress bar on a terminal (never in logs)


store("section", "probe", ProbeOptions)


def check(cfg: DictConfig) -> None:
    """Every key a probe reads, that the sampled path applies where asked for, and that one
    network fits in memory on the dense path."""
    validate(cfg, Common)
    devices.check(cfg.device)
    if cfg.probe.method == "sampled":
        reason = unsupported(cfg.arch, cfg.init)
        if reason is not None:
            raise bad_value("probe.method", "sampled", f"{reason}; use probe.method=auto or dense")
    device = devices.resolve(cfg.device)
    if choose_method(cfg) != "dense":  # the sampled path holds O(width T) per layer
        memory.refuse_if_too_big(
            memory.sampled_bytes(cfg.arch.width, cfg.arch.depth, cfg.probe.samples,
                                 cfg.probe.grad), device, "one sampled network",
            f"{cfg.arch.depth} layers of width {cfg.arch.width} x T = {cfg.probe.samples}",
            "probe fewer samples (probe.samples) or shallower networks")
        return
    info = data_info(cfg.dataset, cfg.arch)
    params, outputs = memory.count(cfg.arch, info.input_shape, num_classes(cfg),
                                   cfg.probe.samples)
    memory.refuse_if_too_big(
        memory.probe_bytes(params, outputs), device, "one network",
        f"{memory.amount(params)} weights, {memory.amount(outputs)} layer outputs for T = "
        f"{cfg.probe.samples}", "probe narrower or shallower networks, fewer samples, or with "
        "probe.method=auto where the exact sampled path applies")


# Above this many bytes of dense MLP weights a GPU probe takes the sampled path (see below).
DENSE_GPU_BYTES = 8 * 2**30


def choose_method(cfg: DictConfig, device: torch.device | None = None) -> str:
    """dense or sampled for `probe.method=auto` on `device` (default: the config's).

    The sampled path is exact only for MLPs with iid Gaussian weights. On the CPU
    (bench/bench_probe.py, T = 100, idle 2-core machine) the two paths cross at width 200-300,
    the dense one faster below (1.7x at 150) and the sampled one faster above (15x at 3000): auto
    samples when width > 2 T. On a GPU the dense path's large matrix products are cheap (on an
    H200 at width 3000, T = 100: dense 1.8 s, sampled 3.0 s for 30 networks), so auto keeps the
    dense path unless its weights (depth x width^2 floats) would not fit comfortably
    (DENSE_GPU_BYTES). The dense path stays the reference, and the only path where width <= T.
    """
    method = cfg.probe.method
    if method != "auto":
        return method
    if unsupported(cfg.arch, cfg.init) is not None or cfg.arch.width <= 2 * cfg.probe.samples:
        return "dense"
    device = devices.resolve(cfg.device) if device is None else device
    if device.type == "cuda":
        weights = 4 * cfg.arch.depth * cfg.arch.width**2
        return "dense" if weights <= DENSE_GPU_BYTES else "sampled"
    return "sampled"


def dense_network(cfg: DictConfig, x: Tensor, generator: torch.Generator, neurons: bool,
                  warn: bool = False):
    """Build and initialize the model (torch's global RNG, seeded by the caller), then record;
    with `warn`, log what the init and the statistics leave out (layers not centred, weights not
    reached)."""

    with torch.device(x.device):  # build on the device: no host copy of the weights
        model = build_model(cfg.arch, tuple(x.shape[1:]), num_classes(cfg))
    # a data-dependent init fits on the fixed batch itself
    report = initialize(model, one_batch(to_spec(cfg.init)), cfg.arch.activation, batches=[x])
    keep_u = (1, len(weight_layers(model))) if neurons else ()
    rows, kept = network_stats(model, x, cfg.probe.grad, generator, keep_u)
    if warn:
        measured = unreached(model, [row["module"] for row in rows])
        for line in report.warnings(model, cfg.init.name, measured):
            log.warning(line)
    return rows, kept


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
        return dense_network(cfg, x, generator, neurons, warn=network == 0)
    init = to_spec(cfg.init)
    return sampled_mlp(
        x, cfg.arch.depth, cfg.arch.width, cfg.arch.activation, init.name,
        gain=getattr(init, "gain", None), eps=getattr(init, "eps", 0.0), grad=cfg.probe.grad,
        generator=generator, keep_u=(1, cfg.arch.depth) if neurons else (), norm=cfg.arch.norm,
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

    device = devices.resolve(cfg.device)
    method = choose_method(cfg, device)
    x = fixed_batch(cfg.dataset, cfg.arch, cfg.probe.samples, cfg.seed, device)
    start = time.perf_counter()
    tables, neurons = [], []
    bar = tqdm(range(cfg.probe.networks), desc="probe", unit="net",
               disable=None if cfg.probe.progress else True)
    for i in bar:
        rows, kept = probe_network(cfg, x, i, method)
        tables.append(check_finite(probe_frame(i, rows), cfg))
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
