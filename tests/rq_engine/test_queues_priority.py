"""Which priority a queue's jobs get (rq_engine/queues.py), and `--queue NAME=PRIORITY`."""

from __future__ import annotations

import pytest

from switchyard.domain import Priority
from switchyard.errors import UsageError
from switchyard.rq_engine.queues import parse_queue_priorities, queue_priority


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ("urgent", Priority.URGENT),
        ("vedfolnir:rq:urgent", Priority.URGENT),
        ("app.high", Priority.HIGH),
        ("billing-low", Priority.LOW),
        ("a/b_normal", Priority.NORMAL),
        ("emails", Priority.NORMAL),
        ("nonurgent", Priority.NORMAL),  # a label only counts after a separator
        ("urgent:archive", Priority.NORMAL),
    ],
)
def test_a_name_ending_in_a_priority_after_any_prefix_keeps_it(
    queue: str, expected: Priority
) -> None:
    assert queue_priority(queue) is expected


def test_the_own_prefix_and_an_explicit_mapping_come_first() -> None:
    assert queue_priority("syhigh", prefix="sy") is Priority.HIGH
    explicit = parse_queue_priorities(["emails=low", "app.high=urgent"])
    assert queue_priority("emails", explicit=explicit) is Priority.LOW
    assert queue_priority("app.high", explicit=explicit) is Priority.URGENT
    assert parse_queue_priorities(["a=b=HIGH"]) == {"a=b": Priority.HIGH}


@pytest.mark.parametrize("item", ["emails", "=low", "emails=sometimes", "emails="])
def test_a_bad_mapping_is_one_clear_line(item: str) -> None:
    with pytest.raises(UsageError, match="invalid queue mapping"):
        parse_queue_priorities([item])


def test_a_queue_mapped_twice_differently_is_refused() -> None:
    with pytest.raises(UsageError, match="two priorities"):
        parse_queue_priorities(["emails=low", "emails=high"])
