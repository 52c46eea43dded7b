"""Safe fetching against a real HTTP server on 127.0.0.1: every refusal, and the happy path."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from switchyard.captioning import fetch_image
from switchyard.captioning.addresses import address_kind
from switchyard.captioning.fetch import AddressPolicy
from switchyard.config import Settings, load_settings
from switchyard.errors import CaptionError, FetchRefused
from tests.support.fetch_server import PNG, ImageServer

pytestmark = pytest.mark.usefixtures("_clear_hits")

LOOPBACK_ONLY = ["127.0.0.1/32"]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"fetch_allow_private": False, "fetch_timeout": 5.0}
    values.update(overrides)
    return load_settings(**values)


def refused(url: str, **kwargs: Any) -> str:
    """Fetch `url`, expecting a refusal, and return its message."""
    s = kwargs.pop("settings", None) or settings()
    with pytest.raises(FetchRefused) as info:
        fetch_image(url, s, **kwargs)
    return str(info.value)


# --- addresses -------------------------------------------------------------------------


def test_loopback_url_is_refused_by_default(server: ImageServer) -> None:
    assert refused(server.url("/img.png")) == "refused: 127.0.0.1 is a loopback address"
    assert server.hits == []  # refused before connecting


def test_loopback_url_is_allowed_when_private_fetching_is_enabled(server: ImageServer) -> None:
    assert fetch_image(server.url("/img.png"), settings(fetch_allow_private=True)) == PNG


def test_fetches_share_one_tls_context(
    server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the CA bundle costs ~25 ms: built once per process, not once per fetch (a
    drill's standby worker fell behind when every fetch built two)."""
    built: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    fetch_image(server.url("/img.png"), settings(fetch_allow_private=True))  # may build one
    before = len(built)
    for _ in range(5):
        assert fetch_image(server.url("/img.png"), settings(fetch_allow_private=True)) == PNG
    assert len(built) == before


def test_hostname_resolving_to_loopback_is_refused(server: ImageServer) -> None:
    message = refused(server.url("/img.png", host="localhost"))
    assert message.startswith("refused: localhost resolves to ")
    assert message.endswith("a loopback address")


def test_ip_literal_in_private_range_is_refused() -> None:
    assert refused("http://10.0.0.5/cat.png") == "refused: 10.0.0.5 is a private address"
    assert refused("http://[::1]/cat.png") == "refused: ::1 is a loopback address"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.5", "a private address"),
        ("192.168.1.1", "a private address"),
        ("127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("0.0.0.0", "an unspecified address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("::ffff:10.0.0.5", "a private address (embedded 10.0.0.5)"),
        ("::ffff:127.0.0.1", "a loopback address (embedded 127.0.0.1)"),
        ("2002:a00:1::", "a private address (embedded 10.0.0.1)"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_policy_names_the_host_and_the_address() -> None:
    policy = AddressPolicy()
    with pytest.raises(FetchRefused, match=r"^refused: cdn\.example resolves to 10\.1\.2\.3, a "):
        policy.check("cdn.example", ipaddress.ip_address("10.1.2.3"))
    policy.check("cdn.example", ipaddress.ip_address("93.184.216.34"))  # public: no error
    AddressPolicy(exempt=(ipaddress.ip_network("10.0.0.0/8"),)).check(
        "x", ipaddress.ip_address("10.1.2.3")
    )


def test_connection_is_pinned_to_the_resolved_ip_and_keeps_the_host_header(
    server: ImageServer,
) -> None:
    url = server.url("/img.png", host="localhost")
    assert fetch_image(url, settings(fetch_allow_private=True)) == PNG
    path, headers = server.hits[-1]
    assert path == "/img.png"
    assert headers["Host"] == f"localhost:{server.port}"
    assert headers["Accept-Encoding"] == "identity"


# --- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/cat.png", "refused: scheme ftp is not allowed (http and https only)"),
        ("file:///etc/passwd", "refused: scheme file is not allowed (http and https only)"),
        ("gopher://example.com/", "refused: scheme gopher is not allowed (http and https only)"),
        ("not a url", "refused: malformed URL (expected an absolute http:// or https:// URL)"),
        ("//example.com/cat.png", "refused: malformed URL (expected an absolute"),
        ("http://", "refused: malformed URL (no host)"),
        ("http://example.com:notaport/", "refused: malformed URL (Invalid port: 'notaport')"),
        ("http://ex\x00ample.com/", "refused: malformed URL (Invalid non-printable ASCII"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    assert refused(url, settings=settings(fetch_allow_private=True)).startswith(message)


# --- redirects -------------------------------------------------------------------------


def test_relative_redirect_is_followed(server: ImageServer) -> None:
    url = server.url("/redirect?to=/img.png")
    assert fetch_image(url, settings(), exempt=LOOPBACK_ONLY) == PNG
    assert [path for path, _ in server.hits] == ["/redirect?to=/img.png", "/img.png"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://10.0.0.5/cat.png", "refused: 10.0.0.5 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a link-local"),
        ("http://127.0.0.2/cat.png", "refused: 127.0.0.2 is a loopback address"),
        ("file:///etc/passwd", "refused: scheme file is not allowed"),
    ],
)
def test_redirect_to_a_forbidden_target_is_refused(
    server: ImageServer, target: str, message: str
) -> None:
    # 127.0.0.1 is exempt so the first hop succeeds; the redirect hop must still be vetted.
    assert refused(server.url(f"/redirect?to={target}"), exempt=LOOPBACK_ONLY).startswith(message)
    assert len(server.hits) == 1


def test_redirect_loop_stops_after_five_redirects(server: ImageServer) -> None:
    assert refused(server.url("/loop"), exempt=LOOPBACK_ONLY) == "refused: more than 5 redirects"
    assert len(server.hits) == 6  # the original request and five redirects


# --- responses -------------------------------------------------------------------------


def test_non_image_content_type_is_refused(server: ImageServer) -> None:
    message = refused(server.url("/page.html"), exempt=LOOPBACK_ONLY)
    assert message == "refused: content-type text/html is not an image"


def test_missing_content_type_is_refused(server: ImageServer) -> None:
    message = refused(server.url("/no-type"), exempt=LOOPBACK_ONLY)
    assert message == "refused: content-type (none) is not an image"


def test_declared_oversized_body_is_refused(server: ImageServer) -> None:
    message = refused(
        server.url("/big"), settings=settings(fetch_max_bytes=1000), exempt=LOOPBACK_ONLY
    )
    assert message == "refused: image larger than 1000 bytes"


def test_undeclared_oversized_body_is_cut_off_while_streaming(server: ImageServer) -> None:
    s = settings(fetch_max_bytes=4096)
    assert refused(server.url("/big-streamed"), settings=s, exempt=LOOPBACK_ONLY) == (
        "refused: image larger than 4096 bytes"
    )


def test_compressed_body_is_refused(server: ImageServer) -> None:
    message = refused(server.url("/gzip"), exempt=LOOPBACK_ONLY)
    assert message == "refused: content-encoding gzip is not supported"


def test_http_error_status_is_a_caption_error_not_a_refusal(server: ImageServer) -> None:
    with pytest.raises(CaptionError) as info:
        fetch_image(server.url("/missing.png"), settings(), exempt=LOOPBACK_ONLY)
    assert not isinstance(info.value, FetchRefused)
    assert str(info.value) == "image URL answered HTTP 404 Not Found"


def test_connection_refused_is_one_line_caption_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CaptionError) as info:
        fetch_image(f"http://127.0.0.1:{port}/x.png", settings(), exempt=LOOPBACK_ONLY)
    assert not isinstance(info.value, FetchRefused)
    assert str(info.value).startswith("could not fetch image from 127.0.0.1: ")
    assert "\n" not in str(info.value)


def test_slow_response_times_out(server: ImageServer) -> None:
    started = time.monotonic()
    with pytest.raises(CaptionError, match=r"^timed out fetching image after 0\.3s$"):
        fetch_image(server.url("/slow"), settings(fetch_timeout=0.3), exempt=LOOPBACK_ONLY)
    assert time.monotonic() - started < 0.9


def test_trickling_body_hits_the_overall_deadline(server: ImageServer) -> None:
    started = time.monotonic()
    with pytest.raises(CaptionError, match=r"^timed out fetching image after 0\.4s$"):
        fetch_image(server.url("/drip"), settings(fetch_timeout=0.4), exempt=LOOPBACK_ONLY)
    assert time.monotonic() - started < 1.0  # the drip alone would take 3 s


@pytest.mark.parametrize("path", ["/dribble-headers", "/dribble-body"])
def test_a_server_dribbling_one_line_a_second_cannot_outlast_the_deadline(
    server: ImageServer, path: str
) -> None:
    """Each piece comes within any per-read timeout; only a whole-fetch deadline ends it.
    Without one, the headers take 8 s and the body ends at the first byte after 1.5 s."""
    started = time.monotonic()
    with pytest.raises(CaptionError, match=r"^timed out fetching image after 1\.5s$"):
        fetch_image(server.url(path), settings(fetch_timeout=1.5), exempt=LOOPBACK_ONLY)
    assert time.monotonic() - started < 1.5 + 0.35


# --- https: the pinned connection still sends SNI and verifies the certificate's name ----


def test_https_sends_sni_for_the_name_while_connecting_to_the_ip(
    tls_server: tuple[ImageServer, Path],
) -> None:
    server, cert = tls_server
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://localhost:{server.port}/img.png"
    assert fetch_image(url, settings(fetch_allow_private=True), verify=trust) == PNG
    assert server.seen_sni[-1] == "localhost"  # type: ignore[attr-defined]


def test_https_certificate_must_match_the_requested_name(
    tls_server: tuple[ImageServer, Path],
) -> None:
    server, cert = tls_server
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{server.port}/img.png"  # the certificate is for localhost only
    with pytest.raises(CaptionError, match=r"^could not fetch image from 127\.0\.0\.1: .*CERTIF"):
        fetch_image(url, settings(fetch_allow_private=True), verify=trust)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://xn--a/cat.png", "refused: malformed host (Codepoint U+0080 "),
        ("http://xn--/cat.png", "refused: malformed host (Malformed A-label"),
        ("http://xn--zz-/cat.png", "refused: malformed host (A-label must not end with a hyphen"),
        ("http://a..b/cat.png", "refused: malformed host ("),
        (f"http://{'a' * 64}.example/cat.png", "refused: malformed host ("),
    ],
)
def test_hosts_that_do_not_parse_are_refused_not_internal_errors(url: str, message: str) -> None:
    assert refused(url).startswith(message)


def test_ietf_protocol_assignment_addresses_are_refused_before_connecting() -> None:
    """Python 3.11 calls 192.0.0.8 and fec0::1 public; the fetcher connected to 192.0.0.8."""
    assert refused("http://192.0.0.8/cat.png") == (
        "refused: 192.0.0.8 is an IETF protocol assignment address"
    )
    assert refused("http://[fec0::1]/cat.png") == "refused: fec0::1 is a site-local address"


def test_unresolvable_host_is_one_line_caption_error() -> None:
    # RFC 6761: .invalid never resolves, so the resolver answers NXDOMAIN at once.
    with pytest.raises(CaptionError) as info:
        fetch_image("http://no-such-host.invalid/cat.png", settings(fetch_timeout=3.0))
    assert not isinstance(info.value, FetchRefused)
    assert str(info.value).startswith("could not resolve no-such-host.invalid: ")
