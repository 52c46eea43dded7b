"""The HTTP face: the task API, the runbook's admin endpoints, metrics and the dashboard,
a thin adapter over `switchyard.operations`. `switchyard serve` runs `create_app`."""

from switchyard.web.app import create_app

__all__ = ["create_app"]
