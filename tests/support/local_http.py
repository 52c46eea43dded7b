"""Local HTTP servers the tests run against: a tiny image server for the real captioning
handler, and a receiver of webhook posts."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (30, 60, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageServer:
    """Serves a tiny PNG at any path. `/slow/...` paths answer after `delay` seconds, but only
    the first time each is asked (so a recovered task runs fast); `/missing/...` is a 404;
    `/text/...` is served as text/html (a fetch the worker must refuse, not retry)."""

    def __init__(self, delay: float = 2.0) -> None:
        self.delay = delay
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._png = tiny_png()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                first = server._count(self.path) == 1
                if self.path.startswith("/missing/"):
                    self.send_error(404)
                    return
                if self.path.startswith("/slow/") and first:
                    time.sleep(server.delay)
                kind = "text/html" if self.path.startswith("/text/") else "image/png"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(server._png)))
                self.end_headers()
                self.wfile.write(server._png)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _count(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WebhookReceiver:
    """A local HTTP server that records every POST (path and JSON body). `replies` lists the
    status codes to answer, in order (then 200); while `gate` is set, each answer waits until
    `release()` (or 60 s)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, object]]] = []
        self.replies: list[int] = []
        self.gate: threading.Event | None = None
        self.attempts = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.gate is not None:
                    receiver.gate.wait(60)
                code = receiver._record(self.path, body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _record(self, path: str, body: bytes) -> int:
        with self._lock:
            self.attempts += 1
            code = self.replies.pop(0) if self.replies else 200
            if code < 300:
                self.received.append((path, json.loads(body)))
            return code

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def events(self, path: str | None = None) -> list[str]:
        """The `event` of every JSON body received (at `path`, if given)."""
        return [str(b.get("event")) for p, b in list(self.received) if path is None or p == path]

    def hold(self) -> None:
        self.gate = threading.Event()

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
