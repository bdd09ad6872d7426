"""varexp's Hydra sweeper (`hydra/sweeper=varexp`, the default of `varexp sweep`): Hydra's basic
sweeper with the runs that share a data stream launched as packs (varexp.pack). Hydra finds
sweepers only in the hydra_plugins namespace."""
