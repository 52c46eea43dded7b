"""The Redis Queue engine, on the real `rq` library. The database stays the system of record:
a job carries only its task's id, and a worker must win the task's compare-and-set in the
database before running it.

The Redis key layout is written down once, in `keys.py`.

Where the pieces are: `connection` (clients and their timeouts, queue names, error
translation), `keys` (the key layout), `scripts` (every Lua script), `dispatch` (pushing
jobs, finding lost ones; *what* to enqueue and when is decided by `switchyard.switch`, fenced
by the routing epoch), `jobs` (the job function), `control` (statistics, suspension,
graceful shutdown). The worker processes live in `switchyard.workers`.
"""

from switchyard.rq_engine.connection import (
    JOB_FUNC,
    QUEUE_NAMES,
    BrokerUnavailable,
    connect,
    queue_for,
    queue_name,
    queue_names,
)
from switchyard.rq_engine.dispatch import PushResult, push_jobs, sweep_lost

__all__ = [
    "JOB_FUNC",
    "QUEUE_NAMES",
    "BrokerUnavailable",
    "PushResult",
    "connect",
    "push_jobs",
    "queue_for",
    "queue_name",
    "queue_names",
    "sweep_lost",
]
