"""Task lists a page at a time by a keyset cursor, on every database: walking the pages lists
every task exactly once, newest first, even with tasks sharing a creation time (one batch) and
tasks submitted between pages; each filter pages on its own."""

from __future__ import annotations

import pytest

from switchyard import operations as ops
from switchyard.errors import UsageError
from switchyard.operations import Services


def _walk(services: Services, limit: int, **filters: object) -> list[str]:
    seen, cursor = [], None
    while True:
        page = ops.list_tasks(services, limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        seen += [str(t.id) for t in page.tasks]
        assert len(page.tasks) <= limit
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def _batch(services: Services, n: int, **fields: object) -> list[str]:
    task = {"image_url": "http://example.org/a.png", "user_id": 1, "platform_connection_id": 1}
    built = [ops.build_task(**{**task, **fields}) for _ in range(n)]  # type: ignore[arg-type]
    return [str(t.id) for t in ops.submit(services, built, "t")]


def test_pages_list_every_task_once_newest_first(services: Services) -> None:
    first = _batch(services, 23)  # one transaction: many share created_at, the id breaks ties
    urgent = _batch(services, 7, priority="urgent", user_id=5)
    everything = _walk(services, 4)
    assert sorted(everything) == sorted(first + urgent) and len(set(everything)) == 30
    assert set(everything[:7]) == set(urgent)  # newest first
    assert sorted(_walk(services, 3, priority="urgent")) == sorted(urgent)
    assert sorted(_walk(services, 2, user_id=5, status="queued")) == sorted(urgent)

    # New tasks arriving while an operator pages never shift what comes next.
    page = ops.list_tasks(services, limit=10)
    _batch(services, 5)
    rest = _walk_from(services, page.next_cursor, 10)
    assert [str(t.id) for t in page.tasks] + rest == everything


def _walk_from(services: Services, cursor: str | None, limit: int) -> list[str]:
    seen = []
    while cursor is not None:
        page = ops.list_tasks(services, limit=limit, cursor=cursor)
        seen += [str(t.id) for t in page.tasks]
        cursor = page.next_cursor
    return seen


FORGED = [
    "x",
    "!!",
    "bm90IGEgY3Vyc29y",  # "not a cursor"
    "MjAyNi0wMS0wMXx6eg",  # "2026-01-01|zz"
    # "2026-01-01T00:00:00+00:00|" and a valid id: an aware time, which no page hands out
    "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHwwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA",
]


@pytest.mark.parametrize("bad", FORGED)
def test_a_cursor_not_handed_out_is_refused(services: Services, bad: str) -> None:
    with pytest.raises(UsageError, match="invalid cursor"):
        ops.list_tasks(services, cursor=bad)
