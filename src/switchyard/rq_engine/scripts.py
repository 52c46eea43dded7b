"""Every Lua script switchyard runs, in one place. Each runs atomically inside Redis.

Key names follow rq's layout (`rq_engine/keys.py`). The job hash a script writes is
exactly what rq's own `Job.save()` writes: the fields come from rq's `Job.to_dict()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

from switchyard.rq_engine.connection import translated_redis
from switchyard.rq_engine.keys import intermediate_key

# Lua shared by scripts that run commands rq queued on a pipeline: `packed` is the commands
# as `pack_commands` writes them (a MessagePack array of arrays of strings, one string per
# word), which Redis's cmsgpack unpacks in C. Returns the last command's reply.
RUN_PACKED = """
local function run_packed(packed)
  local last = nil
  for _, command in ipairs(cmsgpack.unpack(packed)) do
    last = redis.call(unpack(command))
  end
  return last
end
"""

# Put rq jobs of one queue into it, each unless it is already waiting to run. This is what
# makes enqueueing idempotent by job id (= task id) without WATCH: the check and the push are
# one atomic step, so two dispatchers racing on one task push it once.
#
# For each job: a hash in status `queued` is waiting in its list: nothing to do (answer 0).
# Any other hash is spent (finished, failed, stopped) or stale (`started` by a worker that
# died; the database has requeued the task), so it is replaced by the fresh job, the id leaves
# the failed/finished registries (rq's registries then agree with the database: the task is
# queued again), a stale execution of a dead worker leaves the wip registry (so rq's clean-up
# cannot later mark the new run failed), and the id is pushed (answer 1).
#
# One call takes a whole batch: the fields every job shares (origin, timeout, status, ...)
# travel once, and each job brings only its id and the values of its own fields (data,
# description, created_at, enqueued_at), a sixth of the arguments of one call per job.
#
# KEYS: 1 rq:queue:<q>, 2 rq:queues, 3 rq:failed:<q>, 4 rq:finished:<q>, 5 rq:wip:<q>,
#       5+j rq:job:<id of job j>
# ARGV: 1 queue key (member of rq:queues), 2 S, 3..2+2S the S shared fields and values,
#       then P, the P names of the fields each job has its own value for, then per job:
#       its id and its P values
# Returns one answer per job, in order.
ENQUEUE_JOBS = """
local shared_end = 2 + 2 * tonumber(ARGV[2])
local n_own = tonumber(ARGV[shared_end + 1])
local names = shared_end + 1
local first = names + n_own + 1
local answers = {}
local pushed = false
for job = 1, #KEYS - 5 do
  local at = first + (job - 1) * (n_own + 1)
  local key, id = KEYS[5 + job], ARGV[at]
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' then
    answers[job] = 0
  else
    if status == 'started' then
      local cursor = '0'
      repeat
        local page = redis.call('ZSCAN', KEYS[5], cursor, 'MATCH', id .. ':*')
        cursor = page[1]
        for i = 1, #page[2], 2 do
          redis.call('ZREM', KEYS[5], page[2][i])
        end
      until cursor == '0'
    end
    local fields = {}
    for i = 3, shared_end do
      fields[#fields + 1] = ARGV[i]
    end
    for k = 1, n_own do
      fields[#fields + 1] = ARGV[names + k]
      fields[#fields + 1] = ARGV[at + k]
    end
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(fields))
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('RPUSH', KEYS[1], id)
    answers[job] = 1
    pushed = true
  end
end
if pushed then
  redis.call('SADD', KEYS[2], ARGV[1])
end
return answers
"""

# Forget a job that its queue no longer holds (a worker took it, then died before starting
# it: the take left it in the queue's intermediate list), so that ENQUEUE_ONCE pushes it
# again; it leaves the intermediate list too, where no worker would take it and rq's
# maintenance would later fail it. Returns 1 if forgotten, 0 if it is still waiting. LPOS
# scans from the head, where the oldest jobs (the only ones the sweep asks about) are.
#
# KEYS: 1 rq:job:<id>, 2 rq:queue:<q>, 3 its intermediate list      ARGV: 1 job id
FORGET_IF_LOST = """
if redis.call('LPOS', KEYS[2], ARGV[1]) then
  return 0
end
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('DEL', KEYS[1])
  redis.call('LREM', KEYS[3], 0, ARGV[1])
end
return 1
"""

# Move a waiting job to the head of its queue (the canary lane: the next free worker takes it,
# however long the backlog). Nothing happens if a worker has taken it meanwhile.
#
# KEYS: 1 rq:queue:<q>      ARGV: 1 job id      Returns 1 if moved, 0 if it was not waiting.
TO_FRONT = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


# -- removing what a migration moved, and restoring a backup (used by `switchyard.migration`)

# KEYS[1] = the list or zset the entries were read from; KEYS[2..n+1] = their job hashes.
# ARGV[1] = "list" | "zset"; ARGV[2..n+1] = the exact members read (ids, or "id:execution").
# Each member found is removed (one occurrence) and its hash deleted. Returns the positions
# (1..n) of the members that were no longer there (taken meanwhile): usually none, so the
# reply stays small however large the batch.
# A list whose first n entries are exactly the members, in order (the usual case: a batch read
# from the top that nobody took from), loses them in one LTRIM and the hashes in a few DELs:
# the same as n LREMs from the head, for a third less of Redis's time.
REMOVE_ENTRIES = """
local container = KEYS[1]
local is_list = ARGV[1] == 'list'
local n = #ARGV - 1
if is_list and n > 0 then
    local head = redis.call('LRANGE', container, 0, n - 1)
    local same = #head == n
    local i = 1
    while same and i <= n do
        same = head[i] == ARGV[i + 1]
        i = i + 1
    end
    if same then
        redis.call('LTRIM', container, n, -1)
        for first = 2, n + 1, 1000 do
            redis.call('DEL', unpack(KEYS, first, math.min(first + 999, n + 1)))
        end
        return {}
    end
end
local missing = {}
for i = 2, #ARGV do
    local removed
    if is_list then
        removed = redis.call('LREM', container, 1, ARGV[i])
    else
        removed = redis.call('ZREM', container, ARGV[i])
    end
    if removed == 1 then
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

# Put a quarantined job back exactly: its hash (every field, byte for byte) and its entry.
# KEYS: 1 rq:job:<id>, 2 the list or sorted set it goes back into, 3 rq:queues
# ARGV: 1 'list' or 'zset', 2 the entry (job id), 3 its score (zset), 4 the member of
#       rq:queues to add ('' for none), 5 'check' (only say whether it could) or 'put',
#       then field, value, field, value ...
# Refuses, changing nothing, when the hash key holds anything but exactly these fields
# ('hash_differs') or the container is of another type ('container_differs'). Idempotent:
# 'released' when it wrote something, 'already' when everything was already there.
RELEASE_JOB = """
local n = (#ARGV - 5) / 2
local hash_type = redis.call('TYPE', KEYS[1])['ok']
if hash_type ~= 'none' then
    if hash_type ~= 'hash' or redis.call('HLEN', KEYS[1]) ~= n then
        return 'hash_differs'
    end
    for i = 6, #ARGV, 2 do
        if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
            return 'hash_differs'
        end
    end
end
local container_type = redis.call('TYPE', KEYS[2])['ok']
if container_type ~= 'none' and container_type ~= ARGV[1] then
    return 'container_differs'
end
if ARGV[5] == 'check' then
    return 'ok'
end
local wrote = false
if hash_type == 'none' then
    redis.call('HSET', KEYS[1], unpack(ARGV, 6))
    wrote = true
end
if ARGV[1] == 'list' then
    if not redis.call('LPOS', KEYS[2], ARGV[2]) then
        redis.call('RPUSH', KEYS[2], ARGV[2])
        wrote = true
    end
elseif not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
    wrote = true
end
if ARGV[4] ~= '' then
    redis.call('SADD', KEYS[3], ARGV[4])
end
if wrote then
    return 'released'
end
return 'already'
"""


@dataclass(frozen=True)
class ReleasePlace:
    """Where RELEASE_JOB puts a job back."""

    job_key: str
    container: str
    kind: str  # 'list' or 'zset'
    member: bytes
    score: float
    queues_set: str
    queues_member: str  # '' for none


# Take switchyard's first own job out of its queues, looking past every other application's
# job: nothing is popped blindly, only that id is removed (LREM), so a foreign job keeps its
# place and its order. A job is switchyard's when its hash's description is the one
# switchyard's enqueue writes ("caption task <id>") or names switchyard's job function
# ("<JOB_FUNC>(...)", a plain rq producer's); the worker then checks the JSON payload itself
# (Lua cannot inflate zlib) and puts a job that fails the check back (PUT_BACK). Entries are
# read 16 at a time, at most `limit` of each queue, so a queue of own jobs costs one short
# LRANGE per take.
#
# The job taken moves, in the same step, to its queue's intermediate list (rq's own place for
# a job a worker has taken but not started; its preparation removes it there): a worker that
# dies before it registers the job leaves it where `check`, rq's maintenance and a migration
# all look, never in no place at all.
#
# A worker's loop sends its heartbeat and the suspension check with the take, and gets the
# job's hash with it: one round trip where rq needs three.
#
# KEYS: the queue lists, urgent first, then (take only) their intermediate lists in the same
# order. ARGV: 1 "rq:job:", 2 own description prefix, 3 JOB_FUNC .. "(", 4 limit, 5 "take" or
# "count", 6 the key that says rq is suspended ('' for no check), 7 commands to run first
# (RUN_PACKED's: rq's heartbeat), then ids not to take (found foreign).
# take: {queue index, job id, its index in the list, the job's hash as HGETALL gives it};
# {0, n, 0} when there is no own job, n foreign entries seen; {-1, 0, 0} when rq is
# suspended (nothing taken). count: per queue, the entries looked at that are jobs of
# another application (an id with no hash is nobody's job: `check` reports it as an entry
# without a hash).
TAKE_OWN_JOB = (
    RUN_PACKED
    + """
run_packed(ARGV[7])
if ARGV[6] ~= '' and redis.call('EXISTS', ARGV[6]) == 1 then return {-1, 0, 0} end
local skip = {}
for i = 8, #ARGV do skip[ARGV[i]] = true end
local limit, take = tonumber(ARGV[4]), ARGV[5] == 'take'
local counts, seen = {}, 0
local queues = take and #KEYS / 2 or #KEYS
for q = 1, queues do
  local foreign, start = 0, 0
  while start < limit do
    local ids = redis.call('LRANGE', KEYS[q], start, math.min(start + 15, limit - 1))
    for i, id in ipairs(ids) do
      local d = redis.call('HGET', ARGV[1] .. id, 'description')
      local own = d and not skip[id]
        and (d == ARGV[2] .. id or string.sub(d, 1, #ARGV[3]) == ARGV[3])
      if own and take then
        redis.call('LREM', KEYS[q], 1, id)
        redis.call('RPUSH', KEYS[queues + q], id)
        return {q, id, start + i - 1, redis.call('HGETALL', ARGV[1] .. id)}
      end
      if d and not own then foreign = foreign + 1 end
    end
    if #ids < 16 then break end
    start = start + 16
  end
  counts[q] = foreign
  seen = seen + foreign
end
if take then return {0, seen, 0} end
return counts
"""
)

# Put a job TAKE_OWN_JOB took back where it was: out of the intermediate list, before the
# entry now at its old index (or at the tail if the list is shorter now). KEYS: 1 the queue
# list, 2 its intermediate list. ARGV: 1 job id, 2 index.
PUT_BACK = """
redis.call('LREM', KEYS[2], 1, ARGV[1])
local pivot = redis.call('LINDEX', KEYS[1], tonumber(ARGV[2]))
if pivot then return redis.call('LINSERT', KEYS[1], 'BEFORE', pivot, ARGV[1]) end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""

# rq's bookkeeping commands for one job, queued on a pipeline by rq's own code, run as one
# script call instead of a MULTI/EXEC: the same writes in the same order, as atomic, but one
# command for the client to encode and one reply to parse, where redis-py spends tens of
# microseconds on each of a transaction's ~10-15 commands. Nothing is written when one of
# KEYS exists: a job whose dependents set exists takes rq's own WATCH/MULTI way, which
# moves them (in Lua the check and the writes are one atomic step, as WATCH makes them).
#
# KEYS: keys that must not exist. ARGV: 1 the commands (RUN_PACKED's).
# Returns 0 when a key of KEYS exists (nothing written), else {the last command's reply}.
RUN_COMMANDS = (
    RUN_PACKED
    + """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then return 0 end
end
return {run_packed(ARGV[1])}
"""
)


NO_COMMANDS = b"\x90"  # pack_commands of an empty pipeline


def pack_commands(pipe: Pipeline) -> bytes:
    """The commands queued on `pipe` (by rq's own code) as RUN_PACKED reads them, and `pipe`
    emptied. Each word is the bytes redis-py would send (its encoder's rules); one join
    instead of redis-py's packing of each argument, which costs several times more."""
    encode = pipe.get_encoder().encode
    out = [_array_header(len(pipe.command_stack))]
    for args, _options in pipe.command_stack:
        words = [*str(args[0]).split(), *args[1:]]  # redis-py allows "CLIENT SETNAME"
        out.append(_array_header(len(words)))
        for word in words:
            data = word.encode() if type(word) is str else encode(word)
            out += (_string_header(len(data)), data)
    pipe.reset()
    return b"".join(out)


def _array_header(n: int) -> bytes:
    return bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


def _string_header(n: int) -> bytes:
    """MessagePack's raw string (what cmsgpack reads as a Lua string, any bytes)."""
    if n < 32:
        return bytes([0xA0 | n])
    return b"\xda" + n.to_bytes(2, "big") if n < 65536 else b"\xdb" + n.to_bytes(4, "big")


class Scripts:
    """The scripts registered on one client; callable on a pipeline (EVALSHA, loaded once)."""

    def __init__(self, connection: redis.Redis) -> None:  # registering sends nothing yet
        self.enqueue_jobs: Script = connection.register_script(ENQUEUE_JOBS)
        self.to_front: Script = connection.register_script(TO_FRONT)
        self.forget_if_lost: Script = connection.register_script(FORGET_IF_LOST)
        self.remove_entries: Script = connection.register_script(REMOVE_ENTRIES)
        self.restore_hash_if_absent: Script = connection.register_script(RESTORE_HASH_IF_ABSENT)
        self.release_job: Script = connection.register_script(RELEASE_JOB)
        self.take_own_job: Script = connection.register_script(TAKE_OWN_JOB)
        self.put_back: Script = connection.register_script(PUT_BACK)
        self.run_commands: Script = connection.register_script(RUN_COMMANDS)

    def run_queued(self, pipe: Pipeline, unless_exist: Sequence[str] = ()) -> list[Any] | None:
        """Send the commands queued on `pipe` as one RUN_COMMANDS call (not as the
        pipeline's MULTI/EXEC); None if a key of `unless_exist` existed and nothing was
        written, else [the last command's reply]."""
        answer = self.run_commands(keys=list(unless_exist), args=[pack_commands(pipe)])
        return None if answer == 0 else list(answer)

    def queue_forget_if_lost(
        self, pipe: Pipeline, job_id: str, job_key: str, queue_key: str
    ) -> None:
        """FORGET_IF_LOST for job `job_id` of the queue `queue_key`, queued on `pipe`."""
        keys = [job_key, queue_key, intermediate_key(queue_key)]
        self.forget_if_lost(keys=keys, args=[job_id], client=pipe)

    def remove(
        self, container: str, kind: str, members: list[bytes], job_keys: list[str]
    ) -> list[bool]:
        """Remove exactly these members (and their hashes); True where it was still there."""
        if not members:
            return []
        with translated_redis(f"removing migrated entries from {container}"):
            missing = set(self.remove_entries(keys=[container, *job_keys], args=[kind, *members]))
        return [i not in missing for i in range(1, len(members) + 1)]

    def release(self, place: ReleasePlace, fields: dict[bytes, bytes], *, check: bool) -> str:
        """RELEASE_JOB's answer for one quarantined job (see there)."""
        flat = [x for pair in fields.items() for x in pair]
        keys = [place.job_key, place.container, place.queues_set]
        args: list[Any] = [place.kind, place.member, place.score, place.queues_member]
        with translated_redis(f"putting job {place.member!r} back into {place.container}"):
            answer = self.release_job(keys=keys, args=[*args, "check" if check else "put", *flat])
        # the answer is bytes on a client without decode_responses
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    def queue_restore_hash(
        self, pipe: Pipeline, key: str, fields: dict[bytes, bytes], pttl: int
    ) -> None:
        flat = [x for pair in fields.items() for x in pair]
        self.restore_hash_if_absent(keys=[key], args=[pttl, *flat], client=pipe)


Field = tuple[str, Any]


def hash_fields(fields: dict[str, Any]) -> list[Field]:
    """A job hash's (field, value) pairs for HSET in Lua; None fields are left out, as
    redis-py would refuse them (rq writes '' for the ones it wants present)."""
    return [(key, value) for key, value in fields.items() if value is not None]


def enqueue_jobs_args(
    queue_member: str, ids: Sequence[str], hashes: Sequence[list[Field]]
) -> list[Any]:
    """ENQUEUE_JOBS's ARGV for jobs whose hashes have the same fields in the same order: the
    fields with one value in every hash are sent once, the others per job."""
    names = [name for name, _ in hashes[0]]
    columns = list(zip(*([value for _, value in h] for h in hashes), strict=True))
    shared = [i for i, column in enumerate(columns) if all(v == column[0] for v in column)]
    own = [i for i in range(len(names)) if i not in shared]
    args: list[Any] = [queue_member, len(shared)]
    for i in shared:
        args += [names[i], columns[i][0]]
    args += [len(own), *(names[i] for i in own)]
    for job_id, h in zip(ids, hashes, strict=True):
        args += [job_id, *(h[i][1] for i in own)]
    return args
