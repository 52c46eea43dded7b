"""Fixtures of the operations tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchyard.operations import Services
from tests.support.web import build_services


@pytest.fixture
def svc(db_url: str) -> Iterator[Services]:
    s = build_services(db_url)
    yield s
    s.store.dispose()
