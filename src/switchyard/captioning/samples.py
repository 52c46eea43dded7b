"""Images of switchyard's own: the bundled sample for `switchyard try`, and a loopback server
that serves one image for the length of a command (`try`, `canary --serve-local`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from PIL import Image

from switchyard.captioning.builtin import open_image
from switchyard.errors import CaptionError, UsageError


def sample_image() -> bytes:
    """A small drawing (a red house under a sun on green hills), shipped with the package."""
    return resources.files("switchyard.captioning").joinpath("sample.png").read_bytes()


def media_type(image: bytes, max_pixels: int = 50_000_000) -> str:
    """The image's media type (image/png, ...); UsageError if the bytes are no image."""
    try:
        with open_image(image, max_pixels) as decoded:
            return Image.MIME.get(decoded.format or "", "application/octet-stream")
    except CaptionError as exc:
        raise UsageError(f"not an image switchyard can caption: {exc}") from None


@contextlib.contextmanager
def serve_image(body: bytes, path: str, content_type: str = "image/png") -> Iterator[str]:
    """Serve `body` at `path` on 127.0.0.1 (a free port) while the block runs; yields its URL.
    Only workers allowed to fetch from loopback (FETCH_ALLOW_PRIVATE) can reach it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != path:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="local-image", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
