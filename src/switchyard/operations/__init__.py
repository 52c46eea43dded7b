"""The operations layer: what the CLI, the HTTP API and the dashboard all call.

Faces stay thin: they parse their input, call one function here, and render the result.
Each area has its module (tasks, ...); this package re-exports the task operations, which
every face uses.
"""

from switchyard.operations.services import Services
from switchyard.operations.tasks import (
    cancel_task,
    ensure_accepting,
    get_task,
    init_schema,
    list_tasks,
    overview,
    parse_task_id,
    retry_task,
    submit,
)
from switchyard.validation import build_task, validate_url

__all__ = [
    "Services",
    "build_task",
    "cancel_task",
    "ensure_accepting",
    "get_task",
    "init_schema",
    "list_tasks",
    "overview",
    "parse_task_id",
    "retry_task",
    "submit",
    "validate_url",
]
