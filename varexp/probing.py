"""`varexp probe`: N random networks on one fixed batch of T inputs -> probe.csv, neurons.csv
(paper Sec. 3.2 and 4: Fig. 1 right, Fig. 2, Fig. 3).

Network i is seeded from (seed, i); the batch is the same for all networks (seeded from seed).
Data-dependent inits (scale, scale+bias, lsuv) are fitted on the probe batch itself, so
init.batches is not used here. BatchNorm normalizes with the batch statistics (paper Sec. 4).
With probe.method=auto, Gaussian-weight MLPs wider than 2 T are sampled exactly in O(n T^2) per
layer (varexp.sampled), many networks at a time (on the CPU a batch per thread; on a GPU all in
one batch, as memory allows), with the same numbers however they are batched on the CPU;
everything else runs the dense model (varexp.stats hooks), one network at a time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from varexp import devices, heldout, memory
from varexp.data import data_info, fixed_batch
from varexp.errors import VarexpError, bad_value
from varexp.inits import initialize, one_batch
from varexp.models import build_model
from varexp.models.base import unreached, weight_layers
from varexp.results import claim
from varexp.results.tables import HELDOUT, NEURONS, PROBE, probe_frame
from varexp.sampled import default_batch, sampled_mlp, sampled_probe, unsupported
from varexp.schema import Common, to_spec, validate
from varexp.stats import network_stats

log = logging.getLogger(__name__)


def network_seed(seed: int, network: int) -> int:
    return int(np.random.SeedSequence([seed, network]).generate_state(1)[0])


def check(cfg: DictConfig) -> None:
    """Every key a probe reads, that the sampled path applies where asked for, and that one
    network fits in memory on the dense path."""
    validate(cfg, Common)
    devices.check(cfg.device)
    heldout.check(cfg)
    if cfg.probe.method == "sampled":
        reason = unsupported(cfg.arch, cfg.init)
        if reason is not None:
            raise bad_value("probe.method", "sampled", f"{reason}; use probe.method=auto or dense")
    device = devices.resolve(cfg.device)
    if choose_method(cfg) != "dense":
        memory.refuse_if_too_big(
            sampled_network_bytes(cfg),
            device,
            "one network",
            f"the sampled path keeps {cfg.arch.depth} layer outputs of {cfg.arch.width} x "
            f"{cfg.probe.samples} for the backward pass",
            "probe narrower or shallower "
            "networks, fewer samples, or without gradients (probe.grad=false)",
        )
        return
    info = data_info(cfg.dataset, cfg.arch)
    params, outputs = memory.count(cfg.arch, info.input_shape, num_classes(cfg), cfg.probe.samples)
    memory.refuse_if_too_big(
        memory.probe_bytes(params, outputs),
        device,
        "one network",
        f"{memory.amount(params)} weights, {memory.amount(outputs)} layer outputs for T = "
        f"{cfg.probe.samples}",
        "probe narrower or shallower networks, fewer samples, or with "
        "probe.method=auto where the exact sampled path applies",
    )


def sampled_network_bytes(cfg: DictConfig) -> float:
    """One network of the sampled path (memory.sampled_network_bytes)."""
    features = math.prod(data_info(cfg.dataset, cfg.arch).input_shape)
    return memory.sampled_network_bytes(
        cfg.arch.width,
        cfg.arch.depth,
        cfg.probe.samples,
        features,
        cfg.probe.grad,
        cfg.probe.neurons > 0,
    )


@dataclass(frozen=True)
class Plan:
    """How the sampled path runs a probe: `batch` networks at a time on each of `workers`
    threads (one on a GPU), `network_bytes` each."""

    workers: int
    batch: int
    network_bytes: float

    @property
    def bytes(self) -> float:
        """Of all the networks in flight at once: the pre-run estimate."""
        return self.workers * self.batch * self.network_bytes


def sampled_plan(cfg: DictConfig, device: torch.device, threads: int) -> Plan:
    """On the CPU one worker thread per core the run gets, each with batches of
    varexp.sampled.default_batch networks; on a GPU one batch of all networks. The batches
    shrink to what memory.USABLE of the free memory holds, so that the networks in flight
    never need more than the estimate checked before the run (check refuses a probe of which
    one network does not fit)."""
    per_network = sampled_network_bytes(cfg)
    networks = cfg.probe.networks
    fits = max(1, int(memory.USABLE * memory.available(device) // per_network))
    workers = max(1, min(threads, networks, fits)) if device.type == "cpu" else 1
    batch = default_batch(cfg.arch.width, cfg.probe.samples, networks, device)
    return Plan(workers, max(1, min(batch, fits // workers)), per_network)


# Above this many bytes of dense MLP weights a GPU probe takes the sampled path (see below).
DENSE_GPU_BYTES = 8 * 2**30


def choose_method(cfg: DictConfig, device: torch.device | None = None) -> str:
    """dense or sampled for `probe.method=auto` on `device` (default: the config's).

    The sampled path is exact only for MLPs with iid Gaussian weights. On the CPU
    (bench/bench_probe.py --crossover, T = 100, depth 50, one thread each) the two paths cross
    near width 200 (dense / sampled time 0.96), the dense one faster below (1.8x at 150) and the
    sampled one faster above (2x at 500, 18x at 3000): auto samples when width > 2 T. On a GPU
    the dense path's large matrix products are cheap (on an H200 at width 3000, T = 100: dense
    1.8 s, sampled 3.0 s for 30 networks, measured before the sampled path ran its networks in
    one batch), so auto keeps the dense path unless its weights (depth x width^2 floats) would
    not fit comfortably (DENSE_GPU_BYTES). The dense path stays the reference, and auto's only
    path where width <= T.
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


def dense_network(
    cfg: DictConfig, x: Tensor, generator: torch.Generator, neurons: bool, warn: bool = False
):
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
        x,
        cfg.arch.depth,
        cfg.arch.width,
        cfg.arch.activation,
        init.name,
        gain=getattr(init, "gain", None),
        eps=getattr(init, "eps", 0.0),
        grad=cfg.probe.grad,
        generator=generator,
        keep_u=(1, cfg.arch.depth) if neurons else (),
        norm=cfg.arch.norm,
    )


def probe_networks(
    cfg: DictConfig, x: Tensor, method: str, plan: Plan | None = None
) -> Iterator[tuple[int, list, dict]]:
    """(network, per-layer rows, {layer: u^l}) for every network of the probe, in any order;
    the sampled path as `plan` says (default: sampled_plan on torch's threads)."""
    if method == "dense":
        for i in range(cfg.probe.networks):
            yield i, *probe_network(cfg, x, i, method)
        return
    plan = sampled_plan(cfg, x.device, torch.get_num_threads()) if plan is None else plan
    generators = [
        torch.Generator(device=x.device).manual_seed(network_seed(cfg.seed, i))
        for i in range(cfg.probe.networks)
    ]
    init = to_spec(cfg.init)
    yield from sampled_probe(
        x,
        cfg.arch.depth,
        cfg.arch.width,
        generators,
        batch=plan.batch,
        threads=plan.workers,
        activation=cfg.arch.activation,
        init=init.name,
        gain=getattr(init, "gain", None),
        eps=getattr(init, "eps", 0.0),
        grad=cfg.probe.grad,
        keep_u=(1, cfg.arch.depth) if cfg.probe.neurons > 0 else (),
        norm=cfg.arch.norm,
    )


def neuron_rows(network: int, kept: dict[int, Tensor], count: int, seed: int) -> pd.DataFrame:
    """`count` random neurons' raw pre-activations over the batch at each kept layer."""
    gen = np.random.default_rng([seed, network, 1])
    frames = []
    for layer, u in sorted(kept.items()):
        u = u.cpu().numpy()
        picks = np.sort(gen.choice(u.shape[1], size=min(count, u.shape[1]), replace=False))
        T = u.shape[0]
        frames.append(
            pd.DataFrame(
                {
                    "network": network,
                    "layer": layer,
                    "neuron": np.repeat(picks, T),
                    "sample": np.tile(np.arange(T), len(picks)),
                    "value": u[:, picks].T.reshape(-1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def run(cfg: DictConfig) -> None:

    check(cfg)
    with claim("probe", cfg) as out_dir:
        probe(cfg, out_dir)


def probe(cfg: DictConfig, out_dir: Path) -> None:
    """Probe the networks `cfg` describes and write probe.csv (and neurons.csv, heldout.csv)
    into out_dir."""

    device = devices.resolve(cfg.device)
    method = choose_method(cfg, device)
    x = fixed_batch(cfg.dataset, cfg.arch, cfg.probe.samples, cfg.seed, device)
    plan = sampled_plan(cfg, device, torch.get_num_threads()) if method == "sampled" else None
    start = time.perf_counter()
    fresh = heldout.fresh_batch(cfg, device) if cfg.probe.heldout else None
    tables, neurons, held = {}, {}, {}
    # the sampled path finishes a batch of networks at once: show each, and the average rate
    with tqdm(
        total=cfg.probe.networks,
        desc="probe",
        unit="net",
        mininterval=0,
        miniters=1,
        smoothing=0,
        disable=None if cfg.probe.progress else True,
    ) as bar:
        # closed at once on an error or Ctrl-C: the sampled path's worker threads stop
        with closing(probe_networks(cfg, x, method, plan)) as networks:
            for i, rows, kept in networks:
                tables[i] = check_finite(probe_frame(i, rows), cfg)
                if cfg.probe.neurons > 0:
                    neurons[i] = neuron_rows(i, kept, cfg.probe.neurons, cfg.seed)
                if fresh is not None:
                    layers = heldout.heldout_network(
                        cfg, x, fresh, network_seed(cfg.seed, i), num_classes(cfg), method
                    )
                    held[i] = heldout.heldout_frame(i, layers, len(x), len(fresh))
                bar.update()
    table = pd.concat([tables[i] for i in sorted(tables)], ignore_index=True)
    path = PROBE.write(table, out_dir)
    if neurons:
        NEURONS.write(pd.concat([neurons[i] for i in sorted(neurons)], ignore_index=True), out_dir)
    tail = ""
    if held:
        fresh_table = pd.concat([held[i] for i in sorted(held)], ignore_index=True)
        path = f"{path}, {HELDOUT.write(fresh_table, out_dir).name}"
        top = fresh_table[fresh_table.layer == fresh_table.layer.max()]
        geometric = np.exp(np.log(top.heldout_second_moment).mean())
        tail = (
            f"; second moment on the fit's {len(x)} inputs {top.fit_second_moment.mean():.4g},"
            f" on {len(fresh)} fresh ones {geometric:.4g} (geometric mean)"
        )
    last = table[table.layer == table.layer.max()]
    how = (
        ""
        if plan is None
        else (
            f" ({plural(plan.workers, 'thread')}, up to {plural(plan.batch, 'network')} per batch, "
            f"about {memory.gigabytes(plan.bytes)})"
        )
    )
    log.info(
        "probe: %d networks x %d layers, %s path%s, %.1f s -> %s (layer %d: mean ratio m/v %.4g%s)",
        cfg.probe.networks,
        table.layer.max(),
        method,
        how,
        time.perf_counter() - start,
        path,
        table.layer.max(),
        last.ratio.mean(),
        tail,
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check_finite(frame: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """A network whose pre-activations overflow float32 (a large init.gain over many layers)
    stops the probe with the first such layer, instead of NaN rows."""
    bad = frame[~np.isfinite(frame["second_moment"])]
    if not bad.empty:
        row = bad.iloc[0]
        raise VarexpError(
            f"network {row.network}, layer {row.layer} ({row['name']}): the "
            f"pre-activations overflow float32 (second moment "
            f"{row.second_moment}); init={cfg.init.name}, init.gain="
            f"{cfg.init.get('gain')}: use a smaller gain or fewer layers"
        )
    return frame
