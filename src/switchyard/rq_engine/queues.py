"""Which priority a queue's jobs get when they become tasks, from the queue's name.

An operator's queues are often named `<app prefix>urgent|high|normal|low` with a prefix of
their own (`vedfolnir:rq:urgent`), not switchyard's RQ_QUEUE_PREFIX. In order:

1. an explicit mapping (`--queue NAME=PRIORITY`, or the RQ_QUEUE_PRIORITIES setting);
2. switchyard's own queues, RQ_QUEUE_PREFIX + a priority label;
3. a name ending in a priority label after a separator (`:`, `.`, `-`, `_`, `/`), or that is
   the label itself;
4. anything else: normal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from switchyard.domain import Priority
from switchyard.errors import UsageError

_LABELS = "|".join(p.label for p in Priority)
_SUFFIX = re.compile(rf"(?:^|[:._/-])({_LABELS})$")


def queue_priority(queue: str, prefix: str = "", explicit: Mapping[str, Priority] = {}) -> Priority:
    """The priority of a task made from a job of `queue` (rules in the module docstring)."""
    if queue in explicit:
        return explicit[queue]
    if prefix and queue.startswith(prefix):
        label = queue[len(prefix) :]
        if label in {p.label for p in Priority}:
            return Priority.parse(label)
    match = _SUFFIX.search(queue)
    return Priority.parse(match.group(1)) if match else Priority.NORMAL


def parse_queue_priorities(items: Iterable[str]) -> dict[str, Priority]:
    """`NAME=PRIORITY` items (a name may hold `=`: the last one splits) into a mapping, or a
    one-line UsageError naming the bad item."""
    out: dict[str, Priority] = {}
    for item in items:
        name, sep, label = item.strip().rpartition("=")
        if not sep or not name:
            raise UsageError(f"invalid queue mapping {item!r}: expected NAME=PRIORITY")
        try:
            priority = Priority.parse(label.strip())
        except UsageError:
            raise UsageError(
                f"invalid queue mapping {item!r}: choose urgent, high, normal or low"
            ) from None
        if out.get(name, priority) is not priority:
            raise UsageError(f"queue {name!r} is mapped to two priorities")
        out[name] = priority
    return out


__all__ = ["parse_queue_priorities", "queue_priority"]
