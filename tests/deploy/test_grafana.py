"""deploy/grafana/switchyard.json: a dashboard Grafana can import, whose every query is valid
PromQL (checked by promtool) and which shows what the runbook's operators watch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.deploy import BOARD, metrics_in

# What the board must show: both engines' queues, throughput and failures, enqueue -> start
# latency, workers, mode, fallback, rollback runs.
REQUIRED = {
    "switchyard_queue_length",
    "switchyard_rq_queue_length",
    "switchyard_tasks_finished_window",
    "switchyard_claim_latency_seconds",
    "switchyard_workers",
    "switchyard_mode",
    "switchyard_fallback_active",
    "switchyard_rollback_runs",
    "switchyard_rollback_last_run",
}


def board() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(BOARD.read_text())
    return loaded


def queries() -> list[str]:
    return [t["expr"] for p in board()["panels"] for t in p.get("targets", [])]


def test_the_board_is_a_dashboard_grafana_can_import() -> None:
    b = board()
    assert b["uid"] and b["title"] and isinstance(b["schemaVersion"], int)
    ids = [p["id"] for p in b["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert [v["name"] for v in b["templating"]["list"]] == ["datasource"]
    for p in b["panels"]:
        x, w = p["gridPos"]["x"], p["gridPos"]["w"]
        assert x >= 0 and x + w <= 24, f"{p['title']} is off the grid"
        if p["type"] == "row":
            continue
        assert p["targets"], f"{p['title']} has no query"
        for t in [p, *p["targets"]]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_the_board_shows_what_operators_watch() -> None:
    shown = set().union(*(metrics_in(q) for q in queries()))
    assert REQUIRED - shown == set()


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each query as a recording rule: `promtool check rules` parses it as Prometheus would."""
    rules = [{"record": f"board:query_{i}", "expr": q} for i, q in enumerate(queries())]
    path = tmp_path / "board-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "board", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout
