"""Wall time of the paper's Fig. 2 middle probe (30 Kaiming ALL-CNN-C at the paper's widths, T =
100) and of every init on ALL-CNN-C and UNet in forward-pass equivalents.

    python bench/bench_cnn_probe.py                   # time 3 networks, extrapolate to 30
    python bench/bench_cnn_probe.py --networks 30     # the whole probe
    python bench/bench_cnn_probe.py --inits           # also every init, ALL-CNN-C x1, UNet x1/4

The probe runs experiment=figure2_allcnnc with dataset=shapes (CIFAR10's 3x32x32 format, no
download) through varexp.probing.probe_network, exactly as `varexp probe` does per network: build,
init, one forward with the statistics hooks and one backward for grad_sq. Prints markdown tables.
The init table reuses bench/bench_inits.py's models and timing, and divides each init's time by
one forward pass of a minibatch through the same model (bench_inits.py reports that ratio for the
fit alone, not for the whole init).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

sys.path.insert(0, str(Path(__file__).parent))
import bench_inits  # noqa: E402

from varexp.data import fixed_batch  # noqa: E402
from varexp.models import build_model  # noqa: E402
from varexp.probing import probe_network  # noqa: E402
from varexp.stop import run_benchmark  # noqa: E402


def probe_cfg(networks: int, samples: int, channels: float):
    with initialize_config_module("varexp.conf", version_base="1.3"):
        return compose("probe", overrides=[
            "experiment=figure2_allcnnc", "dataset=shapes", "device=cpu",
            f"probe.networks={networks}", f"probe.samples={samples}", f"arch.channels={channels}",
        ])  # fmt: skip


def forward_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    model.eval()
    with torch.no_grad():
        return bench_inits.best_seconds(lambda: model(x), repeats)


def bench_probe(timed: int, total: int, samples: int, channels: float) -> dict:
    cfg = probe_cfg(total, samples, channels)
    start = time.perf_counter()
    x = fixed_batch(cfg.dataset, cfg.arch, samples, cfg.seed)
    load = time.perf_counter() - start
    seconds = []
    for i in range(timed):
        start = time.perf_counter()
        probe_network(cfg, x, i, "dense")
        seconds.append(time.perf_counter() - start)
    model = build_model(cfg.arch, tuple(x.shape[1:]), 10)
    forward = forward_seconds(model, x)
    per_net = sorted(seconds)[len(seconds) // 2]  # median: the machine is shared
    return {
        "probe": f"allcnnc x{channels:g}, shapes, T={samples}",
        "networks timed": timed,
        "batch load s": load,
        "s / network (median)": per_net,
        "forward s (T inputs)": forward,
        "network / forward": per_net / forward,
        f"{total} networks s": load + sum(seconds) + per_net * (total - timed),
        "extrapolated": "no" if timed >= total else f"from {timed}",
    }


def bench_inits_in_forwards(k: int, repeats: int) -> list[dict]:
    cases = [
        bench_inits.registry_case("allcnnc", {"channels": 1.0}, (3, 32, 32), 32),
        bench_inits.registry_case("unet", {"channels": 0.25}, (1, 256, 256), 2),
    ]
    rows = []
    for case in cases:
        torch.manual_seed(0)
        batches = [torch.randn(case.samples, *case.input_shape) for _ in range(k)]
        model = case.build("kaiming")
        bench_inits.initialize(model, {"name": "kaiming"})
        forward = forward_seconds(model, batches[0], repeats)
        for init in ("kaiming", "scale", "scale+bias", "lsuv"):
            seconds, _, passes = bench_inits.timed_init(case, init, k, batches, repeats)
            rows.append({
                "model": f"{case.name}, T={case.samples}", "init": init, "k": k,
                "seconds": seconds, "forward s": forward, "init / forward": seconds / forward,
                "reported passes": passes,
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=3, help="networks actually timed")
    parser.add_argument("--total", type=int, default=30, help="networks of the full probe")
    parser.add_argument("--samples", type=int, default=100, help="T")
    parser.add_argument("--channels", type=float, default=1.0, help="ALL-CNN-C multiplier")
    parser.add_argument("--inits", action="store_true", help="also time every init")
    parser.add_argument("--k", type=int, default=5, help="minibatches of data-dependent inits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    networks = min(args.networks, args.total)
    print(bench_inits.markdown([bench_probe(networks, args.total, args.samples, args.channels)]))
    if args.inits:
        print()
        print(bench_inits.markdown(bench_inits_in_forwards(args.k, args.repeats)))


if __name__ == "__main__":
    run_benchmark(main)
