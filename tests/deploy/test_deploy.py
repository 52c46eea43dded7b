"""deploy/: the systemd units pass `systemd-analyze verify` and stop gracefully (SIGTERM, a
stop timeout above the longest a task may run); the Compose file passes the Compose
specification's schema; Prometheus' configuration passes `promtool check config`; and every
command they start is a real switchyard command."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from switchyard.cli import app
from switchyard.config import Settings
from tests.support.deploy import DEPLOY, load_yaml, tool

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
VENV_BIN = Path(sys.executable).parent
COMPOSE = DEPLOY / "compose.yml"
SWITCHYARD_SERVICES = ("init", "serve", "worker-db", "worker-rq")


def unit(path: Path) -> configparser.ConfigParser:
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read(path)
    return parsed


def cli_commands() -> set[str]:
    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Each unit, with its paths pointed at this checkout (verify wants the executable and
    the environment file to exist), and templates as an instance."""
    analyze = tool("systemd-analyze", "part of systemd")
    paths = []
    for path in UNITS:
        text = path.read_text().replace("/opt/switchyard/.venv/bin", str(VENV_BIN))
        text = text.replace(
            "/etc/switchyard/switchyard.env", str(DEPLOY / "systemd/switchyard.env")
        )
        name = path.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text)
        paths.append(f"./{name}")
    done = subprocess.run(
        [analyze, "verify", *paths], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    complaints = [line for line in done.stderr.splitlines() if "switchyard" in line]
    assert complaints == []


@pytest.mark.parametrize("path", UNITS, ids=[u.name for u in UNITS])
def test_each_unit_stops_gracefully_and_runs_a_real_command(path: Path) -> None:
    service = unit(path)["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process; SIGKILL to all at the end
    command = service["ExecStart"].split()
    assert command[0].endswith("/switchyard") and command[1] in cli_commands()
    stop = int(service["TimeoutStopSec"])
    if command[1] == "worker":  # running tasks finish first: up to WORKER_TIMEOUT
        assert stop > Settings.model_fields["worker_timeout"].default
    else:
        assert 10 <= stop <= 60


def _compose_check(path: Path) -> subprocess.CompletedProcess[str]:
    checker = shutil.which("check-jsonschema", path=str(VENV_BIN)) or tool(
        "check-jsonschema", "pip install check-jsonschema (a dev dependency)"
    )
    return subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compose_file_passes_the_compose_specification(tmp_path: Path) -> None:
    done = _compose_check(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    typo = tmp_path / "compose.yml"
    typo.write_text(COMPOSE.read_text().replace("stop_grace_period: 30s", "stop_grace: 30s"))
    assert _compose_check(typo).returncode == 1  # the schema check can fail


def test_the_compose_file_runs_the_whole_system() -> None:
    compose: dict[str, Any] = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"postgres", "redis", "prometheus", "grafana", *SWITCHYARD_SERVICES} <= set(services)
    for name in SWITCHYARD_SERVICES:
        assert services[name]["command"][0] in cli_commands()
    for name in ("worker-db", "worker-rq"):
        assert services[name]["stop_signal"] == "SIGTERM"
        grace = int(services[name]["stop_grace_period"].removesuffix("s"))
        assert grace > Settings.model_fields["worker_timeout"].default
    for source in (
        v.split(":")[0] for s in ("prometheus", "grafana") for v in services[s]["volumes"]
    ):
        assert (DEPLOY / source).exists(), source


def test_the_prometheus_configuration_is_valid(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["job_name"] == "switchyard"  # the rules' up{job=...}
