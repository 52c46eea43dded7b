"""Settings: the runbook's variable names, `.env`, and one clear line for each bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.config import describe, load_settings, masked_url
from switchyard.errors import ConfigError
from tests.support.env import cli_env


def test_defaults_match_the_runbook(clean_env: Path) -> None:
    s = load_settings()
    assert (s.database_polling_enabled, s.rq_enabled, s.hybrid_mode) == (True, False, False)
    assert (s.worker_poll_interval, s.worker_batch_size, s.worker_timeout) == (5.0, 10, 3600.0)
    assert s.fetch_allow_private is False


def test_the_runbook_names_are_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RQ_ENABLED": "true",
        "DATABASE_POLLING_ENABLED": "false",
        "HYBRID_MODE": "1",
        "RQ_FALLBACK_ENABLED": "false",
        "EMERGENCY_ROLLBACK_MODE": "yes",
        "WORKER_POLL_INTERVAL": "0.5",
        "WORKER_BATCH_SIZE": "25",
        "WORKER_TIMEOUT": "90",
    }.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.rq_enabled, s.database_polling_enabled, s.hybrid_mode) == (True, False, True)
    assert (s.rq_fallback_enabled, s.emergency_rollback_mode) == (False, True)
    assert (s.worker_poll_interval, s.worker_batch_size, s.worker_timeout) == (0.5, 25, 90.0)


def test_rq_redis_url_is_read_as_redis_url(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RQ_REDIS_URL", "redis://queue.internal:6380/2")
    assert load_settings().redis_url == "redis://queue.internal:6380/2"
    monkeypatch.setenv("REDIS_URL", "redis://preferred:6379/0")
    assert load_settings().redis_url == "redis://preferred:6379/0"


def test_a_dotenv_file_is_read_and_the_environment_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text(
        "WORKER_BATCH_SIZE=42\nRQ_REDIS_URL=redis://from-dotenv:6379/3\nHYBRID_MODE=true\n"
    )
    s = load_settings()
    assert (s.worker_batch_size, s.redis_url, s.hybrid_mode) == (
        42,
        "redis://from-dotenv:6379/3",
        True,
    )
    monkeypatch.setenv("WORKER_BATCH_SIZE", "7")
    assert load_settings().worker_batch_size == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_POLL_INTERVAL", "abc"),
        ("WORKER_POLL_INTERVAL", "0"),
        ("WORKER_BATCH_SIZE", "0"),
        ("WORKER_BATCH_SIZE", "1001"),
        ("WORKER_TIMEOUT", "-1"),
        ("CAPTION_PROVIDER", "nope"),
        ("HYBRID_MODE", "maybe"),
        ("TASK_MAX_ATTEMPTS", "0"),
    ],
)
def test_an_invalid_value_names_its_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^invalid {name}: ") as caught:
        load_settings()
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_the_cli_refuses_to_start_on_an_invalid_value(tmp_path: Path) -> None:
    """`switchyard init` stops with exit 2 and one line naming the variable; it writes nothing."""
    database = tmp_path / "never.db"
    cases = {"WORKER_POLL_INTERVAL": "abc", "WORKER_BATCH_SIZE": "0", "CAPTION_PROVIDER": "nope"}
    runs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "switchyard", "init"],
            env=cli_env(f"sqlite:///{database}", **{name: value}),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, value in cases.items()
    }
    for name, run in runs.items():
        out, err = run.communicate(timeout=30)
        assert run.returncode == 2, (name, err)
        # Joined: rich wraps long lines at 80 columns (tests/cli covers that defect).
        assert " ".join(err.split()).startswith(f"error: invalid {name}: "), err
        assert "Traceback" not in err and out == ""
    assert not database.exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ops:s3cret@db:5432/x", "postgresql://ops:***@db:5432/x"),
        ("postgresql://ops:s3cret@db:notaport/x", "postgresql://ops:***@db:notaport/x"),
        ("mysql+pymysql://root:p/w@d@db/x", "mysql+pymysql://root:***@db/x"),  # unescaped / and @
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            "postgresql://db/x?sslmode=require&password=s3cret",
            "postgresql://db/x?sslmode=require&password=***",
        ),
        ("postgresql://ops@db/x", "postgresql://ops@db/x"),
        ("sqlite:////var/lib/switchyard.db", "sqlite:////var/lib/switchyard.db"),
    ],
)
def test_printed_urls_have_their_password_masked(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_switchyard_env_file_names_the_settings_file_wherever_the_command_runs(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("deploy")
    (home / "switchyard.env").write_text(
        "DATABASE_URL=postgresql://app:s3cret@db.internal/switchyard\n"
        "REDIS_URL=redis://:hunter2@cache.internal:6379/4\nEMERGENCY_ROLLBACK=true\n"
    )
    (clean_env / ".env").write_text("DATABASE_URL=sqlite:///elsewhere.db\n")  # not read
    monkeypatch.setenv("SWITCHYARD_ENV_FILE", str(home / "switchyard.env"))
    s = load_settings()
    assert s.emergency_rollback_mode is True  # the runbook's name
    seen = describe(s)
    assert seen.settings_file == str(home / "switchyard.env")
    assert seen.database_url == "postgresql://app:***@db.internal/switchyard"
    assert seen.redis_url == "redis://:***@cache.internal:6379/4" and seen.redis_db == 4
    assert not seen.redis_default and seen.sqlite_path is None

    monkeypatch.setenv("SWITCHYARD_ENV_FILE", str(home / "missing.env"))
    with pytest.raises(
        ConfigError, match=r"invalid SWITCHYARD_ENV_FILE: .*missing\.env is not a file"
    ):
        load_settings()


def test_a_missing_redis_url_is_stated_not_silent(clean_env: Path) -> None:
    seen = describe(load_settings())
    assert seen.settings_file is None
    assert seen.redis_default and seen.redis_url_source.startswith("default: REDIS_URL is not set")
    assert seen.sqlite_path == str(clean_env / "switchyard.db")  # where the file really is
    unnamed = describe(load_settings(redis_url="redis://cache:6379"))
    assert (unnamed.redis_db, unnamed.redis_db_named, unnamed.redis_default) == (0, False, False)
