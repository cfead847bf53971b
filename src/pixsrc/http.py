"""A small HTTP/1.1 client for listing and downloading: keep-alive, timeouts, retries.

Why not httpx here: on loopback, 2,000 small downloads took 3.4 s through httpx with 8 threads
and 2.1 s through the standard library's http.client on the same threads (rclone: 1.2-1.9 s on
that machine). This client keeps one keep-alive connection per host per worker thread, retries
network errors, 429 and 5xx with exponential backoff and jitter, honours ``Retry-After``, and
follows redirects (dropping credentials when the host changes).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from pixsrc import __version__

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"pixsrc/{__version__}"
MAX_RETRY_AFTER = 900.0  # seconds; a server asking for longer is treated as unavailable

cancelled = threading.Event()
"""Set on Ctrl-C: backoff waits end at once and no new request is sent."""


class HttpError(Exception):
    """A request failed for good (after retries), or its answer was not usable."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class Cancelled(Exception):
    pass


def retry_after_seconds(value: str | None) -> float | None:
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


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform in [base, base * 2**attempt], capped."""
    return min(cap, random.uniform(base, base * 2**attempt))


def wait(seconds: float) -> None:
    if cancelled.wait(seconds):
        raise Cancelled()


class Response:
    def __init__(self, conn: http.client.HTTPConnection, raw: http.client.HTTPResponse, url: str,
                 release: Callable[[http.client.HTTPConnection, bool], None]) -> None:
        self._conn = conn
        self._raw = raw
        self._release = release
        self.url = url
        self.status = raw.status
        self.headers = raw.headers
        self.offset = 0  # for downloads: where the body starts in the resource (206 answers)
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if cancelled.is_set():
            raise Cancelled()
        data = self._raw.read(size) if size >= 0 else self._raw.read()
        if not data or size < 0:
            self.close()
        return data

    def read_all(self, limit: int = 64 << 20) -> bytes:
        data = self._raw.read(limit + 1)
        self.close()
        if len(data) > limit:
            raise HttpError(f"{self.url}: answer larger than {limit} bytes")
        return data

    def json(self) -> Any:
        try:
            return json.loads(self.read_all())
        except ValueError as exc:
            raise HttpError(f"{self.url}: invalid JSON: {exc}") from None

    def close(self) -> None:
        if not self._done:
            self._done = True
            reusable = self._raw.isclosed() and not self._raw.will_close
            if not reusable:
                self._raw.close()
            self._release(self._conn, reusable)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpClient:
    """Thread-safe: each thread keeps its own keep-alive connection per host."""

    def __init__(self, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0,
                 retries: int = 4, on_wait: Callable[[float, str], None] | None = None) -> None:
        self.headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        self.timeout = timeout
        self.retries = retries
        self.on_wait = on_wait
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.pop((scheme, netloc), None)
        if conn is None:
            if scheme == "https":
                import ssl

                conn = http.client.HTTPSConnection(netloc, timeout=self.timeout,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
            with self._lock:
                self._all.append(conn)
        return conn

    def _release(self, key: tuple[str, str]) -> Callable[[http.client.HTTPConnection, bool], None]:
        def release(conn: http.client.HTTPConnection, reusable: bool) -> None:
            if reusable:
                self._local.__dict__.setdefault("pool", {})[key] = conn
            else:
                conn.close()
        return release

    def _send_once(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise HttpError(f"unsupported URL scheme in {url!r}")
        key = (parts.scheme, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for fresh in (False, True):
            conn = self._connection(*key)
            try:
                conn.request(method, target, body=body, headers=headers)
                raw = conn.getresponse()
                return Response(conn, raw, url, self._release(key))
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if fresh:  # a kept-alive connection the server had closed gets one silent retry
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, max_redirects: int = 5) -> Response:
        """Send a request; retry transient failures; return the (unread) final response.

        A non-retryable status (404, 401, ...) is returned as is: callers decide what it means.
        """
        all_headers = {**self.headers, **(headers or {})}
        attempt = 0
        redirects = 0
        while True:
            if cancelled.is_set():
                raise Cancelled()
            try:
                response = self._send_once(method, url, all_headers, body)
            except (OSError, http.client.HTTPException) as exc:
                if attempt >= self.retries:
                    raise HttpError(f"{method} {_safe(url)}: {type(exc).__name__}: {exc}", retryable=True) from None
                delay = backoff_delay(attempt)
                reason = f"{type(exc).__name__} from {urlsplit(url).netloc}"
            else:
                status = response.status
                if status in (301, 302, 303, 307, 308) and (location := response.headers.get("Location")):
                    response.read_all()
                    redirects += 1
                    if redirects > max_redirects:
                        raise HttpError(f"{method} {_safe(url)}: too many redirects", status)
                    new_url = urljoin(url, location)
                    if urlsplit(new_url).netloc != urlsplit(url).netloc:
                        all_headers = {k: v for k, v in all_headers.items() if k.lower() != "authorization"}
                    url = new_url
                    continue
                if status not in RETRY_STATUSES or attempt >= self.retries:
                    return response
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                response.read_all()
                if hinted is not None and hinted > MAX_RETRY_AFTER:
                    raise HttpError(f"{method} {_safe(url)}: HTTP {status}, asked to retry after {hinted:.0f} s",
                                    status, retryable=True)
                delay = hinted if hinted is not None else backoff_delay(attempt)
                reason = f"HTTP {status} from {urlsplit(url).netloc}"
            attempt += 1
            if self.on_wait is not None and delay >= 2:
                self.on_wait(delay, reason)
            wait(delay)

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", url, headers=headers)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _safe(url: str) -> str:
    """The URL without its query string, which may carry tokens or signatures."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
