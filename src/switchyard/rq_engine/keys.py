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

switchyard's own job: `rq:job:<task id>` with func "switchyard.rq_engine.jobs.run_task", args
[<task id>], JSON-serialized (never pickle).
"""

from __future__ import annotations


def wip_job_id(member: str) -> str:
    """The job id of a `rq:wip:<q>` member ("<job id>:<execution id>"; older rq: the bare
    job id, which has no execution part)."""
    return member.rpartition(":")[0] or member


__all__ = ["wip_job_id"]
