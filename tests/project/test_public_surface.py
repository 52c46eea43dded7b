"""The public surface of `switchyard` (src/switchyard/__init__.py) does not drift."""

from __future__ import annotations

import subprocess
import sys

import pytest

import switchyard

PINNED = {
    "Engine",
    "Mode",
    "Priority",
    "Services",
    "Settings",
    "Status",
    "SwitchyardError",
    "Task",
    "build_task",
    "cancel_task",
    "get_task",
    "load_settings",
    "retry_task",
    "submit",
    "switch_mode",
}


def test_the_exported_names_are_the_pinned_ones_and_each_resolves() -> None:
    assert set(switchyard.__all__) == PINNED
    for name in PINNED:
        assert getattr(switchyard, name) is not None, name


def test_an_internal_name_is_not_public() -> None:
    with pytest.raises(AttributeError, match="TaskStore"):
        switchyard.TaskStore  # noqa: B018


def test_importing_the_ground_does_not_import_the_engines() -> None:
    code = "import sys, switchyard.domain; print('rq' in sys.modules, 'redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
