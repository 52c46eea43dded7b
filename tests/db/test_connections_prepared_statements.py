"""`?prepare_threshold=` in DATABASE_URL: prepared statements on PostgreSQL can be switched
off (for a PgBouncer without `max_prepared_statements`) or tuned; a bad value is one line."""

from __future__ import annotations

import pytest

from switchyard.db.connections import open_connections
from switchyard.errors import ConfigError
from tests.support.env import SERVERS


@pytest.mark.parametrize(("given", "expected"), [("off", None), ("0", 0), ("3", 3), (None, 5)])
def test_the_url_sets_the_prepare_threshold(given: str | None, expected: int | None) -> None:
    query = "" if given is None else f"?prepare_threshold={given}"
    conns = open_connections(f"{SERVERS['postgresql']}/postgres{query}")
    try:
        with conns.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            assert raw.prepare_threshold == expected  # type: ignore[attr-defined]
    finally:
        conns.dispose()


def test_a_bad_prepare_threshold_is_one_line() -> None:
    with pytest.raises(ConfigError, match="prepare_threshold must be off or a number"):
        open_connections("postgresql://u@127.0.0.1/db?prepare_threshold=sometimes")
