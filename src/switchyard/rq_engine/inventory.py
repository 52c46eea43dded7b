"""rq keys nobody explains: every `rq:*` key whose name `keys.name_of` does not know.

One SCAN walk (a large COUNT: bounded work per call, few round trips) and one pipelined TYPE
of the unknown names only, so a keyspace of job hashes costs no TYPE each. What is found is
reported by the commands that look (backup, `rq stats`), never read and never removed: it
may belong to a newer rq, or to another application that shares the `rq:` prefix.
"""

from __future__ import annotations

from redis import Redis

from switchyard.rq_engine.connection import translated_redis
from switchyard.rq_engine.keys import PREFIX, name_of

SCAN_COUNT = 10_000
LIMIT = 100  # at most this many are named; the count says how many there were


def unknown_keys(r: Redis, limit: int = LIMIT) -> dict[str, str]:
    """Unknown `rq:*` key -> its TYPE (the first `limit` by name)."""
    with translated_redis("looking for unknown rq keys"):
        names = sorted(
            text
            for key in r.scan_iter(match=f"{PREFIX}:*", count=SCAN_COUNT)
            if name_of(text := _text(key)) is None
        )[:limit]
        if not names:
            return {}
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.type(name)
        types = pipe.execute()
    return {n: _text(t) for n, t in zip(names, types, strict=True) if _text(t) != "none"}


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


__all__ = ["unknown_keys"]
