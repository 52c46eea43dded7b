"""Moving queued work between engines without losing or duplicating a task, and the backups
that make it recoverable.

Every move is: read (never pop), write the database durably, and only then remove from Redis
with a script that removes exactly what was read; each step is idempotent, so a rerun after
a crash at any point continues. Modules:

- `rq_reader`: non-destructive enumeration of rq's queues and registries (SCAN, LRANGE, ZRANGE)
- `lua`: the rq key layout and every Lua script
- `decode`, `mapping`, `quarantine`: foreign jobs -> tasks, or quarantine byte for byte
- `db_writes`: the batched, idempotent database side
- `rq_to_db`, `db_to_rq`: the two migrations
- `backup`, `restore`: the snapshot and putting back what is missing
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
