"""A loopback image server whose routes misbehave in every way a fetch must survive."""

from __future__ import annotations

import datetime
import io
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from PIL import Image


def png_bytes(
    size: tuple[int, int] = (30, 20), colour: tuple[int, int, int] = (0, 90, 200)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


PNG = png_bytes()


class Handler(BaseHTTPRequestHandler):
    """Routes by path; the server records every request's path and headers."""

    server: ImageServer

    def do_GET(self) -> None:
        self.server.hits.append((self.path, dict(self.headers.items())))
        path, _, query = self.path.partition("?")
        route = ROUTES.get(path)
        try:
            if route is None:
                self._send(404, b"no such page", "text/plain")
            else:
                route(self, parse_qs(query))
        except ConnectionError:
            pass  # the fetcher hung up (timeout, size cap): exactly what these tests provoke

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _image(h: Handler, q: dict[str, list[str]]) -> None:
    h._send(200, PNG, "image/png; charset=binary")


def _html(h: Handler, q: dict[str, list[str]]) -> None:
    h._send(200, b"<html><body>hello</body></html>", "text/html; charset=utf-8")


def _no_type(h: Handler, q: dict[str, list[str]]) -> None:
    h.send_response(200)
    h.end_headers()
    h.wfile.write(PNG)


def _big_declared(h: Handler, q: dict[str, list[str]]) -> None:
    h._send(200, b"\0" * 5000, "image/png")


def _big_streamed(h: Handler, q: dict[str, list[str]]) -> None:
    """No Content-Length (HTTP/1.0, body ends at close): only counting can stop it."""
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.end_headers()
    for _ in range(50):
        h.wfile.write(b"\0" * 1000)


def _gzip(h: Handler, q: dict[str, list[str]]) -> None:
    h._send(200, PNG, "image/png", {"Content-Encoding": "gzip"})


def _redirect(h: Handler, q: dict[str, list[str]]) -> None:
    h._send(302, b"", "text/plain", {"Location": q["to"][0]})


def _loop(h: Handler, q: dict[str, list[str]]) -> None:
    h._send(301, b"", "text/plain", {"Location": "/loop"})


def _slow(h: Handler, q: dict[str, list[str]]) -> None:
    time.sleep(1.0)
    _image(h, q)


def _drip(h: Handler, q: dict[str, list[str]]) -> None:
    """Headers at once, then one byte every 50 ms: each read is quick, the whole is not."""
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.end_headers()
    for _ in range(60):
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.05)


def _dribble_headers(h: Handler, q: dict[str, list[str]]) -> None:
    """One header line a second: every read is quick, the headers never end (well, after 8 s)."""
    _dribble(h, [b"HTTP/1.1 200 OK\r\n"] + [b"X-Pad: %d\r\n" % i for i in range(8)])


def _dribble_body(h: Handler, q: dict[str, list[str]]) -> None:
    """Headers at once, then one body byte a second."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 8\r\n\r\n"
    _dribble(h, [head] + [b"x"] * 8)


def _dribble(h: Handler, pieces: list[bytes]) -> None:
    h.close_connection = True
    try:
        for piece in pieces:
            h.wfile.write(piece)
            h.wfile.flush()
            time.sleep(1.0)
    except OSError:
        pass  # the fetcher hung up, as it should


ROUTES: dict[str, Callable[[Handler, dict[str, list[str]]], None]] = {
    "/img.png": _image,
    "/page.html": _html,
    "/no-type": _no_type,
    "/big": _big_declared,
    "/big-streamed": _big_streamed,
    "/gzip": _gzip,
    "/redirect": _redirect,
    "/loop": _loop,
    "/slow": _slow,
    "/drip": _drip,
    "/dribble-headers": _dribble_headers,
    "/dribble-body": _dribble_body,
}


class ImageServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[tuple[str, dict[str, str]]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
