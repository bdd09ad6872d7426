"""Every config group option and command section is a dataclass next to the code it configures
(varexp.schema); importing this module registers them all in Hydra's ConfigStore, which must
hold them before a config is composed."""

from varexp import inits, loggers, models, optim  # noqa: F401  init, logger, arch, optim
from varexp.data import catalog  # noqa: F401  the dataset group
