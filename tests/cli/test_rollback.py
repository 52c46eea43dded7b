"""The rollback toolkit as an operator drives it: the real CLI in a subprocess, `--json` on
stdout, one-line errors on stderr, exit 0 ok / 1 failed check / 2 bad usage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from switchyard.operations.services import Services
from tests.support.rollback import foreign_jobs, redis_client, rq_owned


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_emergency_then_list_show_and_verify(
    sqlite_services: Services,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    rq_owned(sqlite_services, 5)
    foreign_jobs(sqlite_services, 2)
    done = cli(env, "rollback", "emergency", "--no-canary", "--backup-dir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "succeeded"
    assert "stop_rq_workers: suspend rq" in done.stderr  # progress went to stderr

    shown = cli(env, "rollback", "show", run["id"])
    assert shown.returncode == 0 and "timeline" in shown.stdout

    redis_client(sqlite_services).rpush("rq:queue:normal", "a-job-nobody-migrated")
    verified = cli(env, "verify", "--against", str(tmp_path / run["id"]))
    assert verified.returncode == 1
    assert "FAIL rq_empty" in verified.stdout
    assert "- rq:queue:normal still holds 1 job(s)" in verified.stdout
    # The error line, after the event a log shipper and the notifier see (one line each).
    lines = verified.stderr.strip().splitlines()
    assert lines[-1] == "error: verify failed: rq_empty"
    assert [line.split(" ", 1)[1] for line in lines[:-1]] == [
        "ERROR action=verify.failed failed=rq_empty"
    ]


def test_check_fails_then_repair_fixes(
    sqlite_services: Services,
    env: dict[str, str],
) -> None:
    own = rq_owned(sqlite_services, 3)
    redis_client(sqlite_services).delete(f"rq:job:{own[1]}")
    found = cli(env, "check", "--json")
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert report["counts"] == {"entry_without_hash": 1}
    assert report["findings"][0]["subject"] == own[1]
    repaired = cli(env, "check", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout
    assert json.loads(repaired.stdout)["repaired"] == {"entries_removed": 1, "redispatched": 1}


def test_cleanup_refuses_with_exit_1_and_says_why(
    sqlite_services: Services,
    env: dict[str, str],
) -> None:
    rq_owned(sqlite_services, 2)
    refused = cli(env, "cleanup-rq", "--yes")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: cleanup-rq refused: the mode is rq")


def test_bad_usage_exits_2(env: dict[str, str]) -> None:
    usage = cli(env, "rollback", "emergency")
    assert usage.returncode == 2
    assert "--no-canary" in usage.stderr


def test_assess_json(sqlite_services: Services, env: dict[str, str]) -> None:
    rq_owned(sqlite_services, 1)
    done = cli(env, "rollback", "assess", "--security-issue", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["action"] == "immediate"
    assert "security issue (operator)" in result["reasons"]
