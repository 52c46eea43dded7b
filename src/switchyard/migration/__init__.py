"""Moving queued work between engines without losing or duplicating a task, and the backups
that make it recoverable.

Every move is: read (never pop), write the database durably, and only then remove from Redis
with a script that removes exactly what was read; each step is idempotent, so a rerun after
a crash at any point continues. Modules:

- `rq_reader`: non-destructive enumeration of rq's queues and registries (SCAN, LRANGE, ZRANGE)
- `decode`, `mapping`: foreign jobs -> tasks, or quarantine byte for byte
- `rq_to_db`, `db_to_rq`: the two migrations
- `backup`, `restore`: the snapshot and putting back what is missing

Elsewhere: the database side of a move is `db/moves.py` (batched, idempotent, fenced), the
quarantine row `db/quarantine.py`, parallel writers `db/bulk.py`; the key layout
`rq_engine/keys.py` and every Lua script `rq_engine/scripts.py`.
"""

from switchyard.migration.backup import load_manifest, take_backup, verify_checksums
from switchyard.migration.db_to_rq import DbToRqReport, migrate_db_to_rq
from switchyard.migration.restore import RestoreReport, restore_backup
from switchyard.migration.rq_to_db import (
    RqToDbOptions,
    RqToDbReport,
    migrate_rq_to_db,
    total_entries,
)

__all__ = [
    "DbToRqReport",
    "RestoreReport",
    "RqToDbOptions",
    "RqToDbReport",
    "load_manifest",
    "migrate_db_to_rq",
    "migrate_rq_to_db",
    "restore_backup",
    "take_backup",
    "total_entries",
    "verify_checksums",
]
