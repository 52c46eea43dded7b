"""A hot statement compiled once and run as its SQL text, straight through the driver.

A polling worker runs the same few statements (`db/batches.py`) once per batch. Executed as
SQLAlchemy constructs, each run pays for the compiled-cache lookup, building every bind
parameter (an array parameter is copied element by element) and passing every value of
every returned row through its type's result processor: about a third of the worker's own
CPU per task. Compiled once to the dialect's SQL and run with `exec_driver_sql`, a run pays
only the driver: psycopg's loaders give the uuids, naive UTC datetimes (`timestamp without
time zone`, as `UtcDateTime` keeps them) and parsed JSON that the types would have, and the
caller makes the few domain values itself (`rows.task_from_values`).

That is only the same statement if SQLAlchemy had nothing to do to its parameters; `prebuilt`
refuses one whose parameters need a bind processor (a TypeDecorator, a non-native type), so
a change of types can not silently send the driver something else.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import ARRAY, TypeEngine


@dataclass(frozen=True)
class Prebuilt:
    """A statement's SQL for one dialect, and the values of the parameters it carries itself
    (the statuses it compares and sets, the events' reasons); the caller gives the others."""

    sql: str
    fixed: Mapping[str, Any]

    def run(self, conn: sa.Connection, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Its rows, as the driver loaded them (no SQLAlchemy type processing)."""
        return conn.exec_driver_sql(self.sql, {**self.fixed, **params}).all()

    def count(self, conn: sa.Connection, params: Mapping[str, Any]) -> int:
        """How many rows it matched (an UPDATE without RETURNING; on MariaDB the dialect's
        FOUND_ROWS flag makes that the rows matched, changed or not)."""
        return conn.exec_driver_sql(self.sql, {**self.fixed, **params}).rowcount


@functools.cache
def prebuilt(stmt: sa.ClauseElement, dialect: Dialect) -> Prebuilt:
    """`stmt` compiled once for `dialect` (statements are built once per shape, so this is
    cached by identity); refused if a parameter needs SQLAlchemy's bind processing."""
    compiled = stmt.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {stmt!r}")
    processed = [name for name, bind in compiled.binds.items() if _processed(bind, dialect)]
    if processed:
        raise TypeError(f"parameters {processed} need SQLAlchemy's bind processing")
    fixed = {
        name: value for name, value in compiled.params.items() if not compiled.binds[name].required
    }
    return Prebuilt(compiled.string, fixed)


def _processed(bind: sa.BindParameter[Any], dialect: Dialect) -> bool:
    """Would SQLAlchemy change this parameter's value before the driver sees it? An array
    of a type without a processor is only copied into a list, which the driver does not
    need; an expanding or literal-execute parameter is rewritten into the SQL at every run."""
    if bind.expanding or bind.literal_execute:
        return True
    kind: TypeEngine[Any] = bind.type
    if isinstance(kind, ARRAY):
        kind = kind.item_type
    return kind.dialect_impl(dialect).bind_processor(dialect) is not None
