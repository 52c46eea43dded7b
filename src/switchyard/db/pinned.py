"""One autocommit connection kept by a thread for its one-statement writes.

The rq worker claims and completes one task per job, one statement each. Through the pool
every statement also pays a checkout, a switch to autocommit, a switch back and a checkin
(about a third of the client's CPU per statement). A thread inside `pinned` keeps one
connection instead. It goes back to the pool after sitting idle for `PING_IDLE_AFTER`
seconds, so the next checkout pings it as every idle pooled connection is pinged; one the
server dropped meanwhile fails its statement, is invalidated, and is replaced on the next
use (`retry_on_disconnect` runs the statement again). A forked child never uses its
parent's: the socket is the parent's.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from switchyard.db.connections import PING_IDLE_AFTER


@contextlib.contextmanager
def pooled_autocommit(conns: sa.Engine) -> Iterator[sa.Connection]:
    """A connection from the pool, in autocommit, for one statement."""
    with conns.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@dataclass
class _Pin:
    conns: sa.Engine
    pid: int
    conn: sa.Connection | None = None
    used_at: float = 0.0


class PinnedConnections:
    """At most one pinned connection per thread (see the module docstring)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def connection(self) -> sa.Connection | None:
        """This thread's pinned connection, connected if need be; None outside `pinned`."""
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is None:
            return None
        if pin.pid != os.getpid():  # a forked child: leave the parent's socket alone
            self._local.pin = None
            return None
        now = time.monotonic()
        if pin.conn is not None and (
            pin.conn.invalidated or pin.conn.closed or now - pin.used_at > PING_IDLE_AFTER
        ):
            pin.conn.close()
            pin.conn = None
        if pin.conn is None:
            pin.conn = pin.conns.connect().execution_options(isolation_level="AUTOCOMMIT")
        pin.used_at = now
        return pin.conn

    def release(self) -> None:
        """Give this thread's connection back to the pool, the pin staying: the next
        statement checks one out again. A thread about to sit idle holds none, so a pool
        disposed meanwhile (shutdown, a test's teardown) closes every connection."""
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is not None and pin.conn is not None and pin.pid == os.getpid():
            pin.conn.close()
            pin.conn = None

    @contextlib.contextmanager
    def pinned(self, conns: sa.Engine) -> Iterator[None]:
        if getattr(self._local, "pin", None) is not None:  # nested: the outer pin serves
            yield
            return
        pin = self._local.pin = _Pin(conns, os.getpid())
        try:
            yield
        finally:
            self._local.pin = None
            if pin.conn is not None and pin.pid == os.getpid():
                pin.conn.close()
