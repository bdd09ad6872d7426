"""Run folders: who made their results, and which runs a table or a figure may read; one
module per concern, their names importable from here as before: the identity of a config
(identities), run.json (run_record), locks (locks), finding results (finding) and a launch's
checks (launch)."""

from varexp.results.finding import (  # noqa: F401
    discover,
    disk_full,
    find_results,
    made_by,
    run_config,
)
from varexp.results.identities import (  # noqa: F401
    ADDED_LATER,
    IDENTITY,
    NOT_IDENTITY,
    differences,
    flatten,
    identity,
    identity_hash,
    shared,
)
from varexp.results.launch import (  # noqa: F401
    check_launch,
    claim,
    folder_identity,
    prepare_launch,
)
from varexp.results.locks import (  # noqa: F401
    LOCK,
    check_free,
    holder,
    in_use,
    lock,
)
from varexp.results.run_record import (  # noqa: F401
    HYDRA_RECORD,
    RECORD,
    REPLACED,
    check_folder,
    holds_results,
    move_aside,
    read_record,
    recorded_identity,
    remove_stale_temporaries,
    write_hydra_record,
    write_record,
)
from varexp.results.summary import read_summary  # noqa: F401
