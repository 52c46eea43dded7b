"""What makes a bulk move fast without changing what it does.

- `Writers` runs batch writes on `n` threads, each with a database connection of its own
  that stays with its thread for the whole run (no pool checkout and ping per batch; the
  write is handed a `Writer`, so the connection never leaves `db/`), so
  batches can be written while others are read, committed or removed. Nothing here decides
  what may run at once: `rq_to_db` does (a batch's COMMIT always before its removal; two
  batches written at once never share a job id).
- `collector_spared` keeps CPython's full collections off the objects the process already
  holds while a run allocates its many short-lived ones.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from switchyard.db import moves
from switchyard.db.store import TaskStore

P = ParamSpec("P")
T = TypeVar("T")


class Writer:
    """What a write run by the pool is handed: its thread's connection, behind the one kind
    of transaction a bulk move makes on it."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def migration_tx(
        self, actor: str, max_attempts: int, epoch: int
    ) -> contextlib.AbstractContextManager[moves.MigrationTx]:
        """One batch's fenced transaction (`moves.migration_tx`)."""
        return moves.migration_tx(self._conn, actor, max_attempts, epoch)


class Writers:
    """`n` threads writing batches, each on its own connection; a context manager that
    waits for the writes in progress and closes the connections on the way out."""

    def __init__(self, store: TaskStore, n: int) -> None:
        self.conns = store.connections
        self.n = n
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="switchyard-writer")
        self.local = threading.local()
        self.opened: list[sa.Connection] = []
        self.lock = threading.Lock()

    def submit(
        self, write: Callable[Concatenate[Writer, P], T], *args: P.args, **kw: P.kwargs
    ) -> Future[T]:
        """Run `write(writer, *args)` on a writer thread."""
        return self.pool.submit(lambda: write(Writer(self._connection()), *args, **kw))

    def _connection(self) -> sa.Connection:
        conn: sa.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = self.conns.connect()
            with self.lock:
                self.opened.append(conn)
        return conn

    def __enter__(self) -> Writers:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.pool.shutdown(wait=True)
        for conn in self.opened:
            conn.close()


@contextlib.contextmanager
def collector_spared() -> Iterator[None]:
    """Freeze (gc.freeze) every object alive now for the block, unless something else froze
    objects already. A run allocates enough to trigger full collections, and each one walks
    everything the process holds (SQLAlchemy, rq, the app): 50-90 ms here, a fifth of a
    10,000-job move. Frozen, they are skipped; the run's own garbage is still collected, and
    the objects go back to the collector's care unchanged afterwards."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
