"""Limits on what a request may send: a bounded body (413 before it is read, on a real
uvicorn), strict JSON (every malformed body a 4xx on every route that takes one), and error
bodies that quote the client's input only as a short excerpt."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from switchyard.operations import Services
from tests.support.web import TASK, TOKEN, Uvicorn

BIG = 30 * 1024 * 1024
LIMIT = 1024 * 1024  # the default

MALFORMED = {
    "NaN": b'{"image_url": "https://a.example/1.png", "user_id": NaN}',
    "Infinity": b'{"reason": "x", "window_minutes": Infinity}',
    "-Infinity": b'{"reason": "x", "duration": -Infinity}',
    "lone surrogate": b'{"reason": "\\ud800", "mode": "db"}',
    "lone surrogate key": b'{"\\udfff": 1}',
    "invalid UTF-8": b'{"reason": "caf\xe9"}',
    "long number": b'{"user_id": ' + b"9" * 5000 + b"}",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


def task_count(services: Services) -> int:
    return sum(sum(by_priority.values()) for by_priority in services.store.counts().values())


def body_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route whose schema takes a JSON body, parameters filled in."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                filled = path.replace("{kind}", "planned").replace("{task_id}", "t1")
                found.append((method.upper(), filled.replace("{run_id}", "r1")))
    return found


def test_every_malformed_json_body_is_a_4xx_on_every_route(
    app: FastAPI, client: TestClient, admin: dict[str, str], services: Services
) -> None:
    routes = body_routes(app)
    assert ("POST", "/api/tasks") in routes and ("POST", "/admin/mode") in routes
    assert len(routes) >= 12, routes
    headers = {**admin, "Content-Type": "application/json"}
    for method, path in routes:
        for name, body in MALFORMED.items():
            response = client.request(method, path, content=body, headers=headers)
            assert response.status_code == 422, (name, path, response.text)
            assert response.json()["detail"][0]["type"] == "json_invalid", (name, path)
    assert task_count(services) == 0


def test_the_task_api_refuses_a_malformed_body_without_a_token_too(client: TestClient) -> None:
    response = client.post(
        "/api/tasks", content=MALFORMED["NaN"], headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422


def test_a_422_echoes_no_more_than_an_excerpt(client: TestClient, services: Services) -> None:
    long_url = "https://" + "a" * 500 + "/ x.png"  # fails the pattern: a space
    batch = {"tasks": [{**TASK, "image_url": long_url, "user_id": -1}] * 1000}
    response = client.post("/api/tasks/batch", json=batch)
    assert response.status_code == 422
    assert len(response.content) < 4096, len(response.content)
    errors = response.json()["detail"]
    assert 1 <= len(errors) <= 10
    assert all(len(str(e.get("input", ""))) <= 120 for e in errors)
    assert task_count(services) == 0


def test_a_long_number_is_not_echoed_whole(client: TestClient) -> None:
    response = client.post("/api/tasks", json={**TASK, "user_id": int("9" * 4000)})
    assert response.status_code == 422
    assert len(response.content) < 600


def test_a_usage_error_message_is_cut_short(client: TestClient) -> None:
    # A control character: refused by validate_url, whose message quotes the URL.
    url = "https://a.example/\u0001" + "b" * 2000
    response = client.post("/api/tasks", json={**TASK, "image_url": url})
    assert response.status_code == 422, response.text
    assert len(response.content) < 600


def test_a_body_over_a_configured_limit_is_413(services: Services) -> None:
    from switchyard.web import create_app
    from tests.support.web import build_services

    small = build_services(
        services.settings.database_url, switchyard_admin_token=TOKEN, http_max_body_bytes=100
    )
    with TestClient(create_app(small)) as client:
        response = client.post("/api/tasks", json={**TASK, "image_url": "https://a.b/" + "c" * 90})
        assert response.status_code == 413
        assert client.post("/api/tasks", json=TASK).status_code == 201


# -- a real server (the `uvicorn_server` fixture) -------------------------------------------------


@dataclass
class Upload:
    status_line: bytes = b""
    seconds: float = 0.0
    body: bytes = b""
    reset: bool = False


def upload(server: Uvicorn, chunked: bool) -> Upload:
    """POST 30 MB of JSON to the batch route from a raw socket, as curl does: the length
    declared with `Expect: 100-continue`, or streamed in chunks without one. Sends until
    the server answers or hangs up; returns its answer and how long it took to come."""
    framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG}".encode()
    head = (
        b"POST /api/tasks/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\n" + framing + b"\r\n\r\n"
    )
    result = Upload()
    answered = threading.Event()
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head)
        sender = threading.Thread(target=_send, args=(sock, chunked, answered), daemon=True)
        sender.start()
        answer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                if b"HTTP/1.1 100" in answer.split(b"\r\n", 1)[0]:
                    answer = answer.partition(b"\r\n\r\n")[2]
                if answer.count(b"\r\n\r\n") and len(answer.partition(b"\r\n\r\n")[2]) > 20:
                    break
        except ConnectionResetError:
            result.reset = True
        answered.set()
        result.seconds = time.monotonic() - started
        result.status_line = answer.split(b"\r\n", 1)[0]
        result.body = answer.partition(b"\r\n\r\n")[2]
        sender.join(timeout=30)
    return result


def _send(sock: socket.socket, chunked: bool, answered: threading.Event) -> None:
    """Send the body in 64 KiB pieces until the server answers; a slow client's pace, so
    the answer can come before the client has sent everything."""
    piece = b'{"tasks": [' + b" " * (64 * 1024 - 11)
    sent = 0
    try:
        while sent < BIG and not answered.is_set():
            frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
            sock.sendall(frame)
            sent += len(piece)
    except OSError:  # the server answered and hung up: what it should do
        return


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_30_mb_post_gets_a_quick_413_without_the_server_holding_it(
    uvicorn_server: Uvicorn, chunked: bool
) -> None:
    before = uvicorn_server.rss_kib()
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:  # other clients meanwhile
        with httpx.Client(base_url=uvicorn_server.url, timeout=10) as other:
            while not stop.is_set():
                started = time.monotonic()
                assert other.get("/api/maintenance/status").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.02)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        result = upload(uvicorn_server, chunked)
        deadline = time.monotonic() + 10
        while len(latencies) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        prober.join(timeout=15)
    assert result.status_line.startswith(b"HTTP/1.1 413"), result.status_line
    assert result.seconds < 2.0, result.seconds
    assert len(result.body) < 300
    grown_mib = (uvicorn_server.rss_kib() - before) / 1024
    assert grown_mib < 10, f"the server grew by {grown_mib:.0f} MiB"
    assert latencies and max(latencies) < 1.0, max(latencies, default=None)
    worst = max(latencies) * 1000
    print(f"413 in {result.seconds:.3f}s; RSS +{grown_mib:.1f} MiB; others' worst {worst:.0f} ms")
