"""The cost of `varexp.probe(model, x)` on a torchvision model, in forward-pass equivalents: its
time over that of one plain forward pass of the same batch (eval mode, autograd off).

    python bench/bench_library.py                         # resnet50, T = 64, 224x224 (CPU: ~1 min)
    python bench/bench_library.py --model resnet18 --size 64   # a quick run

varexp.probe runs one forward pass with a statistics hook per weight layer (BatchNorm on batch
statistics) and one backward pass for the gradient probe (to the layers' outputs only, not to
the weights); with grad=False the forward alone. Best of --repeats each, alternating.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from bench_inits import best_seconds

import varexp
from varexp.stop import run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, num_classes=1000)
    x = torch.randn(args.samples, 3, args.size, args.size)

    def forward() -> None:
        with torch.no_grad():
            model.eval()(x)

    def train_forward() -> None:
        model.train()(x)  # as the model is built and called in training: BatchNorm on batch
        # statistics, autograd recording

    forward()  # warm-up: oneDNN builds its kernels
    plain = train = with_grad = without_grad = float("inf")
    for _ in range(args.repeats):
        plain = min(plain, best_seconds(forward, 1))
        train = min(train, best_seconds(train_forward, 1))
        with_grad = min(with_grad, best_seconds(lambda: varexp.probe(model, x), 1))
        without_grad = min(
            without_grad, best_seconds(lambda: varexp.probe(model, x, grad=False), 1)
        )
    print(
        f"{args.model}, T = {args.samples}, {args.size}x{args.size}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}\n"
    )
    print("| call | seconds | forward-pass equivalents |")
    print("|---|---|---|")
    print(f"| model(x), eval, no autograd | {plain:.2f} | 1 |")
    print(
        f"| model(x), train mode (batch statistics, autograd) | {train:.2f} | {train / plain:.2f} |"
    )
    print(f"| varexp.probe(model, x) | {with_grad:.2f} | {with_grad / plain:.2f} |")
    print(
        f"| varexp.probe(model, x, grad=False) | {without_grad:.2f} | {without_grad / plain:.2f} |"
    )


if __name__ == "__main__":
    run_benchmark(main)
