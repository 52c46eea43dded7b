"""Reading a statement's plan on each dialect, and hiding one index for a connection: what the
index tests share (the claim's and the history's)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from psycopg import sql as pg_sql

from switchyard.db.connections import open_connections
from switchyard.db.store import TaskStore


@dataclass(frozen=True)
class Plan:
    indexes: set[str]  # indexes the plan uses
    table_scan: bool  # reads a whole table
    sorts: bool  # sorts rows instead of reading them in index order
    text: str


def analyze(store: TaskStore) -> None:
    """Fresh statistics, so each planner sees the data as loaded."""
    statement = {"postgresql": "ANALYZE", "sqlite": "ANALYZE"}
    with store.connections.begin() as conn:
        result = conn.exec_driver_sql(
            statement.get(store.dialect, "ANALYZE TABLE tasks, task_events")
        )
        if result.returns_rows:
            result.all()  # MariaDB reports per table


def explain(conn: sa.Connection, stmt: sa.Executable, values: dict[str, Any] | None = None) -> Plan:
    """EXPLAIN `stmt` exactly as compiled for this connection's dialect (with `values` for its
    named bound parameters, e.g. a one-statement write's `p_*`)."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    processors = compiled._bind_processors  # e.g. a UUID as SQLite's text
    bound = compiled.construct_params(values) if values else compiled.params
    params = {k: processors[k](v) if k in processors else v for k, v in bound.items()}
    args = tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
    reader = {"postgresql": _postgres, "sqlite": _sqlite}.get(conn.dialect.name, _mariadb)
    return reader(conn, str(compiled), args)


def _postgres(conn: sa.Connection, sql: str, args: Any) -> Plan:
    [plan] = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", args).scalar_one()

    def nodes(node: dict[str, object]) -> Iterator[dict[str, object]]:
        yield node
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            yield from nodes(child)

    every = list(nodes(plan["Plan"]))
    return Plan(
        indexes={str(n["Index Name"]) for n in every if "Index Name" in n},
        table_scan=any(n["Node Type"] == "Seq Scan" for n in every),
        sorts=any(n["Node Type"] in ("Sort", "Incremental Sort") for n in every),
        text=json.dumps(plan, indent=1),
    )


def _mariadb(conn: sa.Connection, sql: str, args: Any) -> Plan:
    rows = [dict(r._mapping) for r in conn.exec_driver_sql(f"EXPLAIN {sql}", args)]
    mine = [r for r in rows if r["table"] in ("tasks", "task_events")]
    return Plan(
        indexes={str(r["key"]) for r in mine if r["key"]},
        table_scan=any(r["type"] == "ALL" for r in mine),
        sorts=any("filesort" in (r["Extra"] or "") for r in mine),
        text="\n".join(map(str, rows)),
    )


def _sqlite(conn: sa.Connection, sql: str, args: Any) -> Plan:
    details = [str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args)]
    return Plan(
        indexes={
            d.split(" INDEX ")[1].split()[0]
            for d in details
            if "USING INDEX " in d or "USING COVERING INDEX " in d
        },
        table_scan=any(d in ("SCAN tasks", "SCAN task_events") for d in details),
        sorts=any("TEMP B-TREE" in d for d in details),
        text="\n".join(details),
    )


@contextlib.contextmanager
def index_hidden(store: TaskStore, table: str, *indexes: str) -> Iterator[sa.Connection]:
    """A connection on which `indexes` are gone, restored afterwards: dropped inside a
    transaction that is rolled back (PostgreSQL, SQLite), or marked IGNORED (MariaDB, whose
    DDL commits at once). A connection of its own: sqlite3 caches prepared statements per
    connection, and a cached EXPLAIN does not notice the schema change."""
    conns = open_connections(store.connections.url.render_as_string(hide_password=False))
    try:
        with conns.connect() as conn:
            if store.dialect == "mysql":
                alter = ", ".join(f"ALTER INDEX {i} IGNORED" for i in indexes)
                conn.exec_driver_sql(f"ALTER TABLE {table} {alter}")
                try:
                    yield conn
                finally:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {table} {alter.replace('IGNORED', 'NOT IGNORED')}"
                    )
                return
            transaction = conn.begin()
            for index in indexes:
                conn.exec_driver_sql(f"DROP INDEX {index}")
            try:
                yield conn
            finally:
                transaction.rollback()
    finally:
        conns.dispose()


@contextlib.contextmanager
def statements_sent(conns: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement `conns` sends while the block runs, as the driver gets it (SQL text and
    parameters): the exact statements a store method runs."""
    sent: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(conns, "before_cursor_execute", grab)
    try:
        yield sent
    finally:
        sa.event.remove(conns, "before_cursor_execute", grab)


def explain_generic(conn: sa.Connection, statement: str, parameters: dict[str, Any]) -> Plan:
    """PostgreSQL's generic plan of a statement psycopg sent (`statements_sent`): the plan a
    prepared statement may keep after its fifth run, made without the parameters' values, so
    a partial index serves it only if the predicate is proved from the SQL text alone.
    PREPAREd as psycopg prepares it, and planned under `plan_cache_mode = force_generic_plan`
    (which the server would otherwise choose by cost after five custom plans)."""
    names: list[str] = []

    def numbered(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    text = re.sub(r"%\((\w+)\)s", numbered, statement).replace("%%", "%")
    raw = conn.connection.dbapi_connection
    values = ", ".join(pg_sql.Literal(parameters[n]).as_string(raw) for n in names)  # type: ignore[arg-type]
    conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    conn.exec_driver_sql(f"PREPARE generic AS {text}")
    try:
        return _postgres(conn, f"EXECUTE generic({values})", None)
    finally:
        conn.exec_driver_sql("DEALLOCATE generic")
        conn.exec_driver_sql("RESET plan_cache_mode")
