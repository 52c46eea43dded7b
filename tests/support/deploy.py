"""The deployment examples in deploy/: their paths, the rules, and the tools that check them
(promtool, systemd-analyze), which skip locally when absent and fail in CI."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.env import IN_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "tests" / "deploy" / "alerts.test.yml"
BOARD = DEPLOY / "grafana" / "switchyard.json"
METRIC = re.compile(r"\b(switchyard_[a-z0-9_]+)")


def tool(name: str, why: str) -> str:
    """The path of a tool; skipped when missing, except in CI (CI=true), where it fails."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed ({why})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def metrics_in(text: str) -> set[str]:
    """Every switchyard metric a PromQL text names (histogram series reduced to the family)."""
    names = set(METRIC.findall(text))
    return {re.sub(r"_(bucket|gcount|gsum)$", "", n) for n in names}
