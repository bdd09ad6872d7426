"""Every config group option and command section is a dataclass next to the code it configures
(varexp.schema); importing this module registers them all in Hydra's ConfigStore, which must
hold them before a config is composed, and varexp's sweeper with Hydra's plugins."""

from hydra_plugins.varexp_sweeper import pack_sweeper  # hydra/sweeper=varexp
from varexp import inits, loggers, models, optim  # noqa: F401  init, logger, arch, optim
from varexp.data import catalog  # noqa: F401  the dataset group

pack_sweeper.register()
