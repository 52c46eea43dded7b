"""The Redis Queue engine, on the real `rq` library. The database stays the system of record:
a job carries only its task's id, and a worker must win the task's compare-and-set in the
database before running it.

Redis key layout (rq's own; `<q>` is RQ_QUEUE_PREFIX + urgent|high|normal|low, `<id>` is the
task id, which is also the job id):

    rq:queue:<q>          list    ids of jobs waiting, oldest at the head; workers BLPOP from
                                  the four lists in priority order (a popped id is in no list
                                  for a moment, until the worker marks the job started)
    rq:job:<id>           hash    the job: status, origin (its queue), created/enqueued/
                                  started/ended_at, timeout, result_ttl, and `data`: the
                                  zlib-compressed JSON of [func, instance, args, kwargs] with
                                  func "switchyard.rq_engine.jobs.run_task", args [<id>]
    rq:wip:<q>            zset    executions in progress, "<id>:<execution id>" -> expiry
    rq:finished:<q>       zset    finished jobs -> expiry of their result
    rq:failed:<q>         zset    failed jobs (here: tasks that failed for good) -> expiry
    rq:scheduled:<q>      zset    jobs to enqueue at a time (unused: retries are the database's)
    rq:deferred:<q>       zset    jobs waiting on dependencies (unused)
    rq:queues             set     every queue key
    rq:queue:<q>:intermediate  list  ids a one-queue rq worker took (LMOVE), not yet started;
                          switchyard's four-queue workers pop (LPOP) and never write it
    rq:queue:<q>:intermediate:first_seen:<id>  string  rq 3.0 crash marker (24 h), not a queue
    rq:workers            set     every worker key; rq:workers:<q> the workers of one queue
    rq:worker:<name>      hash    a worker's state, current job, counters, last heartbeat
    rq:pubsub:<name>      channel commands to a worker (`shutdown` is rq's graceful stop)
    rq:suspended          string  present while rq workers are suspended

Where the pieces are: `connection` (clients, queue names, error translation), `scripts` (the
Lua), `dispatch` (pushing jobs, finding lost ones; *what* to enqueue and when is decided by
`switchyard.switch`, fenced by the routing epoch), `jobs` (the job function), `control`
(statistics, suspension, graceful shutdown). The worker processes live in
`switchyard.workers`.
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
