"""`hydra/sweeper=varexp` (the default of `varexp sweep`): Hydra's basic sweeper, the same grid
and the same jobs, with the runs that share a data stream launched as pack jobs
(varexp.pack.plan). Every launcher (basic, joblib, submitit_local, submitit_slurm) launches a
pack as it launches any job; the job trains its runs together (varexp.pack.job). Hydra imports
every module here when it starts, so varexp is imported only when a sweep runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class PackSweeperConf:
    _target_: str = "hydra_plugins.varexp_sweeper.pack_sweeper.PackSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="varexp", node=PackSweeperConf, provider="varexp"
)


class PackSweeper(Sweeper):
    """Hydra's BasicSweeper (its grid, its batches, its launch), whose jobs are the sweep's
    packs; a pack of one run is the run's own job, exactly as the basic sweeper launches it."""

    expands_basic_grid = True  # every job of the grid is composed before the launch (compose.py)

    def __init__(
        self, max_batch_size: int | None = None, params: dict[str, str] | None = None
    ) -> None:
        self.max_batch_size, self.params = max_batch_size, params
        self.basic: Any = None
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # the basic sweeper as Hydra has it now (its plugin scan re-imports the module)
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        self.config, self.hydra_context = config, hydra_context
        self.basic = BasicSweeper(self.max_batch_size, self.params)
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.basic.split_arguments = self.split_arguments  # its jobs, then packed

    def sweep(self, arguments: list[str]) -> Any:
        return self.basic.sweep(arguments)

    def split_arguments(
        self, overrides: Sequence, max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """The grid's jobs as the basic sweeper splits them, then packed, in batches."""
        from varexp.pack.plan import pack_job, sweep_plan

        jobs = [list(job) for job in type(self.basic).split_arguments(overrides, None)[0]]
        packs = sweep_plan(self.config, jobs, lambda i: self.compose(jobs[i])).packs
        launched = [pack_job(jobs, pack) for pack in packs]
        if max_batch_size is None:
            return [launched]
        return [launched[i : i + max_batch_size] for i in range(0, len(launched), max_batch_size)]

    def compose(self, job: list[str]) -> DictConfig:
        """A job's config, as the launcher will compose it."""
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(job))


def register() -> None:
    """Make the sweeper known to Hydra where its scan of hydra_plugins cannot list it (an
    editable install maps the package through an import hook that the scan does not walk)."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    if f"{__name__}.{PackSweeper.__name__}" not in plugins.class_name_to_class:
        plugins.register(PackSweeper)
