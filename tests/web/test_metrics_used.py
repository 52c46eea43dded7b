"""Every metric the alert rules and the Grafana board use is exported by /metrics: scraped
from a real app on a real database and Redis, with a rollback run recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from switchyard.db.runs import RunRecorder
from tests.web.conftest import make_client

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Used by a rule before /metrics exports it: foreign rq jobs come with branch rq-layouts
# (issue 9). Until then the rule and the panel stay silent; remove the name from here then.
NOT_YET_EXPORTED = {"switchyard_rq_foreign_jobs"}


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
    RunRecorder(services.store.engine).create("emergency", {"reason": "test"})
    with client:
        response = client.get("/metrics")
    assert response.status_code == 200
    exported = {f.name for f in text_string_to_metric_families(response.text)}
    used = used_metrics()
    assert len(used) >= 15  # the parse found the rules' and the board's names
    assert used - NOT_YET_EXPORTED - exported == set()
