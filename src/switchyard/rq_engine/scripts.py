"""The Lua scripts of the rq engine, in one place. Each runs atomically inside Redis.

Key names follow rq's layout (see the package docstring). The job hash a script writes is
exactly what rq's own `Job.save()` writes: the fields come from rq's `Job.to_dict()`.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.commands.core import Script

# Put one rq job into its queue unless it is already waiting to run. This is what makes
# enqueueing idempotent by job id (= task id) without WATCH: the check and the push are one
# atomic step, so two dispatchers racing on one task push it once.
#
# A job hash in status `queued` is waiting in its list: nothing to do (returns 0). Any other
# hash is spent (finished, failed, stopped) or stale (`started` by a worker that died; the
# database has requeued the task), so it is replaced by the fresh job, the id leaves the
# failed/finished registries (rq's registries then agree with the database: the task is
# queued again), a stale execution of a dead worker leaves the wip registry (so rq's clean-up
# cannot later mark the new run failed), and the id is pushed (returns 1).
#
# KEYS: 1 rq:job:<id>, 2 rq:queue:<q>, 3 rq:queues, 4 rq:failed:<q>, 5 rq:finished:<q>,
#       6 rq:wip:<q>
# ARGV: 1 job id, 2 queue key (member of rq:queues), 3.. field, value, ... of the job hash
ENQUEUE_ONCE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  return 0
end
if status == 'started' then
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', KEYS[6], cursor, 'MATCH', ARGV[1] .. ':*')
    cursor = page[1]
    for i = 1, #page[2], 2 do
      redis.call('ZREM', KEYS[6], page[2][i])
    end
  until cursor == '0'
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

# Forget a job that its queue no longer holds (a worker popped it, then died before starting
# it), so that ENQUEUE_ONCE pushes it again. Returns 1 if forgotten, 0 if it is still waiting.
# LPOS scans from the head, where the oldest jobs (the only ones the sweep asks about) are.
#
# KEYS: 1 rq:job:<id>, 2 rq:queue:<q>      ARGV: 1 job id
FORGET_IF_LOST = """
if redis.call('LPOS', KEYS[2], ARGV[1]) then
  return 0
end
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('DEL', KEYS[1])
end
return 1
"""


class Scripts:
    """The scripts registered on one client; callable on a pipeline (EVALSHA, loaded once)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.enqueue_once: Script = connection.register_script(ENQUEUE_ONCE)
        self.forget_if_lost: Script = connection.register_script(FORGET_IF_LOST)


def hash_args(fields: dict[str, Any]) -> list[Any]:
    """Flatten a job hash for HSET in Lua; None fields are left out, as redis-py would refuse
    them (rq writes '' for the ones it wants present)."""
    out: list[Any] = []
    for key, value in fields.items():
        if value is not None:
            out += [key, value]
    return out
