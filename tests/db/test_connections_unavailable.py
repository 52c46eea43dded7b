"""Which database errors are outages (`StoreUnavailable`: wait and try again) and which are
not (`StoreError`: a fault in the statement, which waiting would only hide)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from switchyard.db.connections import open_connections, translated
from switchyard.db.store import TaskStore
from switchyard.errors import StoreError, StoreUnavailable
from switchyard.modes import ModeWatcher
from switchyard.workers.rq import wants_the_other_engine
from tests.support.env import make_settings
from tests.support.servers import free_port


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_server_that_is_not_there_is_unavailable(scheme: str) -> None:
    user = "postgres" if scheme == "postgresql" else "root"
    store = TaskStore(open_connections(f"{scheme}://{user}@127.0.0.1:{free_port()}/nothing"))
    with pytest.raises(StoreUnavailable, match="database unavailable while counting tasks"):
        store.counts()
    store.dispose()


def test_a_bad_statement_is_an_error_not_an_outage(db_url: str) -> None:
    # On SQLite "no such table" is an OperationalError too: it must not look like an outage.
    conns = open_connections(db_url)
    with pytest.raises(StoreError) as raised, translated("reading"), conns.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert not isinstance(raised.value, StoreUnavailable)
    conns.dispose()


def test_an_auto_rq_worker_stays_while_the_mode_cannot_be_read() -> None:
    # Raising here would make rq's loop quit ("unhandled exception"): the worker would exit.
    store = TaskStore(open_connections(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"))
    watcher = ModeWatcher(store, make_settings("sqlite://"))
    assert wants_the_other_engine(watcher) is False
    store.dispose()
