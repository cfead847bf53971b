"""The API plane: every conversation with an API goes through an ``Api`` (httpx underneath).

OAuth token/refresh/revoke calls, Drive ``files.list``, Dropbox RPC routes, the Pinterest API,
gallery listings and JSON indexes. Bytes of assets go through the transfer loop instead
(``pixsrc.transfer``, libcurl), which shares this module's trust store, retry policy and rate
limits, so both planes behave alike.

What ``Api`` adds to a plain ``httpx.Client``:
- one trust store for both planes (``ca_paths``): ``SSL_CERT_FILE``/``SSL_CERT_DIR`` via
  ``ssl.get_default_verify_paths()``, else certifi;
- HTTP/2 where the host offers it (h2);
- proxies from the environment chosen per request (``proxy_for``): ``NO_PROXY`` with CIDR
  entries, and loopback hosts never proxied, which httpx's own ``trust_env`` does not do;
- the credential as an ``httpx.Auth`` flow: headers on every request, one refresh after a 401;
  on a redirect to another origin (scheme, host or port, so ``https://h/`` -> ``http://h/`` too)
  ``Authorization``, ``Cookie``, ``Proxy-Authorization`` and every header the credential added are
  dropped. A plain-text upgrade (``http://h/`` -> ``https://h/``) keeps them, as httpx does;
- header values with CR, LF or NUL are refused before anything is sent, on HTTP/1.1 (h11 would
  refuse them too, as a protocol error) and on HTTP/2 (h2 sends them, and a proxy that turns the
  request back into HTTP/1.1 would split it);
- one retry policy (tenacity): network errors, 408, 429 and 5xx with backoff + jitter and
  ``Retry-After``, **only for idempotent requests**. A request that may have reached the server
  (anything but a connection that was never made) is never resent unless the caller says it is
  idempotent: a token POST that was processed and then lost would be a refresh-token reuse, and
  providers revoke the whole grant on reuse. The exceptions are answers that say the server did
  not act on the request — 408 (it did not get the whole request, RFC 9110 section 15.5.9), 429
  (refused: too many requests) and what ``retry_when`` names (Google's 403 rate limits): those are
  retried for every method. Certificate failures and refused header values are never retried.

Errors: failures after retries raise ``ApiError`` (the network, TLS, a proxy, malformed framing,
an undecodable body, an invalid URL); any HTTP status is returned to the caller, who knows what a
404 or 409 means for its endpoint.
"""

from __future__ import annotations

import dataclasses
import email.utils
import ipaddress
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pixsrc import __version__

if TYPE_CHECKING:
    import httpx

    from pixsrc.types import TransferAuth

USER_AGENT = f"pixsrc/{__version__}"
MAX_BODY = 64 << 20  # the largest API answer read (a listing page is a few MB at most)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REFUSED_STATUSES = frozenset({408, 429})
"""Answers that say the request was not acted on: safe to resend whatever the method."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
"""Dropped on a redirect to another origin, with whatever headers the request's credential added."""

_ORIGIN = "pixsrc.origin"  # request extensions: the origin the request was first sent to
_CREDENTIAL = "pixsrc.credential-headers"  # ... and the header names its TransferAuth added


class ApiError(Exception):
    """A request failed for good: the network, TLS, or retries ran out without an answer."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Cancelled(Exception):
    """The run's cancel event was set while waiting."""


# -- trust store --------------------------------------------------------------------------------

def ca_paths() -> tuple[str | None, str | None]:
    """(cafile, capath) for both planes: what OpenSSL's defaults and ``SSL_CERT_FILE``/``SSL_CERT_DIR``
    name, else certifi's bundle. libcurl is always given these explicitly: the manylinux pycurl
    wheel looks for a RHEL-style bundle Debian does not have, and ignores ``SSL_CERT_FILE``.

    Not cached: ``ssl.get_default_verify_paths()`` costs ~6 us, and a cache would keep a changed
    ``SSL_CERT_FILE`` from taking effect (tests set it per test)."""
    paths = ssl.get_default_verify_paths()
    capath = paths.capath if paths.capath and _has_entries(paths.capath) else None
    if paths.cafile or capath:
        return paths.cafile, capath
    import certifi

    return certifi.where(), None


def _has_entries(directory: str) -> bool:
    # an empty certs directory (no ca-certificates package) would trust nothing: use certifi then
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


@lru_cache(maxsize=8)
def _shared_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # loading a CA bundle takes ~20 ms: one context per trust store for every Api of the process
    # (a token refresh builds its own Api). httpcore only sets ALPN on it, the same for all of ours.
    return ssl.create_default_context(cafile=cafile, capath=capath)


def safe_url(url: str) -> str:
    """The URL without its query string (which may carry tokens or signatures) and user info."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


# -- proxies ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProxySettings:
    """``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and ``NO_PROXY``, as read from the environment.

    Why not httpx's ``trust_env``: httpx 0.28 matches a CIDR entry of ``NO_PROXY`` only against the
    network address itself (``127.0.0.0/8`` bypasses 127.0.0.0, not 127.0.0.1), and proxies
    ``localhost`` unless it is listed. libcurl, which moves the bytes, honours CIDR entries; so
    both planes decide here alike. ``NO_PROXY`` entries: ``*``; a host name, which also covers its
    subdomains (a leading ``.`` or ``*.`` is ignored, a ``:port`` too); an IP address or a CIDR
    network. Loopback hosts (``localhost``, ``*.localhost``, 127.0.0.0/8, ::1) never go through a
    proxy: a proxy elsewhere cannot reach this machine's loopback services (the old client did the
    same).
    """

    proxies: Mapping[str, str]
    names: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    everything: bool = False

    @classmethod
    def from_environment(cls) -> ProxySettings:
        import urllib.request

        found = urllib.request.getproxies_environment()  # lower case wins, as for libcurl
        proxies = {scheme: url if "://" in url else f"http://{url}"
                   for scheme in ("http", "https", "all") if (url := found.get(scheme, "").strip())}
        names: list[str] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        everything = False
        for entry in found.get("no", "").replace(",", " ").split():
            entry = entry.lower()
            if entry == "*":
                everything = True
                continue
            if entry.startswith("["):  # [v6] or [v6]:port
                entry = entry[1:].partition("]")[0]
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.removeprefix("*").lstrip(".").partition(":")[0]
            if name:
                names.append(name)
        return cls(proxies, tuple(names), tuple(networks), everything)

    def proxy_for(self, scheme: str, host: str) -> str | None:
        """The proxy URL for a request to ``scheme://host``, or None to connect directly."""
        proxy = self.proxies.get(scheme) or self.proxies.get("all")
        if proxy is None or self.everything or is_loopback(host):
            return None
        host = host.lower().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if any(host == name or host.endswith("." + name) for name in self.names):
                return None
            return proxy
        if any(address in network for network in self.networks):
            return None
        return proxy if host not in self.names else None


def is_loopback(host: str) -> bool:
    host = host.lower().strip("[]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


# -- retry policy -------------------------------------------------------------------------------

def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """Truncated exponential backoff with full jitter, as Google documents it (waits up to 64 s),
    within an overall ``deadline`` per request. ``Retry-After`` is honoured up to ``max_retry_after``;
    a server asking for longer is treated as unavailable."""

    retries: int = 10
    base: float = 1.0
    cap: float = 64.0
    deadline: float = 600.0
    max_retry_after: float = 900.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return retry_after
        return min(self.cap, random.uniform(self.base / 2, self.base * 2**attempt))


DEFAULT_POLICY = RetryPolicy()


def default_policy() -> RetryPolicy:
    """The policy both planes use unless a caller passes one. ``PIXSRC_RETRY_BASE`` (seconds) sets
    the first backoff wait: tests and scripts against a local server make retries quick with it."""
    base = os.environ.get("PIXSRC_RETRY_BASE")
    if base:
        try:
            return dataclasses.replace(DEFAULT_POLICY, base=max(0.0, float(base)))
        except ValueError:
            pass
    return DEFAULT_POLICY


class RateLimit:
    """At most ``concurrency`` requests in flight and ``per_second`` starts, shared by the API plane's
    threads and the transfer loop of one source."""

    def __init__(self, concurrency: int | None = None, per_second: float | None = None) -> None:
        self.concurrency = concurrency
        self.per_second = per_second
        self._slots = threading.BoundedSemaphore(concurrency) if concurrency else None
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def book(self) -> float:
        """Book the next start; return how many seconds from now it is (0: start now)."""
        if not self._interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        return start - now

    def acquire(self, cancel: threading.Event) -> None:
        if self._slots is not None:
            while not self._slots.acquire(timeout=0.2):
                if cancel.is_set():
                    raise Cancelled()
        delay = self.book()
        if delay and cancel.wait(delay):
            self.release()
            raise Cancelled()

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()


# -- the client ---------------------------------------------------------------------------------

def _origin(url: httpx.URL) -> tuple[str, bytes, int | None]:
    return url.scheme, url.raw_host, url.port or {"http": 80, "https": 443}.get(url.scheme)


def _auth_flow(credential: TransferAuth) -> httpx.Auth:
    import httpx

    class CredentialFlow(httpx.Auth):
        """Headers on the request; after a 401 from the credential's own origin, one refresh
        (``unauthorized``) and one resend. A second 401 goes back to the caller."""

        def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
            added = credential.headers()
            request.headers.update(added)
            # the request hook drops these on a redirect to another origin (see _guard)
            request.extensions[_CREDENTIAL] = frozenset(name.lower() for name in added)
            response = yield request
            if response.status_code == 401 and _origin(response.request.url) == _origin(request.url):
                response.read()
                # httpx.Headers, not a dict: its keys are lower case, and callers look up "Authorization"
                credential.unauthorized(httpx.Headers(request.headers))
                added = credential.headers()
                request.headers.update(added)
                request.extensions[_CREDENTIAL] = request.extensions[_CREDENTIAL] | {n.lower() for n in added}
                yield request

    return CredentialFlow()


def _guard(request: httpx.Request) -> None:
    """Run by httpx before every request it sends, redirects included."""
    for name, value in request.headers.raw:
        if any(bad in name or bad in value for bad in (b"\r", b"\n", b"\0")):
            name_shown = name.decode("ascii", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n")
            raise ApiError(f"{request.method} {safe_url(str(request.url))} refused: the {name_shown} header holds "
                           "a CR, LF or NUL character, which could split the request")
    here = _origin(request.url)
    first = request.extensions.setdefault(_ORIGIN, here)
    upgrade = first[0] == "http" and here[0] == "https" and first[1] == here[1] and (first[2], here[2]) == (80, 443)
    if here != first and not upgrade:
        for name in CREDENTIAL_HEADERS | request.extensions.get(_CREDENTIAL, frozenset()):
            request.headers.pop(name, None)


def _not_sent(exc: Exception) -> bool:
    """True when the request cannot have reached the server: the connection (or the proxy's tunnel,
    ProxyError) was never made."""
    import httpx

    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ProxyError)


def _certificate_error(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _worth_retrying(exc: Exception) -> bool:
    """A transport error that may go away: not a certificate nobody trusts, nor a request this side
    refuses to send, nor a scheme without a transport."""
    import httpx

    if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
        return False
    return isinstance(exc, httpx.TransportError) and not _certificate_error(exc)


@cache
def _routing_class() -> Callable[[ProxySettings], httpx.BaseTransport]:
    import httpx

    class RoutingTransport(httpx.BaseTransport):
        """Sends each request (each redirect hop too) directly or through the proxy ``ProxySettings``
        chooses for its URL: httpx's ``mounts`` patterns cannot express CIDR entries.

        Each transport is made on first use: a run that only talks plain ``http://`` (a gallery on
        the LAN) loads no CA bundle (~20 ms), which only TLS needs; HTTP/2 too is TLS-only here
        (httpx negotiates it by ALPN, never over cleartext)."""

        def __init__(self, settings: ProxySettings) -> None:
            self.settings = settings
            self.transports: dict[tuple[str, str | None], httpx.HTTPTransport] = {}
            self.lock = threading.Lock()

        def _transport(self, scheme: str, proxy: str | None) -> httpx.HTTPTransport:
            key = (scheme if proxy is None else "proxied", proxy)
            with self.lock:
                transport = self.transports.get(key)
                if transport is None:
                    transport = self.transports[key] = self._make(scheme, proxy)
                return transport

        def _make(self, scheme: str, proxy: str | None) -> httpx.HTTPTransport:
            if proxy is None and scheme == "http":
                # cleartext only: this transport never makes a TLS connection, so it needs no trust store
                return httpx.HTTPTransport(verify=False, http2=False)
            context = _shared_context(*ca_paths())
            if proxy is None:
                return httpx.HTTPTransport(verify=context, http2=True)
            try:
                return httpx.HTTPTransport(verify=context, http2=True, proxy=httpx.Proxy(proxy))
            except (ValueError, ImportError) as exc:  # an unknown scheme; socks5:// without socksio
                raise ApiError(f"the proxy {_without_userinfo(proxy)} cannot be used: {exc}") from None

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            scheme = request.url.scheme
            proxy = self.settings.proxy_for(scheme, request.url.raw_host.decode("ascii"))
            return self._transport(scheme, proxy).handle_request(request)

        def close(self) -> None:
            with self.lock:
                for transport in self.transports.values():
                    transport.close()
                self.transports.clear()

    return RoutingTransport


class Api:
    """An httpx client with this project's trust store, proxies, credential, retry policy and rate limit.

    ``retry_when(response)`` adds answers the status alone does not show as refusals to be retried
    (Google's 403 ``rateLimitExceeded``): like 429 they are retried whatever the method, so it must
    name only answers that mean the server did nothing. The body is read before it is called.
    ``on_wait(seconds, reason)`` is told about each backoff wait of 2 s or more (shown to the user).
    ``cancel`` ends waits at once.

    Credentials belong in ``auth`` (or, for one request, ``headers={"Authorization": ...}``): on a
    redirect to another origin those are dropped; other headers a caller passes are kept.
    """

    def __init__(self, *, auth: TransferAuth | None = None, user_agent: str = USER_AGENT,
                 timeout: float = 30.0, headers: Mapping[str, str] | None = None,
                 policy: RetryPolicy | None = None,
                 retry_when: Callable[[httpx.Response], bool] | None = None,
                 limit: RateLimit | None = None, on_wait: Callable[[float, str], None] | None = None,
                 cancel: threading.Event | None = None, max_redirects: int = 5,
                 max_body: int = MAX_BODY) -> None:
        import httpx

        self.policy = policy or default_policy()
        self.max_body = max_body
        self.retry_when = retry_when
        self.limit = limit
        self.on_wait = on_wait
        self.cancel = cancel or threading.Event()
        self.client = httpx.Client(
            transport=_routing_class()(ProxySettings.from_environment()), trust_env=False,
            follow_redirects=True, max_redirects=max_redirects,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            headers={"User-Agent": user_agent, **(headers or {})},
            auth=_auth_flow(auth) if auth is not None else None,
            event_hooks={"request": [_guard]},
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def request(self, method: str, url: str, *, idempotent: bool | None = None,
                **options: Any) -> httpx.Response:
        """Send and read the answer, retrying as the policy allows; return the final response.

        ``idempotent``: whether sending twice is harmless (default: by method). Dropbox's read-only
        RPC routes are POSTs that pass True; token POSTs keep False and are never resent once they
        may have reached the server. ``options`` go to ``httpx.Client.request``.
        """
        import httpx
        import tenacity

        method = method.upper()
        idempotent = method in IDEMPOTENT if idempotent is None else idempotent
        started = time.monotonic()
        policy = self.policy
        # "GET <url> failed: ...": never "<url>: ..." — a URL ending in /token followed by a colon reads
        # as a credential to pixsrc.redact, which would mask the reason
        shown = f"{method} {safe_url(url)}"

        def transient(state: tenacity.RetryCallState) -> bool:
            assert state.outcome is not None
            if state.outcome.failed:
                exc = state.outcome.exception()
                if not isinstance(exc, Exception) or not _worth_retrying(exc):
                    return False
                return idempotent or _not_sent(exc)
            response: httpx.Response = state.outcome.result()
            if response.status_code in REFUSED_STATUSES:
                return True
            if self.retry_when is not None and response.status_code >= 400 and self.retry_when(response):
                return True
            return idempotent and response.status_code in RETRY_STATUSES

        def wait(state: tenacity.RetryCallState) -> float:
            assert state.outcome is not None
            hinted = None
            host = urlsplit(url).netloc.rpartition("@")[2]
            if state.outcome.failed:
                reason = f"{type(state.outcome.exception()).__name__} from {host}"
            else:
                response = state.outcome.result()
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                reason = f"HTTP {response.status_code} from {host}"
            remaining = policy.deadline - (time.monotonic() - started)
            if state.attempt_number > policy.retries or remaining <= 0:
                return 0.0  # tenacity asks before it stops: nothing will be retried, so no wait to announce
            if hinted is not None and hinted > min(policy.max_retry_after, remaining):
                raise ApiError(f"{shown} failed: asked to retry after {hinted:.0f} s", retryable=True)
            delay = min(policy.delay(state.attempt_number - 1, hinted), remaining)
            if self.on_wait is not None and delay >= 2:
                self.on_wait(delay, reason)
            return delay

        def sleep(seconds: float) -> None:
            if self.cancel.wait(seconds):
                raise Cancelled()

        def give_up(state: tenacity.RetryCallState) -> bool:
            return (state.attempt_number > policy.retries
                    or time.monotonic() - started > policy.deadline)

        def last(state: tenacity.RetryCallState) -> httpx.Response:
            assert state.outcome is not None
            return state.outcome.result()  # type: ignore[no-any-return]  # re-raises a transport error

        retrying = tenacity.Retrying(retry=transient, wait=wait, stop=give_up, sleep=sleep,
                                     retry_error_callback=last, reraise=True)
        try:
            response: httpx.Response = retrying(self._send, method, url, options)
            return response
        except httpx.TransportError as exc:
            raise ApiError(f"{shown} failed: {describe_transport_error(exc)}", retryable=_worth_retrying(exc)) from None
        except httpx.DecodingError as exc:
            raise ApiError(f"{shown} failed: the answer's Content-Encoding cannot be decoded ({exc})") from None
        except httpx.TooManyRedirects:
            raise ApiError(f"{shown} failed: too many redirects") from None
        except httpx.InvalidURL as exc:
            raise ApiError(f"{shown} failed: invalid URL: {exc}") from None
        except UnicodeError as exc:
            if isinstance(exc, UnicodeEncodeError) and exc.encoding == "ascii":  # httpx encodes headers as ASCII
                raise ApiError(f"{shown} refused: a header holds a character that is not ASCII") from None
            # an IDNA host httpx cannot decode (idna.IDNAError), or one the resolver cannot encode ("a..b")
            raise ApiError(f"{shown} failed: invalid host name: {exc}") from None

    def _send(self, method: str, url: str, options: dict[str, Any]) -> httpx.Response:
        if self.cancel.is_set():
            raise Cancelled()
        if self.limit is not None:
            self.limit.acquire(self.cancel)
        try:
            with self.client.stream(method, url, **options) as response:
                # read it ourselves, capped: an API answer of gigabytes is an error, not a memory blow-up
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_body:
                        raise ApiError(f"{method} {safe_url(url)} failed: the answer is larger than "
                                       f"{self.max_body // (1 << 20)} MB")
                    chunks.append(chunk)
                response._content = b"".join(chunks)  # what Response.read() sets; .json() reads it
                return response
        finally:
            if self.limit is not None:
                self.limit.release()


def describe_transport_error(exc: BaseException) -> str:
    """One line for the user: the certificate problem, the refused connection, the timeout."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {cause.verify_message or cause}" + (
                " (a private CA? set SSL_CERT_FILE)")
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
