"""Fixtures of the captioning tests: loopback servers for fetches (plain and TLS), the
builtin provider's drawn images, and fakes of the Ollama and OpenAI model servers."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.drawn_images import ImageHandler
from tests.support.fetch_server import (
    ImageServer,
    self_signed,
)
from tests.support.http import LoopbackServer, serving
from tests.support.ollama import FakeOllama, FakeOllamaServer
from tests.support.openai import FakeOpenAI, FakeOpenAIServer


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with serving(ImageServer()) as running:
        yield running


@pytest.fixture
def _clear_hits(server: ImageServer) -> None:
    server.hits.clear()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ImageServer, Path]]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    server = ImageServer()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.seen_sni = seen_sni  # type: ignore[attr-defined]
    with serving(server) as running:
        yield running, cert


@pytest.fixture(scope="module")
def ollama() -> Iterator[LoopbackServer]:
    with serving(LoopbackServer(FakeOllama)) as running:
        yield running


@pytest.fixture
def _clear_ollama(ollama: FakeOllamaServer) -> None:
    ollama.received.clear()


@pytest.fixture(scope="module")
def openai_server() -> Iterator[LoopbackServer]:
    with serving(LoopbackServer(FakeOpenAI)) as running:
        yield running


@pytest.fixture
def _clear_openai(openai_server: FakeOpenAIServer) -> None:
    openai_server.received.clear()
