"""deploy/prometheus/alerts.yml: valid for Prometheus, and every rule unit-tested so that
breaking it either way (it never fires, or it fires without its guard) fails a test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.deploy import ALERT_TESTS, ALERTS, alert_rules, load_yaml

NEVER = "vector(1) == 0"


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    # One stream: promtool writes a file's name to stdout and its failures to stderr.
    return subprocess.run(
        [promtool, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    )


def test_the_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_the_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    fired, silent = set(), set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown staying silent"


def _guard_removed(expr: str) -> str | None:
    """The rule's first clause alone: what it would say without its `and`/`unless` guards."""
    first = re.split(r"\s+(?:and|unless)\b", expr.strip())[0]
    return None if first == expr.strip() else first


def _mutants() -> list[tuple[str, int, str]]:
    out = []
    for i, rule in enumerate(alert_rules()):
        out.append((f"{rule['alert']}#{i}:never", i, NEVER))
        loosened = _guard_removed(rule["expr"])
        if loosened is not None:
            out.append((f"{rule['alert']}#{i}:unguarded", i, loosened))
    return out


def _with_rule_replaced(tmp: Path, index: int, expr: str) -> Path:
    """A copy of the rules with one expression replaced, and the unit tests of that alert."""
    rules: dict[str, Any] = load_yaml(ALERTS)
    flat = [r for g in rules["groups"] for r in g["rules"]]
    flat[index]["expr"] = expr
    folder = tmp / f"rule{index}-{len(list(tmp.iterdir()))}"
    folder.mkdir()
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    tests = load_yaml(ALERT_TESTS)
    tests["rule_files"] = [str(folder / "alerts.yml")]
    name = flat[index]["alert"]
    tests["tests"] = [
        case
        for case in tests["tests"]
        if any(check["alertname"] == name for check in case["alert_rule_test"])
    ]
    (folder / "alerts.test.yml").write_text(yaml.safe_dump(tests))
    return folder / "alerts.test.yml"


def _outcomes(output: str) -> dict[str, bool]:
    """promtool's verdict per test file: `Unit Testing:  FILE` then `SUCCESS` or `FAILED:`."""
    verdicts: dict[str, bool] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("Unit Testing:"):
            current = line.split(":", 1)[1].strip()
        elif current is not None and line.strip() in ("SUCCESS", "FAILED:"):
            verdicts[current] = line.strip() == "SUCCESS"
            current = None
    return verdicts


def test_a_broken_rule_fails_its_unit_tests(promtool: str, tmp_path: Path) -> None:
    """Each rule made never to fire, and each guarded rule stripped of its guard, must make
    `promtool test rules` fail: the unit tests pin both sides of every rule. (One promtool
    run for every mutant, each with only its alert's tests, to keep this quick.)"""
    mutants = {str(_with_rule_replaced(tmp_path, i, expr)): case for case, i, expr in _mutants()}
    result = run(promtool, "test", "rules", *mutants)
    verdicts = _outcomes(result.stdout)
    assert set(verdicts) == set(mutants), result.stdout
    unnoticed = [mutants[path] for path, passed in verdicts.items() if passed]
    assert unnoticed == [], "the unit tests did not notice these broken rules"
