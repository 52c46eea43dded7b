"""A fake Ollama server on loopback."""

from __future__ import annotations

import io
import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image

from tests.support.http import LoopbackServer


def encoded(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, fmt)
    return out.getvalue()


PNG = encoded("PNG")


CAPTION = "A red square on a plain background."


class FakeOllama(BaseHTTPRequestHandler):
    server: FakeOllamaServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(body)
        model = body.get("model")
        if self.path != "/api/generate":
            self._json(404, {"error": "404 page not found"})
        elif model == "missing":
            self._json(404, {"error": f'model "{model}" not found, try pulling it first'})
        elif model == "flaky" and len(self.server.received) < 3:
            self._json(503, {"error": "server busy"})
        elif model == "broken":
            self._json(500, {"error": "llama runner process has terminated:\nexit status 2"})
        elif model == "badjson":
            self._raw(200, b"this is not json")
        elif model == "empty":
            self._json(200, {"model": model, "response": "  \n ", "done": True})
        elif model == "slow":
            time.sleep(1.0)
            self._json(200, {"model": model, "response": CAPTION, "done": True})
        else:
            self._json(200, {"model": model, "response": f'  "{CAPTION}"\n', "done": True})

    def do_GET(self) -> None:
        """`/api/tags` lists the pulled models; any other path is the image, so that
        `caption_image` can run end to end."""
        if self.path == "/api/tags":
            return self._json(
                200, {"models": [{"name": "llava:latest"}, {"name": "moondream:1.8b"}]}
            )
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._raw(status, json.dumps(payload).encode())

    def _raw(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


FakeOllamaServer = LoopbackServer
