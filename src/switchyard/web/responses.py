"""What the OpenAPI schema promises besides each route's success: the error answers every
route can give, those of the admin routes, and the error bodies' shapes. The routers declare
these once (`APIRouter(responses=...)`); a test compares them with what the app answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """An error: one line, quoting the request only as a short excerpt."""

    detail: str = Field(max_length=500)


class Unavailable(Problem):
    """The system cannot take the request now; come back after `Retry-After` seconds."""

    retry_after: int | None = Field(None, ge=0)


def _json(model: type[BaseModel]) -> dict[str, Any]:
    """The body's JSON content, declared inline: a route serving Markdown answers errors in
    JSON, and FastAPI would give a `model` the route's own content type."""
    return {"application/json": {"schema": model.model_json_schema()}}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
VALIDATION_SCHEMA = {"$ref": "#/components/schemas/HTTPValidationError"}

Responses = dict[int | str, dict[str, Any]]

# Any request: the body guard (413, 422 for a malformed JSON body) and a database or Redis
# that does not answer (503).
EVERY_ROUTE: Responses = {
    413: {"content": _json(Problem), "description": "Request body over HTTP_MAX_BODY_BYTES"},
    422: {
        "description": "Invalid request (at most 10 problems, inputs quoted as excerpts)",
        "content": {"application/json": {"schema": VALIDATION_SCHEMA}},
    },
    503: {"content": _json(Unavailable), "description": "Unavailable now", "headers": RETRY_AFTER},
}

# Routes that need the admin token.
ADMIN_ROUTES: Responses = {
    **EVERY_ROUTE,
    401: {"content": _json(Problem), "description": "Missing or wrong admin token"},
    403: {
        "content": _json(Problem),
        "description": "Admin API disabled (no SWITCHYARD_ADMIN_TOKEN)",
    },
    429: {
        "content": _json(Problem),
        "description": "Too many failed sign-ins from this client",
        "headers": RETRY_AFTER,
    },
}

REPORT = {"application/json": {"schema": {"type": "object"}}}


def unhealthy(description: str) -> Responses:
    """A 503 that carries the same report as its 200 (health: which component is down)."""
    return {503: {"description": description, "content": REPORT}}


# A check's 409 carries the same report as its 200: what the check found.
VERDICT: Responses = {409: {"description": "The check found problems", "content": REPORT}}


NOT_FOUND: Responses = {404: {"content": _json(Problem), "description": "No such item"}}
CONFLICT: Responses = {409: {"content": _json(Problem), "description": "Not allowed in this state"}}
