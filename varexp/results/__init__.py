"""What a run folder holds and who made it: the identity of its config (identities), its record
(run.json, run_record), locks (locks), finding results (finding), a launch's checks and refusals
(launch), the columns of every table and the one reader of them (tables), and the
training checkpoint (checkpoint), and network and seed averages of the tables (aggregate)."""

from varexp.results.finding import (
    discover,
    disk_full,
    find_results,
    made_by,
    run_config,
)
from varexp.results.identities import differences, identity, identity_hash
from varexp.results.launch import check_launch, claim, prepare_launch
from varexp.results.locks import lock
from varexp.results.run_record import RECORD, REPLACED, read_record, recorded_identity, write_record
from varexp.results.summary import SUMMARY, Status, read_summary, summary_finished

__all__ = [
    "RECORD",
    "SUMMARY",
    "Status",
    "summary_finished",
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
