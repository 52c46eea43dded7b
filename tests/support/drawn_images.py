"""Images drawn with Pillow for the builtin provider, and a loopback server for them."""

from __future__ import annotations

import io
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def navy_and_white(size: tuple[int, int] = (1200, 800), navy_share: float = 0.3) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste((0, 0, 128), (0, 0, int(size[0] * navy_share), size[1]))
    return image


IMAGES: dict[str, bytes] = {
    "/photo.png": encode(navy_and_white((600, 400))),
    "/corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
    "/bomb.png": encode(Image.new("L", (3000, 3000))),
}


class ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = IMAGES.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "image/png" if body is not None else "text/plain")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass
