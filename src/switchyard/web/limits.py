"""Limits on what a request may send, enforced before any route runs.

`BodyGuard` is an ASGI middleware: a Content-Length over the limit is refused with 413 before
a byte of the body is read; a body without one (chunked) is read chunk by chunk and refused as
soon as it passes the limit, so a 30 MB POST costs the server at most the limit in memory and
never blocks the event loop for longer than one chunk. A JSON body within the limit is then
parsed strictly once: what Python's json module accepts but JSON does not (NaN, Infinity,
-Infinity, lone surrogates such as "\\ud800", bytes that are not UTF-8) is a 422 here, instead
of a 500 later when the value is written or echoed back.

Error bodies quote what the client sent only as a short excerpt (`excerpt`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXCERPT_CHARS = 120  # the most of a client's own input an error body repeats
MAX_DETAIL_CHARS = 300  # an error message, its excerpt included


class BadBody(Exception):
    """A body this server will not parse; the message names why, without quoting it."""


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` cut to `limit` characters, marked when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refuse_constant(name: str) -> None:
    raise BadBody(f"{name} is not a JSON number")


def check_json(body: bytes) -> None:
    """Raise BadBody unless `body` is JSON as RFC 8259 defines it, in UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("the body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
        # A lone surrogate decodes into a str that no UTF-8 writer (database, response) takes.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadBody("the body holds a lone surrogate (\\ud800-\\udfff)") from None
    except json.JSONDecodeError as exc:
        raise BadBody(f"invalid JSON at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError):  # e.g. an integer of 5,000 digits, or deep nesting
        raise BadBody("invalid JSON: a number too long or nesting too deep") from None


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";")[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise BadBody("Content-Length is not a number") from None
    return None


class TooLarge(Exception):
    pass


class BodyGuard:
    """Bound every request body to `max_bytes` and parse JSON bodies strictly (see above)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
            if body and _is_json(scope):
                check_json(body)
        except TooLarge:
            detail = {"detail": f"request body over {self.max_bytes} bytes"}
            await _answer(send, 413, detail, close=True)
            return
        except BadBody as exc:
            await _answer(send, 422, _validation_shape(str(exc)))
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            raise TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _validation_shape(msg: str) -> dict[str, Any]:
    """The shape of FastAPI's own 422, so clients and the schema see one kind of answer."""
    return {"detail": [{"loc": ["body"], "msg": msg, "type": "json_invalid"}]}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, for routes that wait for it

    return replay


async def _answer(send: Send, status: int, content: dict[str, Any], close: bool = False) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of an oversized body is never read
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["BodyGuard", "check_json", "excerpt"]
