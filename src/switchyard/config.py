"""Settings from the environment and a settings file, with the runbook's variable names.

The settings file is the one SWITCHYARD_ENV_FILE names (it must exist: a name that points
nowhere is an error, never an empty configuration), else `.env` in the current directory
if there is one. The environment wins over the file. `describe` says what was resolved (the
file read, the database and Redis with passwords masked, where the Redis URL came from), for
`switchyard status --json` and the start-up log.

A missing Redis URL is not an error (`make run` needs no Redis: the db mode never connects),
but it is never silent: the default (DEFAULT_REDIS_URL, database 0) is reported as such by
`status` and logged by every process started in a mode that uses Redis.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchyard.errors import ConfigError

PROVIDERS = ("builtin", "ollama", "openai")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_FILE_VARIABLE = "SWITCHYARD_ENV_FILE"
_LABEL = r"\s*(?i:urgent|high|normal|low)\s*"
QUEUE_PRIORITIES_PATTERN = rf"^(\s*[^=,\s][^,]*={_LABEL}(,\s*[^=,\s][^,]*={_LABEL})*)?$"
_AGE = re.compile(r"^\s*(\d{1,6})\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_AGE_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str, field: str = "age") -> timedelta:
    """A retention age such as "30d", "12h", "2w" or "90m"; anything else is refused."""
    found = _AGE.match(text)
    if found is None or int(found[1]) == 0:
        raise ValueError(f"invalid {field} {text!r}: give a positive age such as 30d, 12h or 2w")
    return timedelta(seconds=int(found[1]) * _AGE_UNITS[found[2].lower()])


def _optional_age(value: object) -> timedelta | None:
    """Unset, empty or "off" turns a retention off."""
    if value is None or isinstance(value, timedelta):
        return value
    text = str(value).strip()
    return None if text.lower() in ("", "off", "none") else parse_age(text)


Age = Annotated[timedelta | None, BeforeValidator(_optional_age)]


class Settings(BaseSettings):
    """Everything an operator can set. Names match what the runbook's operators already type."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str = "sqlite:///switchyard.db"
    # PostgreSQL: the session polling workers LISTEN on for wake-ups. Set it to a direct URL
    # when DATABASE_URL goes through a transaction pooler (PgBouncer), where LISTEN cannot work.
    database_listen_url: str | None = None
    redis_url: str = Field(
        DEFAULT_REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "RQ_REDIS_URL")
    )
    rq_enabled: bool = False
    database_polling_enabled: bool = True
    hybrid_mode: bool = False
    rq_fallback_enabled: bool = True
    emergency_rollback_mode: bool = Field(
        False,
        validation_alias=AliasChoices("EMERGENCY_ROLLBACK_MODE", "EMERGENCY_ROLLBACK"),
    )
    _env_file: Path | None = PrivateAttr(None)  # the settings file read, if any

    # The rq engine: queue names are RQ_QUEUE_PREFIX + urgent/high/normal/low.
    rq_queue_prefix: str = Field("", pattern=r"^[A-Za-z0-9_.:-]*$", max_length=64)
    # Priorities of other applications' queues whose names do not end in a priority label:
    # "emails=low,reports=high" (rq_engine/queues.py has the rules; --queue adds to it).
    rq_queue_priorities: str = Field("", pattern=QUEUE_PRIORITIES_PATTERN)
    # Hybrid mode: polling workers take rq-owned tasks left queued longer than this.
    hybrid_grace_seconds: float = Field(30.0, ge=0)
    # The health monitor pings Redis this often, giving up on a ping after RQ_HEALTH_TIMEOUT.
    rq_health_interval: float = Field(1.0, gt=0, le=60)
    rq_health_timeout: float = Field(0.5, gt=0, le=30)
    # The dispatcher enqueues committed-but-undispatched tasks this often.
    rq_dispatch_interval: float = Field(1.0, gt=0, le=60)
    # A task dispatched this long ago and still queued is checked against its Redis queue.
    rq_stale_dispatch_seconds: float = Field(300.0, gt=0)
    # How long rq keeps a finished job's hash and result (rq's own default).
    rq_result_ttl: int = Field(500, ge=0)
    # Workers and the web process cache the mode this long (the issue allows 2 s to notice).
    mode_cache_seconds: float = Field(1.0, ge=0, le=1)
    # Foreign rq jobs: the mapper (`module:function`) `migrate rq-to-db`, the rollback
    # procedures and `quarantine remap` use unless told otherwise (unset: the built-in
    # `switchyard.migration.mapping:by_fields`), and the legacy database it may read (read
    # only; unset: none).
    rq_job_mapper: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    legacy_database_url: str | None = None
    # Dotted path of a handler factory `(Settings) -> Handler`, for benchmarks and tests;
    # unset, workers caption images.
    task_handler: str | None = None

    worker_poll_interval: float = Field(5.0, gt=0)
    # Idle polling workers are woken when a task becomes claimable: PostgreSQL LISTEN/NOTIFY,
    # elsewhere Redis pub/sub when Redis is reachable. Polling stays the safety net either way.
    worker_wakeups: bool = True
    worker_batch_size: int = Field(10, ge=1, le=1000)
    worker_timeout: float = Field(3600.0, gt=0)
    worker_heartbeat_interval: float = Field(10.0, gt=0)
    # A running task whose heartbeat is older than this is presumed orphaned.
    worker_heartbeat_lapse: float = Field(60.0, gt=0)
    task_max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff_base: float = Field(5.0, ge=0)
    retry_backoff_max: float = Field(600.0, ge=0)

    caption_provider: Literal["builtin", "ollama", "openai"] = "builtin"
    # A fallback chain, e.g. "ollama,builtin": the next is used only while the one before is
    # unavailable. Unset, the chain is CAPTION_PROVIDER alone.
    caption_providers: str | None = None
    # Describe calls at once per provider in one worker process, shared by its threads (0: no
    # limit); and the circuit breaker: this many unavailable answers in a row open it for the
    # cooldown, during which workers take no tasks rather than return them.
    caption_concurrency: int = Field(4, ge=0, le=1024)
    caption_circuit_failures: int = Field(3, ge=1, le=1000)
    caption_circuit_cooldown: float = Field(30.0, gt=0, le=3600)
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "llava"
    ollama_timeout: float = Field(120.0, gt=0)
    # Any server speaking OpenAI's /v1/chat/completions with images (vLLM, llama.cpp's server,
    # LM Studio, LocalAI, hosted APIs). The key is a secret: never logged or shown.
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    openai_timeout: float = Field(120.0, gt=0)

    fetch_timeout: float = Field(15.0, gt=0)
    fetch_max_bytes: int = Field(20 * 1024 * 1024, gt=0)
    fetch_max_pixels: int = Field(50_000_000, gt=0)
    # Tests serve images from 127.0.0.1; production must never fetch from private addresses.
    fetch_allow_private: bool = False

    # The largest request body the HTTP API reads (413 beyond it; its own bodies are < 1 MB).
    http_max_body_bytes: int = Field(1024 * 1024, gt=0, le=64 * 1024 * 1024)
    # Retention (off unless set): `serve` purges finished tasks and their events older than
    # TASK_RETENTION, quarantine rows older than QUARANTINE_RETENTION, succeeded runs older than
    # RUN_RETENTION and backups under BACKUP_ROOT older than BACKUP_RETENTION, every
    # RETENTION_INTERVAL seconds, in batches of PURGE_BATCH_SIZE (see operations/retention.py).
    task_retention: Age = None
    quarantine_retention: Age = None
    run_retention: Age = None
    backup_retention: Age = None
    backup_root: str = "backups"
    retention_interval: float = Field(3600.0, ge=1)
    purge_batch_size: int = Field(200, ge=1, le=10_000)
    # Seconds the scheduled purge rests between batches, so workers keep their throughput
    # (bench/history.py measures it); `switchyard purge --pause` overrides it.
    purge_pause: float = Field(0.5, ge=0, le=60)

    # The HTTP admin API and dashboard are refused (never open) while no token is set.
    # SecretStr keeps the token out of reprs and logs.
    switchyard_admin_token: SecretStr | None = Field(None, min_length=16)
    # Signs the dashboard's session cookie; unset, a random key the server keeps in the
    # database (table server_secrets), shared by every web process. Never derived from the
    # admin token: a stolen cookie must not let token guesses be tested offline.
    switchyard_session_secret: SecretStr | None = Field(None, min_length=16)
    # The session cookie's Secure flag; unset, on unless the server listens on a loopback
    # address (behind a TLS proxy on 127.0.0.1, set it true).
    switchyard_cookie_secure: bool | None = None
    # Failed sign-ins (dashboard or bearer token) a client may make per window before 429.
    switchyard_signin_attempts: int = Field(10, ge=1, le=10_000)
    switchyard_signin_window: float = Field(300.0, gt=0, le=86_400)

    @field_validator("switchyard_admin_token", "switchyard_session_secret")
    @classmethod
    def _sixteen_non_space(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and sum(not c.isspace() for c in value.get_secret_value()) < 16:
            raise ValueError("must have at least 16 non-space characters")
        return value

    # Logs: `text` (key=value) or `json` (one object a line) on stderr, and in LOG_FILE too
    # when set, rotated by size.
    log_format: Literal["text", "json"] = "text"
    log_file: Path | None = None
    log_file_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    log_file_backups: int = Field(5, ge=0, le=100)
    # Team notifications (see notify.py): webhook URLs separated by commas or spaces. A
    # SecretStr: a webhook URL carries its token, and must not appear in reprs or logs.
    notify_webhook_urls: SecretStr | None = None
    notify_format: Literal["json", "slack", "matrix"] = "json"
    notify_attempts: int = Field(4, ge=1, le=20)
    notify_backoff: float = Field(0.5, ge=0, le=60)
    notify_timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("caption_providers")
    @classmethod
    def _known_providers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [name.strip() for name in value.split(",")]
        unknown = [n for n in names if n not in PROVIDERS]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"a comma-separated list of distinct names from {PROVIDERS}")
        return ",".join(names)

    @property
    def provider_chain(self) -> list[str]:
        """The caption providers in the order they are tried."""
        if not self.caption_providers:
            return [self.caption_provider]
        return [name.strip() for name in self.caption_providers.split(",")]


# `scheme://user:password@` up to the last `@` (a password may hold one unescaped): more
# masked than needed, never less.
_URL_PASSWORD = re.compile(r"^(?P<head>[^:/]*://[^:/@]*):.*@")
_QUERY_PASSWORD = re.compile(r"(?i)(?P<head>[?&](?:password|passwd|pwd)=)[^&#]*")


def masked_url(url: str) -> str:
    """`url` with its password (in the userinfo or a `password=` query parameter) replaced
    by `***`, for anything printed or logged. Works on a URL that does not parse, which is
    when one is most often printed."""
    masked = _URL_PASSWORD.sub(r"\g<head>:***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\g<head>***", masked)


def settings_file() -> Path | None:
    """SWITCHYARD_ENV_FILE (which must be a file), else `.env` here if there is one."""
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"invalid {ENV_FILE_VARIABLE}: {named} is not a file")
        return path.resolve()
    local = Path(".env")
    return local.resolve() if local.is_file() else None


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a validation failure into one line naming the variable."""
    source = settings_file()
    try:
        settings = Settings(_env_file=source, **overrides)  # type: ignore[arg-type,call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"invalid {name}: {first['msg']}") from None
    settings._env_file = source
    return settings


@dataclass(frozen=True)
class Resolved:
    """What the settings resolved to, passwords masked."""

    settings_file: str | None
    database_url: str
    sqlite_path: str | None  # the absolute file of a SQLite database (relative to here)
    redis_url: str
    redis_url_source: str  # "REDIS_URL or RQ_REDIS_URL", or "default: REDIS_URL is not set"
    redis_db: int
    redis_db_named: bool  # False: the URL names no database number; Redis uses 0

    @property
    def redis_default(self) -> bool:
        return not self.redis_url_source.startswith("REDIS_URL")


def describe(settings: Settings) -> Resolved:
    env_file = settings._env_file
    given = "redis_url" in settings.model_fields_set
    db_path = urlsplit(settings.redis_url).path.strip("/")
    sqlite = settings.database_url.partition(":///")
    is_sqlite = settings.database_url.startswith("sqlite") and bool(sqlite[1])
    return Resolved(
        settings_file=str(env_file) if env_file else None,
        database_url=masked_url(settings.database_url),
        sqlite_path=str(Path(sqlite[2]).resolve()) if is_sqlite and sqlite[2] else None,
        redis_url=masked_url(settings.redis_url),
        redis_url_source="REDIS_URL or RQ_REDIS_URL"
        if given
        else f"default: REDIS_URL is not set, so {DEFAULT_REDIS_URL}",
        redis_db=int(db_path) if db_path.isdigit() else 0,
        redis_db_named=db_path.isdigit(),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
