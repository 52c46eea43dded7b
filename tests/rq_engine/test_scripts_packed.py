"""rq's commands queued on a pipeline, run by RUN_COMMANDS from one MessagePack argument
(`pack_commands`): Redis must end up holding exactly what the pipeline's own MULTI/EXEC
would have written, byte for byte, whatever the values' types and sizes."""

from __future__ import annotations

from typing import Any

import redis

from switchyard.rq_engine.scripts import Scripts

VALUES: dict[str, Any] = {
    "text": "caption task é",
    "empty": "",
    "binary": bytes(range(256)) * 3,  # zlib-compressed job data is any bytes
    "large": b"x" * 70_000,  # beyond a 16-bit length
    "int": 42,
    "negative": -7,
    "float": 0.1 + 0.2,  # repr keeps every digit
    "words31": "a" * 31,  # the largest short string
    "words32": "a" * 32,
}


def queue_writes(pipe: Any, prefix: str) -> None:
    pipe.hset(f"{prefix}:hash", mapping=VALUES)
    pipe.expire(f"{prefix}:hash", 500)
    pipe.zadd(f"{prefix}:zset", {"member": 1796021750})
    pipe.sadd(f"{prefix}:set", *[f"m{i}" for i in range(20)])  # more than 15 words
    pipe.hincrbyfloat(f"{prefix}:hash", "working", 0.009529)
    pipe.xadd(f"{prefix}:stream", {"return_value": b"\x00\xff"}, maxlen=10)


def content(r: redis.Redis, prefix: str) -> tuple[Any, ...]:
    return (
        r.hgetall(f"{prefix}:hash"),
        r.ttl(f"{prefix}:hash") > 0,
        r.zrange(f"{prefix}:zset", 0, -1, withscores=True),
        r.smembers(f"{prefix}:set"),
        [fields for _id, fields in r.xrange(f"{prefix}:stream")],
    )


def test_packed_commands_write_what_the_pipeline_writes(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    with r.pipeline() as pipe:
        queue_writes(pipe, "theirs")
        pipe.execute()
    pipe = r.pipeline()
    queue_writes(pipe, "ours")
    (last,) = Scripts(r).run_queued(pipe) or [None]
    assert last.count(b"-") == 1  # the last reply, XADD's: the entry's id
    assert content(r, "ours") == content(r, "theirs")


def test_nothing_is_written_when_a_guarded_key_exists(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.sadd("rq:job:1:dependents", "2")
    pipe = r.pipeline()
    pipe.hset("rq:job:1", "status", "finished")
    assert Scripts(r).run_queued(pipe, unless_exist=["rq:job:1:dependents"]) is None
    assert not r.exists("rq:job:1")
