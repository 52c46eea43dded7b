"""Schema honesty: every answer the app gives is declared in its OpenAPI schema, with the
content type it is served in (schemathesis, in test_app_fuzz.py, checks the bodies)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from switchyard.operations import Services

EVERY = {"413", "422", "503"}
ADMIN = {"401", "403", "429"}


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in app.openapi()["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_route_declares_the_guards_answers(app: FastAPI) -> None:
    found = operations(app)
    assert len(found) > 30
    for method, path, operation in found:
        if path == "/metrics":
            continue  # reads nothing that can fail (an outage is a metric), takes no body
        declared = set(operation["responses"])
        assert declared >= EVERY, (method, path, EVERY - declared)
        if path.startswith("/admin/"):
            assert declared >= ADMIN, (method, path, ADMIN - declared)
            assert operation["security"] == [{"HTTPBearer": []}]


def test_error_answers_are_declared_as_json_with_a_schema(app: FastAPI) -> None:
    for method, path, operation in operations(app):
        for code, response in operation["responses"].items():
            if code.startswith("4") or code in ("413", "503"):
                content = response.get("content", {})
                assert list(content) == ["application/json"], (method, path, code)
        if "429" in operation["responses"]:
            assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_served_content_types_are_the_declared_ones(
    app: FastAPI, client: TestClient, admin: dict[str, str], services: Services
) -> None:
    spec = app.openapi()["paths"]
    report = spec["/admin/runs/{run_id}/report"]["get"]["responses"]
    assert list(report["200"]["content"]) == ["text/markdown"]
    metrics = spec["/metrics"]["get"]["responses"]
    assert list(metrics["200"]["content"]) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    missing = client.get("/admin/runs/nope/report", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"


def test_declared_answers_happen(client: TestClient, admin: dict[str, str]) -> None:
    """Each declared guard answer, met for real on an admin route."""
    assert client.get("/admin/mode").status_code == 401
    too_big = client.post("/admin/mode", content=b"x" * (2 * 1024 * 1024), headers=admin)
    assert too_big.status_code == 413
    bad = client.post(
        "/admin/mode", content=b"{NaN}", headers={**admin, "Content-Type": "application/json"}
    )
    assert bad.status_code == 422
