"""Bad input is refused with a clear UsageError, and nothing is written, not even the good part
of a batch."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from switchyard import operations as ops
from switchyard.db.schema import task_events, tasks
from switchyard.errors import NotFound, UsageError
from switchyard.validation import MAX_URL_LENGTH

GOOD = "https://files.example.social/media/a1b2.png"

BAD_URLS = [
    ("", "must be 1 to"),
    ("   ", "must be 1 to"),
    ("http://" + "a" * MAX_URL_LENGTH, "must be 1 to"),
    ("not-a-url", "http(s) URL with a host"),
    ("ftp://files.example/a.png", "http(s) URL with a host"),
    ("file:///etc/passwd", "http(s) URL with a host"),
    ("javascript:alert(1)", "http(s) URL with a host"),
    ("//files.example/a.png", "http(s) URL with a host"),
    ("http://", "http(s) URL with a host"),
    ("http:///a.png", "http(s) URL with a host"),
    ("http:/files.example/a.png", "http(s) URL with a host"),
    ("http://user@/a.png", "http(s) URL with a host"),
    ("http://files.example:99999/a.png", "Port out of range"),
    ("http://[::1/a.png", "Invalid IPv6 URL"),
    ("http://files example/a.png", "whitespace or control"),
    ("http://files.example/a b.png", "whitespace or control"),
    ("http://files.example/\x00.png", "whitespace or control"),
    ("http://files.example\n/a.png", "whitespace or control"),
    ("http://files.example/\x7f", "whitespace or control"),
]


def rows(offline_services: ops.Services) -> tuple[int, int]:
    with offline_services.store.connections.connect() as conn:
        count = sa.select(sa.func.count())
        return (
            conn.execute(count.select_from(tasks)).scalar_one(),
            conn.execute(count.select_from(task_events)).scalar_one(),
        )


def submit_batch(offline_services: ops.Services, specs: list[dict[str, object]]) -> None:
    """As every face submits: validate the whole batch, then write it in one go."""
    defaults: dict[str, object] = {
        "image_url": GOOD,
        "user_id": 1,
        "platform_connection_id": 2,
    }
    new = [ops.build_task(**{**defaults, **spec}) for spec in specs]
    ops.submit(offline_services, new, "test")


@pytest.mark.parametrize(("url", "why"), BAD_URLS)
def test_a_bad_url_is_refused(url: str, why: str) -> None:
    with pytest.raises(UsageError, match="invalid image_url") as caught:
        ops.validate_url(url)
    assert why in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        GOOD,
        "http://127.0.0.1:8080/x.png",
        "https://[2001:db8::1]/x",
        "HTTPS://A.example/",
        "https://bücher.example/ä.png",
    ],
)
def test_a_good_url_is_accepted(url: str) -> None:
    assert ops.validate_url(f"  {url} ") == url


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"priority": "critical"}, "invalid priority 'critical'"),
        ({"priority": ""}, "invalid priority"),
        ({"settings": {"colour": "red"}}, "invalid settings.colour"),
        ({"settings": {"max_length": 5}}, "invalid settings.max_length"),
        ({"settings": {"max_length": 5000}}, "invalid settings.max_length"),
        ({"user_id": 0}, "invalid user_id 0"),
        ({"user_id": -3}, "invalid user_id -3"),
        ({"user_id": True}, "invalid user_id True"),
        ({"user_id": "5"}, "invalid user_id '5'"),
        ({"platform_connection_id": 0}, "invalid platform_connection_id 0"),
    ],
)
def test_bad_fields_are_refused_and_nothing_is_written(
    offline_services: ops.Services, spec: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        submit_batch(offline_services, [spec])
    assert rows(offline_services) == (0, 0)


def test_one_bad_url_in_a_batch_refuses_the_whole_batch(offline_services: ops.Services) -> None:
    specs: list[dict[str, object]] = [{"image_url": f"{GOOD}?n={i}"} for i in range(50)]
    specs.insert(25, {"image_url": "gopher://files.example/a.png"})
    with pytest.raises(UsageError, match="gopher"):
        submit_batch(offline_services, specs)
    assert rows(offline_services) == (0, 0)
    submit_batch(offline_services, specs[:25])
    assert rows(offline_services) == (25, 25)


@pytest.mark.parametrize("raw", ["", "42", "not-a-uuid", "0" * 33])
def test_a_malformed_task_id_is_not_found(offline_services: ops.Services, raw: str) -> None:
    with pytest.raises(NotFound, match="not a task id"):
        ops.get_task(offline_services, raw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"status": "done"}, "invalid status 'done'"), ({"priority": "top"}, "invalid priority")],
)
def test_bad_list_filters_are_refused(
    offline_services: ops.Services, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        ops.list_tasks(offline_services, **kwargs)


def test_list_filters_work(offline_services: ops.Services) -> None:
    submit_batch(offline_services, [{"priority": "urgent"}, {"user_id": 9}])
    assert [t.user_id for t in ops.list_tasks(offline_services, user_id=9).tasks] == [9]
    assert [
        t.priority.label for t in ops.list_tasks(offline_services, priority="urgent").tasks
    ] == ["urgent"]
    assert len(ops.list_tasks(offline_services, status="queued").tasks) == 2
