"""A bounded fuzz run of the app's OpenAPI schema (schemathesis): no input makes a 5xx.

Admin operations run with the token, so their bodies are fuzzed too, not just refused. Each
example starts with the maintenance state cleared, so a fuzzed pause cannot turn the task
API's answers into (legitimate) 503s for the examples after it.
"""

from __future__ import annotations

import os
import time

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES
from schemathesis.schemas import APIOperation

from switchyard.operations import Services, maintenance
from switchyard.web import create_app
from tests.support.web import TOKEN

# Per operation; raise it (FUZZ_EXAMPLES=50) for a deeper run than the suite's quick one.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
# Every check is on. Two expectations are widened, each for one operation: a maintenance
# window that would already have ended (a `start_time` in the past) is refused with 422, and
# whether a time is past depends on the clock, which no schema can say; a task list `cursor`
# the server did not hand out is refused with 422, and which cursors it handed out no schema
# can say either (it is opaque: only its alphabet is declared).
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-path": "/admin/maintenance/schedule",
                "include-method": "POST",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, 422]
                    }
                },
            },
            {
                "include-path": "/api/tasks",
                "include-method": "GET",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, 422]
                    }
                },
            },
        ]
    }
)
# A started rollback runs on in a background thread past the example that started it; runs
# are tested in test_rollback_api.py.
EXCLUDED = ("/admin/rollback/",)


def reset(services: Services) -> None:
    """Clear what an earlier example paused (one read when nothing was: writes are fsynced)."""
    state = services.store.all_state()
    if state.get(maintenance.PAUSED) or state.get(maintenance.EMERGENCY):
        maintenance.resume_submissions(services, "fuzz")
        maintenance.disable_emergency_mode(services, "fuzz")
    if state.get(maintenance.WINDOWS):
        services.store.set_state(maintenance.WINDOWS, [], "fuzz")


def fuzz(operation: APIOperation, services: Services) -> None:
    """Up to MAX_EXAMPLES generated requests to one operation, each checked by schemathesis
    (no 5xx, responses that match the schema)."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        reset(services)
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})

    run()


def test_no_input_makes_a_server_error(fuzz_services: Services) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9, so the loop is ours.
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(fuzz_services), config=CONFIG
    )
    failures = []
    operations = [
        r.ok() for r in schema.exclude(path_regex="|".join(EXCLUDED)).get_all_operations()
    ]
    assert len(operations) > 15
    for operation in operations:
        started = time.monotonic()
        try:
            fuzz(operation, fuzz_services)
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
        print(f"{operation.label}: {time.monotonic() - started:.2f}s")  # shown with -s
    assert not failures, "\n\n".join(failures)
