"""Every config group option and command section is a dataclass next to the code it configures
(varexp.schema); importing this module registers them all in Hydra's ConfigStore, which must
hold them before a config is composed."""

from varexp import inits, models, optim  # noqa: F401  the init, arch and optim groups
from varexp.data import catalog  # noqa: F401  the dataset group
