"""switchyard: caption tasks on database polling, Redis Queue, or both, moved between them
without losing or duplicating a task. See docs/architecture.md.

The names below are the public surface for code that embeds switchyard (everything else is
internal and may move); tests/project/test_public_surface.py fails when it drifts. They load on
first use, so `import switchyard.domain` does not import the engines.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Engine": "switchyard.domain",
    "Priority": "switchyard.domain",
    "Status": "switchyard.domain",
    "Task": "switchyard.domain",
    "Mode": "switchyard.modes",
    "Settings": "switchyard.config",
    "load_settings": "switchyard.config",
    "SwitchyardError": "switchyard.errors",
    "Services": "switchyard.operations",
    "build_task": "switchyard.operations",
    "submit": "switchyard.operations",
    "get_task": "switchyard.operations",
    "cancel_task": "switchyard.operations",
    "retry_task": "switchyard.operations",
    "switch_mode": "switchyard.switch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'switchyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
