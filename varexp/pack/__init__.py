"""Packed runs: the runs of a sweep that share a data stream (all but init, optimizer and learning
rate) trained as one batched model, one job each pack (`sweep.pack`).

- plan: which jobs pack together and how many per pack (auto, off, N; the memory there)
- stacked: runs of one structure as stacked weights; the vmapped step; per-run SGD and Adam
- trainer: a pack of `varexp.train.Trainer`s, each run's init, statistics, rows, checkpoint
- job: a pack job in Hydra: each run's config, folder, records and log as its own job's

Hydra launches the packs through `hydra_plugins/varexp_sweeper` (`hydra/sweeper=varexp`)."""
