"""Fixtures of the rq engine's tests. Here `services` are in rq mode (the shared fixture's
are in db mode), and `driver` runs the engine contract on either engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchyard import modes, switch
from switchyard.modes import Mode
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs
from switchyard.switch import switch_mode as set_mode
from tests.support.contract import Driver
from tests.support.env import make_settings
from tests.support.rq import ServicesPool


@pytest.fixture
def services(db_url: str, redis_url: str, pool: ServicesPool) -> Services:
    """Services on each backend, in rq mode (this package's own `services`)."""
    s = pool.make(db_url, redis_url)
    switch.switch_mode(s.store, modes.Mode.RQ, "test", "rq engine tests")
    return s


@pytest.fixture(params=["db", "rq"])
def driver(request: pytest.FixtureRequest, db_url: str, redis_url: str) -> Iterator[Driver]:
    pool = ServicesPool()
    yield Driver(pool.make(db_url, redis_url), str(request.param))
    jobs.uninstall()
    pool.close()


@pytest.fixture
def svc(db_url: str, redis_url: str) -> Iterator[Services]:
    services = Services(make_settings(db_url, redis_url=redis_url))
    set_mode(services.store, Mode.DB, "test", "rollback")
    yield services
    services.store.dispose()
