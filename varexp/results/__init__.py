"""What a run folder holds and who made it: the record of its config (run.json), locks and
refusals (records), the columns of every table and the one reader of them (tables), and the
training checkpoint (checkpoint), and network and seed averages of the tables (aggregate)."""

from varexp.results.records import (
    RECORD,
    REPLACED,
    check_launch,
    claim,
    differences,
    discover,
    disk_full,
    find_results,
    identity,
    identity_hash,
    lock,
    made_by,
    prepare_launch,
    read_record,
    read_summary,
    recorded_identity,
    run_config,
    write_record,
)

__all__ = [
    "RECORD",
    "REPLACED",
    "check_launch",
    "claim",
    "differences",
    "discover",
    "disk_full",
    "find_results",
    "identity",
    "identity_hash",
    "lock",
    "made_by",
    "prepare_launch",
    "read_record",
    "read_summary",
    "recorded_identity",
    "run_config",
    "write_record",
]
