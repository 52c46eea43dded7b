"""Fixtures of the rollback tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchyard.db.connections import open_connections
from switchyard.db.store import TaskStore
from switchyard.operations.services import Services
from switchyard.rollback.runs import RunRecorder
from tests.support.env import make_settings


@pytest.fixture
def svc(sqlite_url: str, redis_url: str) -> Iterator[Services]:
    services = Services(make_settings(sqlite_url, redis_url=redis_url))
    yield services
    services.store.dispose()


@pytest.fixture
def recorder(clean_db_url: str) -> Iterator[RunRecorder]:
    conns = open_connections(clean_db_url)
    yield RunRecorder(TaskStore(conns))
    conns.dispose()
