"""The rq key layout migration reads, and every Lua script it runs, in one place.

rq's keys (prefix `rq`, rq 2.x/3.x), as this package sees them:

    rq:queues                      set of queue keys ("rq:queue:<q>") rq knows about
    rq:queue:<q>                   list of job ids waiting (RPUSH; LPUSH when at_front)
    rq:queue:<q>:intermediate      list: ids a single-queue worker has LMOVEd but not yet started
                                   (LREMed when the job starts; a crash in between leaves them)
    rq:queue:<q>:intermediate:first_seen:<id>
                                   string (rq 3.0, EX 24 h): when rq's maintenance first saw
                                   <id> stuck in the intermediate list; NOT a queue
    rq:wip:<q>                     zset "<job id>:<execution id>" -> expiry: jobs being executed
    rq:scheduled:<q>               zset job id -> unix time it is due
    rq:deferred:<q>                zset job id -> created: waiting on an unfinished dependency
    rq:ready:<q>                   zset job id: dependencies met, about to be pushed (rq 3)
    rq:failed:<q>, rq:finished:<q> zsets of done jobs (backed up, never migrated)
    rq:job:<id>                    hash: data (zlib(serialized (func, instance, args, kwargs))),
                                   origin, status, created_at, enqueued_at, ...
    rq:workers                     set of worker keys "rq:worker:<name>"; a key whose hash has
                                   expired belongs to a dead worker

Removal is the last step of a move (read, write the database durably, then remove), and it
must remove exactly what was read: one occurrence of one member, and the job hash only when
that member was still there. If a worker took the job meanwhile, the hash is left for it.
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script

from switchyard.rq_engine.connection import translated_redis

# KEYS[1] = the list or zset the entries were read from; KEYS[2..n+1] = their job hashes.
# ARGV[1] = "list" | "zset"; ARGV[2..n+1] = the exact members read (ids, or "id:execution").
# Each member found is removed (one occurrence) and its hash deleted. Returns the positions
# (1..n) of the members that were no longer there (taken meanwhile): usually none, so the
# reply stays small however large the batch.
REMOVE_ENTRIES = """
local container = KEYS[1]
local is_list = ARGV[1] == 'list'
local missing = {}
for i = 2, #ARGV do
    local n
    if is_list then
        n = redis.call('LREM', container, 1, ARGV[i])
    else
        n = redis.call('ZREM', container, ARGV[i])
    end
    if n == 1 then
        redis.call('DEL', KEYS[i])
    else
        missing[#missing + 1] = i - 1
    end
end
return missing
"""

# KEYS[1] = a job hash; ARGV = pttl (ms, or -1 for none), then field, value, field, value ...
# Puts a backed-up job hash back only when no hash of that name exists: never overwrites.
RESTORE_HASH_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local pttl = tonumber(ARGV[1])
if pttl and pttl > 0 then
    redis.call('PEXPIRE', KEYS[1], pttl)
end
return 1
"""


class Scripts:
    """The scripts registered on one connection (redis-py sends EVALSHA, loading if needed)."""

    def __init__(self, redis: Redis) -> None:
        self.remove_entries: Script = redis.register_script(REMOVE_ENTRIES)
        self.restore_hash_if_absent: Script = redis.register_script(RESTORE_HASH_IF_ABSENT)

    def remove(
        self, container: str, kind: str, members: list[bytes], job_keys: list[str]
    ) -> list[bool]:
        """Remove exactly these members (and their hashes); True where it was still there."""
        if not members:
            return []
        with translated_redis(f"removing migrated entries from {container}"):
            missing = set(self.remove_entries(keys=[container, *job_keys], args=[kind, *members]))
        return [i not in missing for i in range(1, len(members) + 1)]

    def queue_restore_hash(
        self, pipe: Pipeline, key: str, fields: dict[bytes, bytes], pttl: int
    ) -> None:
        flat = [x for pair in fields.items() for x in pair]
        self.restore_hash_if_absent(keys=[key], args=[pttl, *flat], client=pipe)
