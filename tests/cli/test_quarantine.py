"""`migrate rq-to-db` and `switchyard quarantine` as an operator runs them: the summary names
pickled jobs left behind and --allow-pickle; list, show, release and drop with their exit
codes (0 done, 1 refused or not found, 2 bad usage) and one-line errors."""

from __future__ import annotations

import redis
from rq import Queue

from tests.support.cli import cli, cli_many


def test_pickled_jobs_then_the_quarantine(sqlite_url: str, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    job = Queue("normal", connection=r).enqueue("thirdparty.resize", 5)  # pickled by rq
    before = r.hgetall(job.key)
    env = {"REDIS_URL": redis_url}

    human, bad_mapper = cli_many(
        sqlite_url,
        ("migrate", "rq-to-db"),
        ("migrate", "rq-to-db", "--mapper", "no_such_module:f"),
        env=env,
    )
    assert human.code == 1 and "1 pickled foreign job(s) left" in human.out
    assert "--allow-pickle" in human.out
    assert bad_mapper.code == 2 and "invalid mapper" in bad_mapper.error_line()

    moved = cli(sqlite_url, "migrate", "rq-to-db", "--allow-pickle", "--json", **env)
    assert moved.json()["quarantined"] == 1 and not r.exists(job.key)

    listed, unconfirmed, missing = cli_many(
        sqlite_url,
        ("quarantine", "list", "--json"),
        ("quarantine", "drop", job.id),
        ("quarantine", "release", "4242"),
        env=env,
    )
    (row,) = listed.json()["rows"]
    assert (row["job_id"], row["resolution"]) == (job.id, "open")
    assert unconfirmed.code == 2 and "--yes" in unconfirmed.err
    assert missing.code == 1 and "no quarantine row '4242'" in missing.error_line()

    released = cli(sqlite_url, "quarantine", "release", str(row["id"]), "--json", **env)
    assert released.json()[0]["ok"] and r.hgetall(job.key) == before
    assert r.lrange("rq:queue:normal", 0, -1) == [job.id.encode()]
    r.close()
