"""Which runs of a sweep train together, and how many at once (`sweep.pack=auto|off|N`).

Two jobs of a multirun share a data stream when their overrides agree on everything but the
keys that only change a run's weights, optimizer or learning rate (PACK_FREE): the init (and
with init=batchnorm the BatchNorm units it adds), the optimizer and its options, the lr index.
Such jobs form a group; a group is cut into packs of at most N runs. `off` packs nothing: every
run is a job of its own, as Hydra launches it. `auto` packs where packing measured faster
(bench/README.md, "Packed runs"): on the CPU the vmapped step of many small MLPs beats a loop
over them, so auto packs a CPU MLP run when its training step costs at most its record's
cpu_pack_macs multiply-adds (varexp.models.ARCHITECTURES); it packs no convolutional run on the
CPU (cpu_pack_macs None, cpu_unpacked saying why: the quick Fig. 4's
sweep measured slower packed even where its UNet's bare step was faster, and the default
ALL-CNN-C's step is slower batched); on a GPU, where one small run leaves most of the chip
idle, up to GPU_PACK runs. Either way a pack that would not fit in the free memory is cut
smaller, with one line saying so.

Runs that cannot be packed run alone whatever sweep.pack says: dropout (it draws from the global
generator at every step, so batched runs would draw differently than alone), torch.compile,
and models other than varexp's own (arch=torchvision|timm).
"""

from __future__ import annotations

import json
import math
import string
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import torch
from omegaconf import DictConfig, OmegaConf

from varexp import memory
from varexp.data import data_info
from varexp.devices import resolve as resolve_device
from varexp.inits import fans
from varexp.models import architecture, build_model
from varexp.models.base import WEIGHT_TYPES
from varexp.optim import optimizer
from varexp.options.sections import PACK_AUTO as AUTO
from varexp.options.sections import PACK_OFF as OFF

# keys (and their sub-keys) that leave the data stream alone: runs differing only in these pack
PACK_FREE = ("init", "optim", "sweep.lr_index", "arch.norm")
# which architectures pack, and which sweep.pack=auto packs on the CPU, are their records'
# (varexp.models.ARCHITECTURES: packable, cpu_pack_macs, cpu_unpacked). auto on the CPU packs no
# convolutional runs: their bare stacked step beat the loop only for small ones (UNet up to
# about 300M multiply-adds, ALL-CNN-C about 40M), yet whole sweeps of them ran slower packed
# (the quick Fig. 4 at 0.57-0.60x of sweep.pack=off, bench/README.md): each run's own start and
# files dominate a short CPU run, a pack does not share them, and one pack job holds one core
# while the other's jobs end
GPU_PACK = 24  # auto on CUDA: at most this many runs per pack
# the override that hands a pack job its runs
PACK_KEY = "packed_runs"


# ---------------------------------------------------------------------------------------------
# groups


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def pack_free(override: str) -> bool:
    key = key_of(override)
    return any(key == k or key.startswith(k + ".") for k in PACK_FREE)


def groups_of(jobs: list[list[str]]) -> list[list[int]]:
    """Job indices grouped by their overrides other than the PACK_FREE keys, in sweep order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for number, job in enumerate(jobs):
        groups.setdefault(tuple(o for o in job if not pack_free(o)), []).append(number)
    return list(groups.values())


def unpackable(cfg: DictConfig) -> str | None:
    """Why runs of this config cannot be trained in a pack, or None."""
    if not architecture(cfg.arch.name).packable:
        return f"arch={cfg.arch.name}"
    if float(cfg.arch.get("dropout", 0.0) or 0.0) > 0:
        return f"arch.dropout={cfg.arch.dropout}"
    if cfg.train.compile:
        return "train.compile=true"
    return None


# ---------------------------------------------------------------------------------------------
# the cost of a run's step


@cache
def _step_macs(arch_json: str, dataset_json: str, batch: int) -> int:
    arch, dataset = json.loads(arch_json), json.loads(dataset_json)
    info = data_info(dataset, arch)
    total = [0]

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        total[0] += output.numel() * int(fans(module)[0])

    with torch.device("meta"):
        model = build_model(arch, info.input_shape, info.num_classes)
        handles = [
            m.register_forward_hook(count) for m in model.modules() if isinstance(m, WEIGHT_TYPES)
        ]
        model(torch.empty(batch, *info.input_shape))
    for handle in handles:
        handle.remove()
    return total[0]


def step_macs(cfg: DictConfig) -> int:
    """Multiply-adds of one forward pass of a training batch (weight layers)."""
    arch = json.dumps(OmegaConf.to_container(cfg.arch, resolve=True), sort_keys=True)
    dataset = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=True), sort_keys=True)
    return _step_macs(arch, dataset, int(cfg.train.batch_size))


def run_bytes(cfg: DictConfig) -> float:
    """Memory of one run in a pack: its training step (varexp.memory) and a second copy of its
    weights and optimizer state (its own module beside the stacks)."""
    info = data_info(cfg.dataset, cfg.arch)
    params, outputs = memory.count(
        cfg.arch, info.input_shape, info.num_classes, cfg.train.batch_size
    )
    states = optimizer(cfg.optim.name).states
    own_copy = memory.FLOAT * params * (1 + states)
    return memory.train_bytes(params, outputs, cfg.optim.name) + own_copy


def fitting(cfg: DictConfig, runs: int, device: torch.device) -> int:
    """How many runs of `cfg` fit in one pack in the free memory of `device` (at least 1)."""
    free = memory.available(device)
    return max(1, min(runs, int(memory.USABLE * free // run_bytes(cfg))))


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class Plan:
    """The packs of a sweep: each a list of job indices (its first the lead), and what the
    plan printed before the sweep says about them."""

    packs: list[list[int]]
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return sum(len(p) for p in self.packs)

    @property
    def packed(self) -> bool:
        return any(len(p) > 1 for p in self.packs)

    def text(self) -> str:
        """'72 runs in 3 jobs: 3 packs of 24', or '72 runs, each its own job (not packed)',
        with the notes."""
        if not self.packed:
            return "; ".join([f"{self.runs} runs, each its own job (not packed)", *self.notes])
        jobs = len(self.packs)
        parts = []
        for size in sorted({len(p) for p in self.packs}, reverse=True):
            count = sum(len(p) == size for p in self.packs)
            parts.append(
                f"{count} pack{'s' * (count > 1)} of {size}"
                if size > 1
                else f"{count} run{'s' * (count > 1)} alone"
            )
        head = (
            f"{self.runs} runs in {jobs} job{'s' * (jobs > 1)}: {', '.join(parts)} (a pack "
            "trains its runs as one batched model)"
        )
        return "; ".join([head, *self.notes])


def device_of(cfg: DictConfig, launcher: str) -> torch.device | None:
    """Where the runs will train: this machine's device, or for a cluster's nodes what the
    config asks for (device=cuda, or device=auto with GPUs per job; None: it cannot tell)."""
    if remote(launcher):
        device = str(cfg.device)
        options = cfg.get("hydra", {}).get("launcher", {}) or {}
        gpus = (
            options.get("gpus_per_node")
            or options.get("gpus_per_task")
            or "gpu" in str(options.get("gres") or "")
        )
        if device.startswith("cuda") or device == "auto" and gpus:
            return torch.device("cuda")
        return torch.device("cpu") if device == "cpu" else None
    return resolve_device(str(cfg.device), job=0)


def remote(launcher: str) -> bool:
    """Whether the launcher runs its jobs on other machines (whose memory this one cannot see:
    there a pack job checks it and cuts itself smaller where it must, varexp.pack.job)."""
    return launcher == "submitit_slurm"


def plan(
    setting: object,
    jobs: list[list[str]],
    config_of: Callable[[int], DictConfig],
    launcher: str = "basic",
    parallel: int = 1,
) -> Plan:
    """The packs for `jobs` (every job's overrides) with sweep.pack = `setting`; `config_of(i)`
    composes job i (only the first job of each group is composed)."""
    if setting == OFF or setting is False:
        return Plan([[i] for i in range(len(jobs))])
    groups = groups_of(jobs)
    packs: list[list[int]] = []
    notes: list[str] = []
    for group in groups:
        cfg = config_of(group[0])
        reason = unpackable(cfg)
        if reason is not None:
            if len(group) > 1:
                notes.append(f"{len(group)} runs with {reason} not packed")
            packs += [[i] for i in group]
            continue
        size, note = pack_size(setting, cfg, len(group), launcher, parallel, len(groups))
        if note and note not in notes:
            notes.append(note)
        per = math.ceil(len(group) / math.ceil(len(group) / size))  # even packs
        packs += [group[i : i + per] for i in range(0, len(group), per)]
    # the longest jobs first, so that a parallel launcher does not end on one pack alone
    packs.sort(key=len, reverse=True)
    if len(groups) > 1 and any(len(p) > 1 for p in packs):
        notes.append(
            f"{len(groups)} groups of runs that differ in more than init, optimizer "
            "and learning rate (another task, seed, batch size, ...) pack apart"
        )
    return Plan(packs, notes)


def pack_size(
    setting: object, cfg: DictConfig, runs: int, launcher: str, parallel: int, groups: int
) -> tuple[int, str | None]:
    """The most runs of one group per pack, and a note on why (or None)."""
    device = device_of(cfg, launcher)
    note = None
    if setting == AUTO:
        macs = step_macs(cfg)
        if device is None:
            return 1, (
                "sweep.pack=auto: not packed, the cluster's device is not known here "
                "(device=cuda, or hydra.launcher.gpus_per_node, tells it; or set "
                "sweep.pack=N)"
            )
        record = architecture(cfg.arch.name)
        if device.type == "cpu" and record.cpu_pack_macs is None:
            return 1, (
                f"sweep.pack=auto: {record.title} runs not packed on the CPU "
                f"({record.cpu_unpacked}; sweep.pack=N packs them)"
            )
        if device.type == "cpu":
            most = record.cpu_pack_macs
            if macs > most:
                return 1, (
                    f"sweep.pack=auto: not packed, one {cfg.arch.name} step costs "
                    f"{memory.amount(macs)} multiply-adds, compute-bound on the CPU "
                    f"(packs pay below {memory.amount(most)})"
                )
            size = runs
            if groups < parallel:  # one pack per core where the launcher runs jobs side by side
                size = math.ceil(runs / math.ceil(parallel / groups))
        else:
            size = min(runs, GPU_PACK)
    else:
        size = min(int(setting), runs)
    if device is not None and size > 1 and not remote(launcher):
        fits = fitting(cfg, size, device)
        if fits < size:
            note = (
                f"a pack of {size} runs would need about "
                f"{memory.gigabytes(size * run_bytes(cfg))}, more than the "
                f"{memory.gigabytes(memory.available(device))} free on {device}: packs of "
                f"at most {fits}"
            )
            size = fits
    return max(1, size), note


# ---------------------------------------------------------------------------------------------
# a pack job's overrides: the lead's, and the runs it trains


_SAFE = "".join(c for c in string.printable if c not in "%\"'\\ \t\n\r\x0b\x0c")


def encode(members: list[tuple[int, list[str]]]) -> str:
    """The override `+packed_runs=[...]` for runs given as (job number, the overrides in which
    the run differs from the pack's lead): one Hydra string per run, 'NUMBER:override ...',
    each override percent-encoded where it holds spaces, quotes, backslashes or '%'."""
    items = [
        f"{number}:" + " ".join(urllib.parse.quote(o, safe=_SAFE) for o in overrides)
        for number, overrides in members
    ]
    return f"+{PACK_KEY}=[" + ",".join(f'"{item}"' for item in items) + "]"


def decode(value: list[str]) -> list[tuple[int, list[str]]]:
    out = []
    for item in value:
        number, _, rest = str(item).partition(":")
        out.append((int(number), [urllib.parse.unquote(o) for o in rest.split(" ") if o]))
    return out


def pack_job(jobs: list[list[str]], pack: list[int]) -> list[str]:
    """The overrides Hydra launches a pack under: its lead's, plus the runs it trains (each by
    its job number and the overrides in which it differs from the lead)."""
    lead = jobs[pack[0]]
    if len(pack) == 1:
        return list(lead)
    members = [(i, [o for o, mine in zip(jobs[i], lead, strict=True) if o != mine]) for i in pack]
    return [*lead, encode(members)]


def member_overrides(lead: list[str], differing: list[str]) -> list[str]:
    """A run's overrides from its pack's lead and the ones in which it differs."""
    by_key = {key_of(o): o for o in differing}
    return [by_key.get(key_of(o), o) for o in lead]


def sweep_plan(
    cfg: DictConfig, jobs: list[list[str]], config_of: Callable[[int], DictConfig]
) -> Plan:
    """The packs of `varexp sweep` for its jobs (`config_of(i)`: job i's full config), as the
    plan before the sweep prints them and as its sweeper launches them."""
    from varexp.compose import launcher
    from varexp.sweep import parallel

    return plan(
        cfg.sweep.get("pack", OFF), jobs, config_of, launcher(cfg), parallel(cfg, len(jobs))
    )
