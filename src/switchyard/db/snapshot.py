"""The database's side of a backup: its tables as JSON documents, read in one snapshot, and put
back (only the rows nothing stored matches) by a restore."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.db.connections import translated
from switchyard.db.schema import quarantine, system_state, tasks
from switchyard.db.store import TaskStore
from switchyard.domain import Priority

# What a backup keeps of the database, by the name of its file (db/<name>.jsonl).
TABLES = {"tasks": tasks, "quarantine": quarantine, "system_state": system_state}
CHUNK = 1000  # rows per read and per restore transaction


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def row_to_json(table: sa.Table, row: sa.Row[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in table.columns:
        value = row._mapping[col.name]
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bytes):
            value = b64(value)
        elif isinstance(value, Priority):
            value = value.label
        out[col.name] = value
    return out


def row_from_json(table: sa.Table, doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in table.columns:
        value = doc.get(col.name)
        if value is not None:
            if isinstance(col.type, sa.Uuid):
                value = uuid.UUID(value)
            elif isinstance(col.type, sa.DateTime):
                value = datetime.fromisoformat(value)
            elif isinstance(col.type, sa.LargeBinary):
                value = base64.b64decode(value)
        out[col.name] = value
    return out


class Snapshot:
    """One read transaction's view of the tables (see `snapshot`)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def rows(self, name: str) -> Iterator[dict[str, Any]]:
        """Every row of table `name` as a JSON document, streamed."""
        table = TABLES[name]
        for row in self.conn.execute(sa.select(table)).yield_per(CHUNK):
            yield row_to_json(table, row)

    def tasks_by_status_engine(self) -> dict[str, int]:
        query = sa.select(tasks.c.status, tasks.c.engine, sa.func.count()).group_by(
            tasks.c.status, tasks.c.engine
        )
        return {f"{s}/{e}": n for s, e, n in self.conn.execute(query)}


@contextmanager
def snapshot(store: TaskStore) -> Iterator[Snapshot]:
    """One read transaction, a snapshot where the database offers one (SQLite: BEGIN
    IMMEDIATE holds the write lock, so nothing changes underneath either)."""
    options = {} if store.dialect == "sqlite" else {"isolation_level": "REPEATABLE READ"}
    with (
        translated("reading the database for a backup"),
        store.connections.connect().execution_options(**options) as conn,
        conn.begin(),
    ):
        yield Snapshot(conn)


def restore_absent(store: TaskStore, name: str, docs: Iterable[dict[str, Any]], dry: bool) -> int:
    """Insert the rows of table `name` (JSON documents) that match nothing stored, in one
    transaction; returns how many (with `dry`, how many would be)."""
    table = TABLES[name]
    rows = [row_from_json(table, d) for d in docs]
    with translated(f"restoring {table.name}"), store.connections.begin() as conn:
        fresh = _absent(conn, table, rows)
        if fresh and not dry:
            conn.execute(table.insert(), fresh)
    return len(fresh)


def _absent(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> list[dict]:
    """Rows whose identifying columns (primary and unique keys) match nothing stored."""
    if table is tasks:
        return _absent_tasks(conn, rows)
    idents = [("job_id", quarantine.c.job_id)]
    taken: set[tuple[str, Any]] = set()
    for name, col in idents:
        values = [r[name] for r in rows if r[name] is not None]
        if values:
            found = conn.execute(sa.select(col).where(col.in_(values))).scalars()
            taken.update((name, v) for v in found)
    fresh = [r for r in rows if not any((n, r[n]) in taken for n, _ in idents)]
    if table is quarantine:
        for r in fresh:
            r.pop("id", None)  # a new surrogate key; the job id identifies the row
    return fresh


def _absent_tasks(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict]:
    """Tasks whose id and whose (source job, index) are both free. A backup taken before
    jobs could map to several tasks has no index: its migrated task is the job's first."""
    for r in rows:
        if r["source_job_id"] is not None and r["source_index"] is None:
            r["source_index"] = 0
    ids = [r["id"] for r in rows]
    taken_ids = set(conn.execute(sa.select(tasks.c.id).where(tasks.c.id.in_(ids))).scalars())
    jobs = list({r["source_job_id"] for r in rows if r["source_job_id"] is not None})
    taken_keys: set[tuple[str, int]] = set()
    if jobs:
        found = sa.select(tasks.c.source_job_id, tasks.c.source_index).where(
            tasks.c.source_job_id.in_(jobs)
        )
        taken_keys = {(j, i) for j, i in conn.execute(found)}
    return [
        r
        for r in rows
        if r["id"] not in taken_ids and (r["source_job_id"], r["source_index"]) not in taken_keys
    ]


__all__ = ["CHUNK", "TABLES", "Snapshot", "restore_absent", "snapshot"]
