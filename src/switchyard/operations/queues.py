"""Every queue rq knows, not only switchyard's four: what `rq stats`, `/health`, the metrics
and `rollback assess` report about other applications' work.

A queue is known from `rq:queues` or a `rq:queue:*` list found by SCAN (name and TYPE both
checked: `migration.rq_reader.discover`). For each: how many jobs wait, the priority its jobs
get when they become tasks (`rq_engine/queues.py`), whether it is one of switchyard's, how
many of its jobs are not switchyard's (`foreign`: in switchyard's queues the entries its
workers look past; in any other queue, every job), and how many rq workers that are not
switchyard's serve it (`other_workers`: alive `rq:worker:*` hashes naming the queue). A
foreign job with no such worker waits for nobody: `unserved`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis

from switchyard.domain import Priority
from switchyard.migration import rq_reader
from switchyard.migration.rq_reader import Kind
from switchyard.operations.services import Services
from switchyard.rq_engine import foreign
from switchyard.rq_engine.connection import queue_names, translated_redis
from switchyard.rq_engine.queues import parse_queue_priorities, queue_priority


@dataclass(frozen=True)
class QueueSeen:
    name: str
    waiting: int
    priority: str
    switchyard: bool
    foreign: int
    other_workers: int

    @property
    def unserved(self) -> int:
        return self.foreign if self.other_workers == 0 else 0


@dataclass
class RqQueues:
    queues: list[QueueSeen] = field(default_factory=list)
    skipped_keys: dict[str, str] = field(default_factory=dict)  # key -> unexpected TYPE

    @property
    def foreign(self) -> int:
        return sum(q.foreign for q in self.queues)

    @property
    def unserved(self) -> int:
        return sum(q.unserved for q in self.queues)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queues": {q.name: {**asdict(q), "unserved": q.unserved} for q in self.queues},
            "foreign": self.foreign,
            "unserved": self.unserved,
            "skipped_keys": self.skipped_keys,
        }


def explicit_priorities(services: Services) -> dict[str, Priority]:
    """RQ_QUEUE_PRIORITIES as a mapping (validated at start-up)."""
    text = services.settings.rq_queue_priorities
    return parse_queue_priorities(i for i in text.split(",") if i.strip())


def rq_queues(services: Services, r: Redis | None = None) -> RqQueues:
    """Every queue rq knows, with its figures (raises BrokerUnavailable if Redis fails)."""
    r = r if r is not None else services.redis
    prefix = services.settings.rq_queue_prefix
    found = rq_reader.discover(r, prefix)
    seen = RqQueues(skipped_keys=found.skipped)
    sources = rq_reader.sources_of(found.queues, (Kind.QUEUE,))
    lengths = rq_reader.counts(r, sources, seen.skipped_keys)
    own = set(queue_names(prefix))
    in_own = foreign.foreign_counts(r, [s.key for s in sources if s.queue in own])
    workers = _other_workers(r, _own_worker_names(services))
    explicit = explicit_priorities(services)
    for source, waiting in zip(sources, lengths, strict=True):
        mine = source.queue in own
        seen.queues.append(
            QueueSeen(
                name=source.queue,
                waiting=waiting,
                priority=queue_priority(source.queue, prefix, explicit).label,
                switchyard=mine,
                foreign=in_own.get(source.key, 0) if mine else waiting,
                other_workers=workers.get(source.queue, 0),
            )
        )
    return seen


def _own_worker_names(services: Services) -> set[str]:
    return {w.name for w in services.store.list_workers(True) if w.engine == "rq"}


def _other_workers(r: Redis, own: set[str]) -> dict[str, int]:
    """Queue name -> alive rq workers that are not switchyard's (rq's `queues` field)."""
    keys = rq_reader.alive_workers(r)
    with translated_redis("reading rq workers' queues"):
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "queues")
        answers = pipe.execute()
    out: dict[str, int] = {}
    for key, names in zip(keys, answers, strict=True):
        if key.removeprefix("rq:worker:").partition("#")[0] in own or not names:
            continue
        text = names.decode() if isinstance(names, bytes) else str(names)
        for name in filter(None, text.split(",")):
            out[name] = out.get(name, 0) + 1
    return out


__all__ = ["QueueSeen", "RqQueues", "explicit_priorities", "rq_queues"]
