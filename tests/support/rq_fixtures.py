"""Loading the recorded rq layouts (tests/fixtures/rq/rq-<version>.json, written by
tests/fixtures/rq/record.py) into a Redis db, key by key, with their TYPE, value and TTL."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rq"
VERSIONS = ("1.16.2", "2.12.0", "3.0.0")


@dataclass(frozen=True)
class Recording:
    rq_version: str
    jobs: dict[str, list[str]]  # state -> job ids, as the producer made them
    keys: list[dict[str, Any]]

    def ids(self, *states: str) -> set[str]:
        return {j for s in states for j in self.jobs.get(s, [])}

    def key_names(self) -> dict[str, str]:
        return {_b(k["key"]).decode(): k["type"] for k in self.keys}

    def value(self, key: str) -> Any:
        """A list's or a hash's recorded value, decoded to bytes as redis-py returns them."""
        doc = next(k for k in self.keys if _b(k["key"]) == key.encode())
        if doc["type"] == "list":
            return [_b(m) for m in doc["value"]]
        if doc["type"] == "hash":
            return {_b(f): _b(v) for f, v in doc["value"]}
        raise ValueError(f"{key} is a {doc['type']}")


def recording(version: str) -> Recording:
    data = json.loads((FIXTURES / f"rq-{version}.json").read_text())
    return Recording(data["rq_version"], data["jobs"], data["keys"])


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def load(r: redis.Redis, rec: Recording) -> None:
    """Write every recorded key as it was (a positive PTTL is kept as is)."""
    pipe = r.pipeline(transaction=False)
    for doc in rec.keys:
        key, kind, value = _b(doc["key"]), doc["type"], doc["value"]
        if kind == "string":
            pipe.set(key, _b(value))
        elif kind == "list":
            pipe.rpush(key, *map(_b, value))
        elif kind == "set":
            pipe.sadd(key, *map(_b, value))
        elif kind == "zset":
            pipe.zadd(key, {_b(m): s for m, s in value})
        elif kind == "hash":
            pipe.hset(key, mapping={_b(f): _b(v) for f, v in value})
        elif kind == "stream":
            for entry_id, fields in value:
                pipe.xadd(key, {_b(f): _b(v) for f, v in fields}, id=entry_id)
        else:
            raise ValueError(f"unknown TYPE {kind} in the recording")
        if doc["pttl"] > 0:
            pipe.pexpire(key, doc["pttl"])
    pipe.execute()


def owner_job(log: str, n: int) -> int:
    """Another application's job function (its owner's rq worker runs it): records the order."""
    with open(log, "a") as out:
        out.write(f"{n}\n")
    return n
