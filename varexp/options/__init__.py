"""Every config group option (arch=mlp, init=scale+bias, ...) and every command's own section
(probe:, train:, ...) as a dataclass of what each key may hold (varexp.schema). These modules
import neither torch nor pandas, so that `varexp COMMAND --help` and shell completion compose
a config without them; the code each configures imports its options from here. Importing this
package registers them all in Hydra's ConfigStore, which must hold them before a config is
composed, and varexp's sweeper with Hydra's plugins."""

from hydra_plugins.varexp_sweeper import pack_sweeper  # hydra/sweeper=varexp
from varexp.options import arch, dataset, init, logger, optim, sections
from varexp.options.init import units_of
from varexp.schema import store

for _name, _spec in arch.ARCHS.items():
    store("arch", _name, _spec)
for _name, _spec in dataset.DATASETS.items():
    store("dataset", _name, _spec)
for _name, _spec in init.SPECS.items():
    if units_of(_spec) == "none":
        store("init", _name, _spec)
    else:  # the units it needs, set once in the config: later code reads only arch.norm
        store("init", _name, {"init": _spec, "arch": {"norm": units_of(_spec)}}, package="_global_")
for _name, _spec in logger.LOGGERS.items():
    store("logger", _name, _spec)
for _name, _spec in optim.OPTIM_SPECS.items():
    store("optim", _name, _spec)
store("section", "theory", sections.TheoryOptions)
store("section", "probe", sections.ProbeOptions)
store("section", "train", sections.TrainOptions)
store("section", "sweep", sections.SweepOptions)
store("section", "reproduce", sections.ReproduceOptions)

pack_sweeper.register()
