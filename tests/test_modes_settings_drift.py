"""Operators are told: boot settings that disagree with the stored mode are logged at every
start (serve, worker) and shown in /health; `status --json` shows the settings file read and
the database and Redis resolved, passwords masked, from whatever directory it runs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from switchyard.modes import Mode
from switchyard.operations.services import Services
from switchyard.switch import switch_mode
from switchyard.web.api import health
from switchyard.web.app import create_app
from switchyard.workers.runner import run_worker
from tests.support.env import cli_env, make_settings
from tests.support.log_handlers import Lines


def test_a_disagreement_is_logged_at_every_start_and_shown_in_health(
    sqlite_url: str, redis_url: str, start_log: Lines
) -> None:
    svc = Services(make_settings(sqlite_url, redis_url=redis_url, emergency_rollback_mode=True))
    try:
        create_app(svc)
        assert "settings.mode_drift" not in start_log.actions()  # nothing stored: they agree
        switch_mode(svc.store, Mode.HYBRID, "test", "an operator switched at run time")

        create_app(svc)  # serve
        assert run_worker(svc, "db", burst=True) == 0  # a worker
        drifts = [r for r in start_log.records if r.getMessage() == "settings.mode_drift"]
        assert [r.fields["process"].split()[0] for r in drifts] == ["serve", "worker"]  # type: ignore[attr-defined]
        assert all(r.levelno == logging.WARNING for r in drifts)
        assert "stored mode is hybrid" in drifts[0].fields["detail"]  # type: ignore[attr-defined]

        mode = json.loads(health(svc).body)["mode"]
        assert mode["status"] == "degraded" and mode["settings_drift_urgent"] is True
        assert "EMERGENCY_ROLLBACK_MODE=true" in mode["settings_drift"]
        switch_mode(svc.store, Mode.DB, "test", "the runbook's switch")
        assert json.loads(health(svc).body)["mode"]["settings_drift"] is None
    finally:
        svc.store.dispose()


def test_status_shows_what_the_settings_resolved_to_from_any_directory(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = tmp_path / "deploy" / "switchyard.env"
    settings.parent.mkdir()
    settings.write_text(f"DATABASE_URL={sqlite_url}\nREDIS_URL=redis://:pw@127.0.0.1:6379/9\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env("unused", SWITCHYARD_ENV_FILE=str(settings))
    del env["DATABASE_URL"]
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", "status", "--json"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    conf = json.loads(done.stdout)["configuration"]
    assert conf["settings_file"] == str(settings)
    assert conf["database"]["sqlite_path"] == sqlite_url.removeprefix("sqlite:///")
    assert conf["redis"] == {
        "url": "redis://:***@127.0.0.1:6379/9",
        "source": "REDIS_URL or RQ_REDIS_URL",
        "db": 9,
        "db_named_in_url": True,
    }
    assert "pw@" not in done.stdout
    assert not (elsewhere / "switchyard.db").exists()  # no new empty database here
