"""Every metric the alert rules and the Grafana board use is exported by /metrics: scraped
from a real app on a real database and Redis, with a rollback run recorded. And the metrics
added for the alerts count what they say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from switchyard import operations as ops
from switchyard.db.runs import RunRecorder
from switchyard.domain import Priority
from switchyard.rq_engine.connection import queue_for
from tests.support.web import TASK, make_client, scrape

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def used_metrics() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    texts = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    board = json.loads((DEPLOY / "grafana" / "switchyard.json").read_text())
    texts += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    names = set(re.findall(r"\b(switchyard_[a-z0-9_]+)", "\n".join(texts)))
    return {re.sub(r"_(bucket|gcount|gsum)$", "", n) for n in names}


def test_every_metric_the_rules_and_the_board_use_is_exported(
    sqlite_url: str, redis_url: str
) -> None:
    client, services = make_client(sqlite_url, redis_url)
    RunRecorder(services.store).create("emergency", {"reason": "test"})
    with client:
        response = client.get("/metrics")
    assert response.status_code == 200
    exported = {f.name for f in text_string_to_metric_families(response.text)}
    used = used_metrics()
    assert len(used) >= 15  # the parse found the rules' and the board's names
    assert used - exported == set()


def test_a_db_owned_task_waiting_in_an_rq_queue_is_counted(sqlite_url: str, redis_url: str) -> None:
    """The metric behind SwitchyardTaskOwnedByOneEngineQueuedInTheOther: /health's check."""
    client, services = make_client(sqlite_url, redis_url)
    [task] = ops.submit(services, [ops.build_task(**TASK)], "t")  # db mode: db-owned
    key = ("switchyard_tasks_owned_elsewhere", (("owner", "db"), ("queued_in", "rq")))
    with client:
        assert scrape(client)[key] == 0
        queue = queue_for(services.redis, Priority.NORMAL, services.settings.rq_queue_prefix)
        services.redis.rpush(queue.key, str(task.id))
        assert scrape(client)[key] == 1
        assert client.get("/health").json()["ownership"]["status"] == "inconsistent"
