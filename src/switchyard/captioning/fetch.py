"""Fetch an image from an untrusted URL without letting the URL reach inside our network.

Image URLs come from posts on the open fediverse, so anyone can point us at
`http://169.254.169.254/`, at an internal admin page, or at a name whose DNS answer
changes between our check and our connect (DNS rebinding). The defences, in order:

* only absolute `http`/`https` URLs;
* the host is resolved once, by us, and *every* address it resolves to must be public
  (not private, loopback, link-local, multicast, reserved or unspecified, including
  IPv4 addresses hidden in IPv4-mapped, 6to4 and Teredo IPv6 addresses);
* the connection is pinned to a vetted address (see `PinnedTransport`);
* redirects are followed by hand, at most `MAX_REDIRECTS`, each hop vetted again;
* the body is streamed and cut off at `fetch_max_bytes`; the content-type must be image/*;
* the whole fetch is one deadline, `fetch_timeout` after it began: DNS, connect, TLS,
  every header line, every body chunk and every redirect. httpx's timeouts apply per
  socket operation (a server sending one header line a second never trips them), so the
  connections are made through `DeadlineBackend`, whose every socket wait is cut to what
  is left of the deadline; the fetch ends within `fetch_timeout` plus scheduling slack.
* the host must parse: a malformed punycode label (`xn--a`), an empty or over-long label
  is refused once, like any other bad URL, rather than failing as an internal error.

Refusals raise `FetchRefused` with one line; network failures raise `CaptionError`.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import httpcore
import httpx

from switchyard.captioning.addresses import IPAddress, Network, address_kind
from switchyard.config import Settings
from switchyard.errors import CaptionError, FetchRefused

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ALLOWED_SCHEMES = frozenset({"http", "https"})
USER_AGENT = "switchyard-captioner/0.1 (+alt-text)"

Verify = ssl.SSLContext | str | bool


def one_line(exc: BaseException) -> str:
    """Collapse an exception's text so the task's error column stays a single line."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses may be connected to.

    `exempt` lists networks allowed even though they are not public: tests use it to let
    127.0.0.1 through while still proving that every *other* private address is refused.
    """

    allow_private: bool = False
    exempt: tuple[Network, ...] = ()

    def check(self, host: str, address: IPAddress) -> None:
        """Raise FetchRefused unless `address` (which `host` resolved to) is acceptable."""
        if self.allow_private or any(address in network for network in self.exempt):
            return
        kind = address_kind(address)
        if kind is None:
            return
        if host.strip("[]") == str(address):
            raise FetchRefused(f"refused: {address} is {kind}")
        raise FetchRefused(f"refused: {host} resolves to {address}, {kind}")


def resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    """Resolve `host` to its addresses, in resolver order, within `timeout` seconds.

    getaddrinfo has no timeout of its own, so it runs in a helper thread we stop waiting
    for; the thread ends by itself when the resolver gives up.
    """
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resolve")
    future = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    pool.shutdown(wait=False)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        raise httpx.ConnectTimeout(f"timed out resolving {host}") from None
    except UnicodeError as exc:  # an over-long or empty label: the name can never resolve
        raise FetchRefused(f"refused: malformed host ({one_line(exc)})") from None
    except socket.gaierror as exc:
        raise CaptionError(f"could not resolve {host}: {one_line(exc)}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise CaptionError(f"could not resolve {host}: no addresses")
    return addresses


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that resolves each request's host itself and connects to that IP.

    Choice: rather than vetting a name and then letting the connection pool resolve it
    again (a DNS-rebinding window), we resolve once, vet *every* address, and rewrite the
    request URL to the vetted IP. The original Host header is kept, and for https the
    `sni_hostname` request extension makes httpcore send SNI for, and verify the
    certificate against, the original name, so TLS checks are unchanged. Keep-alive is off
    so a TLS connection verified for one name is never reused for another name that
    happens to share the IP. If connecting to one vetted address fails, the next is tried.
    """

    def __init__(self, policy: AddressPolicy, deadline: float, verify: Verify = True) -> None:
        self._policy = policy
        self._deadline = deadline
        context = _ssl_context(verify)  # the cached one: loading CAs per fetch costs ~25 ms
        self._inner = httpx.HTTPTransport(retries=0, verify=context)
        # httpx takes no network backend, so its transport (kept for its mapping of
        # httpcore's errors to httpx's) gets a pool built with ours. A test of a server
        # that dribbles its headers fails if this stops working.
        self._inner._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_keepalive_connections=0,
            retries=0,
            network_backend=DeadlineBackend(deadline),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Vet every address of the request's host, then send it to the first that answers."""
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        addresses = resolve(host, port, self._deadline - time.monotonic())
        for address in addresses:
            self._policy.check(host, address)
        last_error: httpx.ConnectError | None = None
        for address in addresses:
            try:
                return self._inner.handle_request(self._pin(request, host, address))
            except httpx.ConnectError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    @staticmethod
    def _pin(request: httpx.Request, host: str, address: IPAddress) -> httpx.Request:
        """A copy of `request` aimed at `address`, keeping Host and SNI as the original name."""
        return httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=request.headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )

    def close(self) -> None:
        self._inner.close()


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with every wait cut to what is left before `deadline`
    (a `time.monotonic()` value): see the module docstring."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        wait = _cut(timeout, self._deadline, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, wait, local_address, socket_options)
        return DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose reads, writes and TLS handshake all end by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cut(timeout, self._deadline, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _cut(timeout, self._deadline, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = _cut(timeout, self._deadline, httpcore.ConnectTimeout)
        return DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, wait), self._deadline
        )

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


def _cut(timeout: float | None, deadline: float, expired: type[httpcore.TimeoutException]) -> float:
    """`timeout`, shortened to the time left before `deadline`; raise `expired` if none is."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the fetch deadline has passed")
    return left if timeout is None else min(timeout, left)


def _ssl_context(verify: Verify) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    return _default_ssl_context() if verify is True else httpx.create_ssl_context(verify)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle costs most of a caption's CPU if done per fetch."""
    return httpx.create_ssl_context()


def check_url(url: str | httpx.URL) -> httpx.URL:
    """Parse `url` and refuse anything but an absolute http(s) URL with a host that parses."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused(f"refused: malformed URL ({one_line(exc)})") from None
    _check_host(parsed)
    if not parsed.scheme:
        raise FetchRefused("refused: malformed URL (expected an absolute http:// or https:// URL)")
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise FetchRefused(f"refused: scheme {parsed.scheme} is not allowed (http and https only)")
    if not parsed.host:
        raise FetchRefused("refused: malformed URL (no host)")
    return parsed


def _check_host(parsed: httpx.URL) -> None:
    """Refuse a host that cannot be decoded (a malformed punycode label such as `xn--a`) or
    encoded for the resolver (an empty or over-long label). Both are UnicodeErrors (idna's
    errors are too), raised lazily by httpx and the resolver; here they are refused once."""
    try:
        host = parsed.host  # httpx decodes punycode here, with the idna package
        if host and not _is_ip_literal(host):
            host.encode("idna")  # the encoding getaddrinfo applies: label lengths
    except UnicodeError as exc:
        raise FetchRefused(f"refused: malformed host ({one_line(exc)})") from None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def make_client(policy: AddressPolicy, deadline: float, verify: Verify = True) -> httpx.Client:
    """A client that never follows redirects or proxies on its own; we vet every hop."""
    return httpx.Client(
        transport=PinnedTransport(policy, deadline, verify),
        follow_redirects=False,
        trust_env=False,  # an environment proxy would resolve names where we cannot vet them
        headers={
            "User-Agent": USER_AGENT,
            "Accept": "image/png, image/jpeg, image/webp, image/gif;q=0.9, image/*;q=0.8",
            # We count bytes as they arrive; a compressed body could expand past the cap.
            "Accept-Encoding": "identity",
        },
    )


def fetch_image(
    url: str,
    settings: Settings,
    *,
    exempt: Iterable[str | Network] = (),
    verify: Verify = True,
) -> bytes:
    """Download the image at `url`, refusing anything unsafe; see the module docstring.

    `exempt` names networks allowed despite being private (for tests); `verify` is passed
    to httpx (an `ssl.SSLContext` for a private CA, say).
    """
    deadline = time.monotonic() + settings.fetch_timeout
    policy = AddressPolicy(
        settings.fetch_allow_private,
        tuple(ipaddress.ip_network(n, strict=False) for n in exempt),
    )
    current = check_url(url)
    try:
        with make_client(policy, deadline, verify) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                timeout = _remaining(deadline, settings)
                with client.stream("GET", current, timeout=timeout) as response:
                    target = _redirect_target(response, current)
                    if target is None:
                        return _read_image(response, settings, deadline)
                current = target
    except httpx.TimeoutException:
        raise _timed_out(settings) from None
    except httpx.HTTPError as exc:
        raise CaptionError(f"could not fetch image from {current.host}: {one_line(exc)}") from None
    raise FetchRefused(f"refused: more than {MAX_REDIRECTS} redirects")


def _timed_out(settings: Settings) -> CaptionError:
    return CaptionError(f"timed out fetching image after {settings.fetch_timeout:g}s")


def _remaining(deadline: float, settings: Settings) -> float:
    """Seconds left in the fetch budget; every network wait gets at most this much."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(settings)
    return left


def _redirect_target(response: httpx.Response, current: httpx.URL) -> httpx.URL | None:
    """The vetted next URL if `response` redirects, None if it is a success; else raise."""
    status = response.status_code
    if status in REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise CaptionError(f"HTTP {status} redirect without a Location header")
        try:
            joined = current.join(location)
        except (httpx.InvalidURL, ValueError) as exc:
            raise FetchRefused(f"refused: malformed redirect ({one_line(exc)})") from None
        return check_url(joined)
    if not 200 <= status < 300:
        raise CaptionError(f"image URL answered HTTP {status} {response.reason_phrase}".strip())
    return None


def _read_image(response: httpx.Response, settings: Settings, deadline: float) -> bytes:
    """Check the headers, then stream the body, stopping at the byte cap or the deadline."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not media_type.startswith("image/"):
        raise FetchRefused(f"refused: content-type {media_type or '(none)'} is not an image")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchRefused(f"refused: content-encoding {encoding} is not supported")
    limit = settings.fetch_max_bytes
    too_large = FetchRefused(f"refused: image larger than {limit} bytes")
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    for chunk in response.iter_raw():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large
        _remaining(deadline, settings)
    if not body:
        raise CaptionError("image URL returned an empty body")
    return bytes(body)
