"""rq's Redis key layout, written down once: what switchyard reads, writes and removes.

`<q>` is a queue name (RQ_QUEUE_PREFIX + urgent|high|normal|low for switchyard's own; any
name for another application's), `<id>` a job id (for switchyard's own jobs, the task id).

rq 2.x and 3.x:

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
    rq:workers:<q>                 set: the workers of one queue
    rq:worker:<name>               hash: a worker's state, current job, counters, heartbeat
    rq:pubsub:<name>               channel: commands to a worker (`shutdown` is rq's graceful stop)
    rq:suspended                   string: present while rq workers are suspended

Beside those, recorded from rq 1.16, 2.12 and 3.0 (tests/fixtures/rq/):

    rq:canceled:<q>                zset of canceled jobs (kept for the record)
    rq:job:<id>:dependents         set: jobs waiting on <id>
    rq:job::<id>:dependencies      set: what <id> waits on (rq writes the doubled colon)
    rq:results:<id>                stream: a job's results (rq >= 1.12)
    rq:execution:<id>:<exec>       hash: one execution of a started job (rq >= 2)
    rq:executions:<id>             zset: a job's executions (rq >= 2)
    rq:worker:<name>:executions    set: a worker's executions (rq 3)
    rq:clean_registries:<q>, rq:clean_groups, rq:scheduler-lock:<q>
                                   strings: maintenance locks with a TTL
    rq:scheduler:<name>            hash: a scheduler's state
    rq:group:<name>, rq:groups     a job group's set, the zset of groups (rq 2)

`classify(key, type)` is the one place a key's meaning is decided, by name AND TYPE: a key
whose name is none of the above is UNKNOWN, one whose TYPE is not the one its name says is
MISMATCHED; both are reported by the commands that find them, and never read as rq's.

switchyard's own keys, beside rq's:

    switchyard:wake:<prefix>       pub/sub channel (no key): "a task became claimable", sent
                                   after a commit on MariaDB/SQLite to wake idle polling
                                   workers; <prefix> is RQ_QUEUE_PREFIX. A hint, loss-tolerant.

switchyard's own job: `rq:job:<task id>` with func "switchyard.rq_engine.jobs.run_task", args
[<task id>], JSON-serialized (never pickle).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PREFIX = "rq"
INTERMEDIATE_SUFFIX = ":intermediate"
MARKER_INFIX = f"{INTERMEDIATE_SUFFIX}:first_seen:"


class Role(enum.StrEnum):
    """What an rq key is; each role has one Redis TYPE (`EXPECTED_TYPE`)."""

    QUEUES = "queues"  # rq:queues
    QUEUE = "queue"
    INTERMEDIATE = "intermediate"
    MARKER = "marker"
    READY = "ready"
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    WIP = "wip"
    FAILED = "failed"
    FINISHED = "finished"
    CANCELED = "canceled"
    JOB = "job"
    DEPENDENTS = "dependents"
    DEPENDENCIES = "dependencies"
    RESULTS = "results"
    EXECUTION = "execution"
    EXECUTIONS = "executions"
    WORKERS = "workers"  # rq:workers
    QUEUE_WORKERS = "queue_workers"  # rq:workers:<q>
    WORKER = "worker"
    WORKER_EXECUTIONS = "worker_executions"
    SCHEDULER = "scheduler"
    LOCK = "lock"  # rq:clean_registries:<q>, rq:clean_groups, rq:scheduler-lock:<q>
    SUSPENDED = "suspended"
    GROUP = "group"
    GROUPS = "groups"

    @property
    def registry(self) -> bool:
        """A sorted set of job ids per queue ("rq:<role>:<q>")."""
        return self in REGISTRIES


REGISTRIES = frozenset(
    {Role.READY, Role.SCHEDULED, Role.DEFERRED, Role.WIP, Role.FAILED, Role.FINISHED}
    | {Role.CANCELED}
)

EXPECTED_TYPE: dict[Role, str] = {
    **{role: "zset" for role in REGISTRIES},
    Role.QUEUES: "set",
    Role.QUEUE: "list",
    Role.INTERMEDIATE: "list",
    Role.MARKER: "string",
    Role.JOB: "hash",
    Role.DEPENDENTS: "set",
    Role.DEPENDENCIES: "set",
    Role.RESULTS: "stream",
    Role.EXECUTION: "hash",
    Role.EXECUTIONS: "zset",
    Role.WORKERS: "set",
    Role.QUEUE_WORKERS: "set",
    Role.WORKER: "hash",
    Role.WORKER_EXECUTIONS: "set",
    Role.SCHEDULER: "hash",
    Role.LOCK: "string",
    Role.SUSPENDED: "string",
    Role.GROUP: "set",
    Role.GROUPS: "zset",
}

# Keys whose whole name is fixed.
_FIXED = {
    f"{PREFIX}:queues": Role.QUEUES,
    f"{PREFIX}:workers": Role.WORKERS,
    f"{PREFIX}:suspended": Role.SUSPENDED,
    f"{PREFIX}:clean_groups": Role.LOCK,
    f"{PREFIX}:groups": Role.GROUPS,
}
# "rq:<head>:<subject>" keys whose subject may be anything (queue names hold colons).
_HEADS = {
    **{role.value: role for role in REGISTRIES},
    "results": Role.RESULTS,
    "executions": Role.EXECUTIONS,
    "workers": Role.QUEUE_WORKERS,
    "scheduler": Role.SCHEDULER,
    "clean_registries": Role.LOCK,
    "scheduler-lock": Role.LOCK,
    "group": Role.GROUP,
}


@dataclass(frozen=True)
class KeyName:
    """What a key's name says: its role and subject (queue, job id or worker name)."""

    role: Role
    subject: str

    @property
    def expected_type(self) -> str:
        return EXPECTED_TYPE[self.role]


@dataclass(frozen=True)
class KeyClass:
    """A key classified by name and TYPE. `name` None: no rq key of any kind (UNKNOWN);
    `matches` False: its TYPE is not the one its name says (MISMATCHED)."""

    key: str
    type: str
    name: KeyName | None

    @property
    def matches(self) -> bool:
        return self.name is not None and self.type == self.name.expected_type

    @property
    def role(self) -> Role | None:
        return self.name.role if self.matches and self.name is not None else None


def classify(key: str, type_: str) -> KeyClass:
    """The one classifier: name AND TYPE ("none": the key is gone, matches nothing)."""
    return KeyClass(key, type_, name_of(key))


def name_of(key: str) -> KeyName | None:
    """What an rq key's name alone says; None for a name rq does not write."""
    if key in _FIXED:
        return KeyName(_FIXED[key], "")
    head, sep, rest = key.partition(":")
    if head != PREFIX or not sep:
        return None
    kind, _, subject = rest.partition(":")
    if not subject:
        return None
    if kind == "queue":
        return _queue_name(subject)
    if kind == "job":
        return _job_name(subject)
    if kind == "worker":
        return _worker_name(subject)
    if kind == "execution":
        return KeyName(Role.EXECUTION, subject.partition(":")[0]) if ":" in subject else None
    role = _HEADS.get(kind)
    return KeyName(role, subject) if role is not None else None


def _queue_name(name: str) -> KeyName | None:
    queue, infix, job_id = name.partition(MARKER_INFIX)
    if infix:
        return KeyName(Role.MARKER, job_id) if queue and job_id else None
    if f"{INTERMEDIATE_SUFFIX}:" in name:
        return None  # some other key under an intermediate list's name: not rq's
    if name.endswith(INTERMEDIATE_SUFFIX):
        queue = name[: -len(INTERMEDIATE_SUFFIX)]
        return KeyName(Role.INTERMEDIATE, queue) if queue else None
    return KeyName(Role.QUEUE, name)


def _job_name(rest: str) -> KeyName | None:
    if rest.startswith(":") and rest.endswith(":dependencies"):  # rq's "rq:job::<id>:..."
        job_id = rest[1 : -len(":dependencies")]
        return KeyName(Role.DEPENDENCIES, job_id) if job_id else None
    job_id, _, tail = rest.partition(":")
    if not tail:
        return KeyName(Role.JOB, job_id)
    if tail in ("dependents", "dependencies") and job_id:
        return KeyName(Role(tail), job_id)
    return None


def _worker_name(rest: str) -> KeyName:
    if rest.endswith(":executions"):
        return KeyName(Role.WORKER_EXECUTIONS, rest[: -len(":executions")])
    return KeyName(Role.WORKER, rest)


def key_of(role: Role, subject: str) -> str:
    """The key of a per-queue role (queue, intermediate, registries)."""
    if role is Role.QUEUE:
        return f"{PREFIX}:queue:{subject}"
    if role is Role.INTERMEDIATE:
        return f"{PREFIX}:queue:{subject}{INTERMEDIATE_SUFFIX}"
    if role.registry:
        return f"{PREFIX}:{role.value}:{subject}"
    raise ValueError(f"{role} is not a per-queue key")


def intermediate_key(queue_key: str) -> str:
    """rq's list of a queue's jobs taken by a worker but not started yet."""
    return f"{queue_key}{INTERMEDIATE_SUFFIX}"


def wip_job_id(member: str) -> str:
    """The job id of a `rq:wip:<q>` member ("<job id>:<execution id>"; older rq: the bare
    job id, which has no execution part)."""
    return member.rpartition(":")[0] or member


def wake_channel(prefix: str) -> str:
    """The pub/sub channel that wakes idle polling workers (see the layout above)."""
    return f"switchyard:wake:{prefix}"


__all__ = [
    "EXPECTED_TYPE",
    "PREFIX",
    "KeyClass",
    "KeyName",
    "Role",
    "classify",
    "intermediate_key",
    "key_of",
    "name_of",
    "wake_channel",
    "wip_job_id",
]
