"""A fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import io
import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image

from tests.support.http import LoopbackServer

KEY = "sk-test-0123456789abcdef"


CAPTION = "A red square on a plain background."


def encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(out, fmt)
    return out.getvalue()


PNG = encoded("PNG")


class FakeOpenAI(BaseHTTPRequestHandler):
    openai_server: FakeOpenAIServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((dict(self.headers), body))
        model, calls = body.get("model"), len(self.server.received)
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "Not Found"}})
        elif self.headers.get("Authorization") != f"Bearer {KEY}":
            self._json(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
        elif model == "throttled" and calls < 3:
            self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0.2"})
        elif model == "down":
            self._json(503, {"error": {"message": "model is loading"}})
        elif model == "bad-request":
            self._json(400, {"error": {"message": "image_url is not supported by this model"}})
        elif model == "refuser":
            self._message({"role": "assistant", "content": None, "refusal": "I can't help."})
        elif model == "filtered":
            self._message({"role": "assistant", "content": ""}, finish_reason="content_filter")
        elif model == "empty":
            self._message({"role": "assistant", "content": "  \n "})
        elif model == "parts":
            parts = [{"type": "text", "text": "A red"}, {"type": "text", "text": "square."}]
            self._message({"role": "assistant", "content": parts})
        elif model == "slow":
            time.sleep(1.0)
            self._message({"role": "assistant", "content": CAPTION})
        else:
            self._message({"role": "assistant", "content": f' "{CAPTION}"\n'})

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                return self._json(401, {"error": {"message": "Incorrect API key provided"}})
            return self._json(200, {"object": "list", "data": [{"id": "llava", "object": "model"}]})
        self.send_response(200)  # the same server hosts the image, for end-to-end runs
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def _message(self, message: dict[str, Any], finish_reason: str = "stop") -> None:
        choice = {"index": 0, "message": message, "finish_reason": finish_reason}
        self._json(200, {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice]})

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


FakeOpenAIServer = LoopbackServer
