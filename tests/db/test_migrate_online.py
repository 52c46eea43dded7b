"""Upgrading a live PostgreSQL to revision 0011 (five indexes of `tasks` made partial) does not
stop the service: a writer and a claimer whose statements wait at most 2 s for a lock carry on
throughout, even while a long read holds its lock on `tasks`; and an upgrade killed with
SIGKILL in the middle of an index build is finished by a rerun. The downgrade still locks
`tasks` (it rebuilds the full indexes in one transaction), and the same check sees it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from switchyard.db import migrate
from switchyard.db.online_indexes import TEMPORARY_SUFFIX
from switchyard.db.store import TaskStore
from tests.support.env import cli_env
from tests.support.live_upgrade import fill, index_names, invalid_indexes, live_load, long_read
from tests.support.schema_revisions import downgrade, drift

pytestmark = pytest.mark.backends("postgresql")

ROWS = 300_000
# Longer than the writer's lock timeout: a statement that queues a table lock behind this read
# makes every later write of `tasks` wait past it.
READ_HOLDS = 3.0
PARTIAL = (
    "uq_tasks_source_job_id_source_index",
    "ix_tasks_claim",
    "ix_tasks_heartbeat",
    "ix_tasks_engine",
    "ix_tasks_origin",
)


def url_of(conns: sa.Engine) -> str:
    return conns.url.render_as_string(hide_password=False)


def assert_upgraded(conns: sa.Engine) -> None:
    assert migrate.current_revision(TaskStore(conns)) == "0011"
    assert drift(conns) == []
    assert invalid_indexes(conns) == []
    assert not [n for n in index_names(conns) if n.endswith(TEMPORARY_SUFFIX)]


@pytest.mark.slow
def test_the_upgrade_never_makes_a_write_or_a_claim_wait_2s(fresh_db: sa.Engine) -> None:
    store = TaskStore(fresh_db)
    migrate.upgrade(store, "0010")
    fill(fresh_db, ROWS)
    with live_load(url_of(fresh_db)) as load, long_read(fresh_db, READ_HOLDS):
        time.sleep(0.2)
        before = load.writes, load.claims
        migrate.upgrade(store, "0011")
        during = load.writes - before[0], load.claims - before[1]
    assert (load.timeouts, load.errors) == ([], [])
    assert during[0] > 0 and during[1] > 0, during
    assert_upgraded(fresh_db)


def test_the_downgrade_locks_tasks_and_the_check_sees_it(fresh_db: sa.Engine) -> None:
    """The one-transaction rebuild (today's downgrade, and 0011's upgrade before it ran
    online) queues its table lock behind the long read, and the writes behind it time out."""
    store = TaskStore(fresh_db)
    migrate.upgrade(store)
    with live_load(url_of(fresh_db)) as load, long_read(fresh_db, READ_HOLDS):
        time.sleep(0.2)
        downgrade(fresh_db, "0010")
    assert load.timeouts, load
    assert migrate.current_revision(store) == "0010"


def build_waiting(conns: sa.Engine, temporary: str) -> int | None:
    """The server process building `temporary`, once it waits for a writer to end."""
    with conns.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND wait_event_type = 'Lock' AND query LIKE :building"
            ),
            {"building": f"CREATE%INDEX CONCURRENTLY {temporary} %"},
        ).scalar()


@pytest.mark.parametrize("server_too", [False, True], ids=["client", "client_and_server"])
def test_a_rerun_after_sigkill_finishes_the_upgrade(fresh_db: sa.Engine, server_too: bool) -> None:
    """SIGKILL while an index is built: the server process either finishes the build and
    then ends (its client is gone), or, terminated too, leaves the index INVALID. A writer's
    open transaction holds the first build (CREATE INDEX CONCURRENTLY waits for writers to
    end) at a point the test can see, whatever the machine's speed."""
    migrate.upgrade(TaskStore(fresh_db), "0010")
    fill(fresh_db, 1000)
    building = "uq_tasks_source_job_id_source_index" + TEMPORARY_SUFFIX
    with fresh_db.connect() as writer:
        writer.execute(
            sa.text("UPDATE tasks SET progress = 1 WHERE id IN (SELECT id FROM tasks LIMIT 1)")
        )
        upgrade = subprocess.Popen(
            [sys.executable, "-m", "switchyard", "init"],
            env=cli_env(url_of(fresh_db)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while (pid := build_waiting(fresh_db, building)) is None:
            assert upgrade.poll() is None and time.monotonic() < deadline, "no build seen"
            time.sleep(0.05)
        upgrade.send_signal(signal.SIGKILL)
        upgrade.wait()
        assert migrate.current_revision(TaskStore(fresh_db)) == "0010"
        if server_too:
            writer.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            writer.rollback()
            migrate.upgrade(TaskStore(fresh_db))
        else:  # the orphaned build still waits: the rerun must wait for it, then finish
            rerun = threading.Thread(target=migrate.upgrade, args=(TaskStore(fresh_db),))
            rerun.start()
            time.sleep(0.5)
            assert rerun.is_alive(), "the rerun did not wait for the orphaned build"
            writer.rollback()
            rerun.join(timeout=60)
    assert_upgraded(fresh_db)
    assert set(PARTIAL) <= index_names(fresh_db)
