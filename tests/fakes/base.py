"""Shared machinery for the fake provider servers (test code only).

* :class:`FakeServer` - a real HTTP/1.1 server (``ThreadingHTTPServer``) on 127.0.0.1, port 0, in a
  background thread, with keep-alive and ``TCP_NODELAY``. Every request is logged in ``requests``;
  one-shot faults (``fail_next`` / ``truncate_next`` / ``wrong_range_next``) are consumed before the
  route runs.
* :class:`OAuthServer` - the OAuth 2.0 authorization-code grant (RFC 6749 §4.1) with PKCE (RFC 7636),
  refresh (RFC 6749 §6), optional refresh-token rotation, revocation and a Bearer check. Providers
  subclass it to give their own error bodies and token-response extras (see providers.md §1.1-1.3,
  §2.1, §3.1).
* :class:`SpecValidator` - validates incoming requests against an OpenAPI 3.0 file with openapi-core
  (path, query parameters, headers, body); the spec is parsed once per process.

Nothing here talks to a real provider.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import json
import re
import secrets
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SPECS = Path("/work/shared/specs")  # overridable with PIXSRC_SPECS_DIR, see spec_path()


def spec_path(*parts: str) -> Path:
    import os

    return Path(os.environ.get("PIXSRC_SPECS_DIR", SPECS)).joinpath(*parts)


# --------------------------------------------------------------------------------------------------
# requests and responses


@dataclass(frozen=True)
class Request:
    """One request as the fake received it. Header names are lower-case."""

    method: str
    path: str  # decoded URL path, no query
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    raw_path: str  # path + query exactly as sent
    server: str = ""  # name of the FakeServer that got it

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("latin-1"), keep_blank_values=True).items()}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


class Abort(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a handler to answer with ``response`` right away."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def serve_bytes(req: Request, data: bytes, headers: dict[str, str] | None = None) -> Response:
    """200 with ``data``, or 206/416 for a single ``Range: bytes=`` request (RFC 9110 §14)."""
    headers = {"Accept-Ranges": "bytes", **(headers or {})}
    rng = req.headers.get("range")
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
    if not m or (not m[1] and not m[2]):
        return Response(200, data, headers)
    size = len(data)
    if m[1]:
        start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
    else:  # suffix range: the last N bytes
        start, end = max(size - int(m[2]), 0), size - 1
    if start >= size or start > end:
        return Response(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
    return Response(206, data[start : end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{size}"})


# --------------------------------------------------------------------------------------------------
# faults


@dataclass
class Fault:
    remaining: int
    method: str | None
    path: str | None  # fnmatch glob on the URL path, e.g. "/drive/v3/files/*"
    when: Callable[[Request], bool] | None
    response: Response | None  # None: truncate the real response instead (or, with range_from, re-range it)
    range_from: int | None = None  # answer a Range request as if it had asked for ``bytes=<range_from>-``

    def matches(self, req: Request) -> bool:
        return (
            self.remaining > 0
            and (self.method is None or self.method.upper() == req.method)
            and (self.path is None or fnmatch.fnmatchcase(req.path, self.path))
            and (self.range_from is None or "range" in req.headers)
            and (self.when is None or self.when(req))
        )


# --------------------------------------------------------------------------------------------------
# the server


Route = tuple[str, "re.Pattern[str]", Callable[..., Response], bool]


class FakeServer:
    """A threaded HTTP/1.1 server. Subclasses (or owners) register routes with :meth:`route`.

    ``route(method, regex, handler, validate=True)``: the regex must match the whole URL path; its
    named groups become keyword arguments of ``handler(req, **groups)``. When a ``validator`` is set,
    every request to a route with ``validate=True`` (and every request matching no route) is checked
    against the spec and problems land in ``violations``.
    """

    def __init__(self, name: str = "fake", validator: SpecValidator | None = None):
        self.name = name
        self.validator = validator
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self._routes: list[Route] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"fake-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- routes, faults, log -----------------------------------------------------------------------

    def route(
        self, method: str, pattern: str, handler: Callable[..., Response], validate: bool = True
    ) -> None:
        self._routes.append((method.upper(), re.compile(pattern), handler, validate))

    def fail_next(
        self,
        status: int,
        body: bytes | str | dict | list | None = b"",
        headers: dict[str, str] | None = None,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``/``body``/``headers`` (one-shot).

        ``body``: bytes/str as is, a dict/list as JSON. ``path`` is an fnmatch glob on the URL path.
        """
        if isinstance(body, (dict, list)):
            resp = json_response(status, body, headers)
        else:
            data = body.encode() if isinstance(body, str) else (body or b"")
            resp = Response(status, data, dict(headers or {}))
        with self._lock:
            self._faults.append(Fault(times, method, path, when, resp))

    def truncate_next(
        self,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Send only the first half of the next matching response body, with the full Content-Length,
        then close the connection."""
        with self._lock:
            self._faults.append(Fault(times, method, path, when, None))

    def wrong_range_next(
        self,
        *,
        start: int = 0,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Answer the next matching request that carries ``Range`` as if it had asked for
        ``bytes=<start>-``: a well-formed 206 whose ``Content-Range`` is not the range asked for (a server
        or cache that ignores the start). Requests without ``Range`` do not consume it."""
        with self._lock:
            self._faults.append(Fault(times, method, path, when, None, range_from=start))

    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def requests_to(self, path_glob: str, method: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if fnmatch.fnmatchcase(r.path, path_glob) and (method is None or r.method == method.upper())
            ]

    # -- dispatch ----------------------------------------------------------------------------------

    def _take_fault(self, req: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(req):
                    fault.remaining -= 1
                    return fault
        return None

    def dispatch(self, req: Request) -> tuple[Response, bool]:
        """Returns (response, truncate)."""
        with self._lock:
            self.requests.append(req)
        route = None
        for method, pattern, handler, validate in self._routes:
            m = pattern.fullmatch(req.path)
            if m and method == req.method:
                route = (handler, m.groupdict(), validate)
                break
        if self.validator is not None and (route is None or route[2]):
            problems = self.validator.check(req)
            if problems:
                with self._lock:
                    self.violations.extend(problems)
        fault = self._take_fault(req)
        if fault is not None and fault.response is not None:
            return fault.response, False
        if fault is not None and fault.range_from is not None:
            req = dataclasses.replace(req, headers={**req.headers, "range": f"bytes={fault.range_from}-"})
        if route is None:
            resp = self.not_found(req)
        else:
            try:
                resp = route[0](req, **route[1])
            except Abort as exc:
                resp = exc.response
        return resp, fault is not None and fault.range_from is None

    def not_found(self, req: Request) -> Response:  # overridden per provider
        return text_response(404, "Not Found")


class OneServerFake:
    """For a provider fake served by one ``FakeServer`` (its ``server``): the test-facing shortcuts."""

    server: FakeServer

    violations = property(lambda self: self.server.violations)
    requests = property(lambda self: self.server.requests)

    def fail_next(self, *args: Any, **kwargs: Any) -> None:
        self.server.fail_next(*args, **kwargs)

    def truncate_next(self, **kwargs: Any) -> None:
        self.server.truncate_next(**kwargs)

    def wrong_range_next(self, **kwargs: Any) -> None:
        self.server.wrong_range_next(**kwargs)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # TCP_NODELAY
    server_version = "pixsrc-fake"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        from urllib.parse import unquote

        split = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._read_body(),
            raw_path=self.path,
            server=self.fake.name,
        )
        resp, truncate = self.fake.dispatch(req)
        body = b"" if self.command == "HEAD" else resp.body
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if truncate and body:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815


# --------------------------------------------------------------------------------------------------
# OpenAPI request validation (openapi-core)


class SpecValidator:
    """Checks requests against one OpenAPI 3.0 document with openapi-core.

    ``server_url`` is the spec's ``servers[0].url`` host part (e.g. ``https://api.pinterest.com``); the
    fake's paths mirror the real ones (``/v5/boards``), so host + fake path is the real URL.
    On top of openapi-core (which allows undeclared query parameters), a query parameter that the
    operation does not declare is reported too, since the real services ignore or reject those.
    """

    def __init__(self, spec_file: Path, server_url: str):
        from openapi_core import Config, OpenAPI
        from openapi_core.templating.paths.finders import APICallPathFinder
        from openapi_core.validation.request.validators import V30RequestValidator

        with open(spec_file, encoding="utf-8") as fh:
            api = OpenAPI.from_dict(json.load(fh), config=Config(spec_validator_cls=None))
        self.server_url = server_url
        self._validator = V30RequestValidator(api.spec)
        self._finder = APICallPathFinder(api.spec)
        self._lock = threading.Lock()  # openapi-core's caches are not documented as thread-safe

    @classmethod
    @functools.cache
    def load(cls, spec_file: Path, server_url: str) -> SpecValidator:
        """One instance per (file, url) per process: the Pinterest file is 2 MB."""
        return cls(spec_file, server_url)

    def check(self, req: Request) -> list[str]:
        from openapi_core.testing import MockRequest

        where = f"{req.method} {req.raw_path}"
        # MockRequest takes a plain dict: multi-valued params keep all values via a MultiDict below
        mock = MockRequest(
            self.server_url,
            req.method.lower(),
            req.path,
            headers=req.headers,
            data=req.body or None,
            content_type=req.headers.get("content-type", ""),
        )
        from werkzeug.datastructures import ImmutableMultiDict

        mock.parameters.query = ImmutableMultiDict([(k, v) for k, vs in req.query.items() for v in vs])
        problems: list[str] = []
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unsupported scheme type" for oauth2 security schemes
            for err in self._validator.iter_errors(mock):
                cause = f" ({err.__cause__})" if err.__cause__ and str(err.__cause__) != str(err) else ""
                problems.append(f"{where}: {err}{cause}")
            try:
                found = self._finder.find(req.method.lower(), self.server_url + req.path)
            except Exception:  # noqa: BLE001 - already reported by the validator
                return problems
            declared = {
                p["name"]
                for holder in (found.path, found.operation)
                if "parameters" in holder
                for p in holder / "parameters"
                if p["in"] == "query"
            }
        for name in req.query:
            if name not in declared:
                problems.append(f"{where}: query parameter {name!r} is not declared by the operation")
        return problems


# --------------------------------------------------------------------------------------------------
# OAuth 2.0


def pkce_s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), no padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1


@dataclass
class Grant:
    """One authorization (one consent); refresh and access tokens hang off it."""

    client_id: str
    scopes: list[str]
    redirect_uri: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    params: dict[str, str]  # the full authorize query, for provider hooks
    code_issued_at: float = 0.0
    code_used: bool = False
    revoked: bool = False
    refresh_token: str | None = None


@dataclass
class AccessToken:
    token: str
    grant: Grant
    expires_at: float


class OAuthServer:
    """Authorization-code grant state for one provider fake (not itself an HTTP server).

    Configuration (attributes, change freely in a test):

    * ``client_id`` / ``client_secret``
    * ``client_auth``: ``"none"`` (public client; a secret is optional but checked if sent, and required
      when the code was issued without PKCE), ``"form"`` (``client_secret`` in the form body required),
      ``"basic"`` (HTTP Basic ``client_id:client_secret`` required)
    * ``access_token_ttl`` (seconds), ``rotate_refresh_tokens`` (each refresh returns a new refresh
      token and the old one is dead: replay gives 400 ``invalid_grant``)
    * ``scope_separator``, ``redirect_uris`` (None: any redirect accepted; else exact matches),
      ``loopback_any_port`` (RFC 8252 §7.3: ``http://127.0.0.1:<any>/path`` matches a registered
      loopback URI with any port)
    * ``granted_scopes``: None grants what was asked; a list grants exactly that (a user unticking)

    State: ``refresh_count``, ``grants``, ``access_tokens``. Test helpers: ``deny_next_authorization()``,
    ``issue_tokens()``, ``advance(seconds)``, ``expire_access_tokens()``, ``revoke(token)``.
    """

    code_ttl = 600.0  # Google: 10 minutes; RFC 6749 §4.1.2 recommends at most 10 minutes
    token_prefix = "at"

    def __init__(
        self,
        *,
        client_id: str = "test-client-id",
        client_secret: str | None = "test-client-secret",
        client_auth: str = "form",
        access_token_ttl: int = 3600,
        rotate_refresh_tokens: bool = False,
        scope_separator: str = " ",
        redirect_uris: list[str] | None = None,
        loopback_any_port: bool = False,
    ):
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_auth = client_auth
        self.access_token_ttl = access_token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.scope_separator = scope_separator
        self.redirect_uris = redirect_uris
        self.loopback_any_port = loopback_any_port
        self.allow_no_redirect = False  # True: authorize without redirect_uri shows the code on a page
        self.granted_scopes: list[str] | None = None
        self.refresh_count = 0
        self.grants: list[Grant] = []
        self.access_tokens: dict[str, AccessToken] = {}
        self._codes: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}
        self._dead_refresh: set[str] = set()
        self._deny: list[str] = []
        self._clock_offset = 0.0
        self._lock = threading.RLock()

    # -- test helpers ------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (access tokens and codes expire by it)."""
        self._clock_offset += seconds

    def expire_access_tokens(self) -> None:
        with self._lock:
            for tok in self.access_tokens.values():
                tok.expires_at = min(tok.expires_at, self.now() - 1)

    def deny_next_authorization(self, error: str = "access_denied") -> None:
        """The next authorize request redirects with ``error=<error>`` instead of a code."""
        self._deny.append(error)

    def issue_tokens(self, scopes: Iterable[str] = (), refresh: bool = True) -> dict[str, Any]:
        """Skip the browser: make a grant and return a token response dict (access/refresh token)."""
        grant = Grant(self.client_id, list(scopes), None, None, None, {})
        with self._lock:
            self.grants.append(grant)
            return self._token_payload(grant, "authorization_code", refresh)

    def revoke(self, token: str) -> bool:
        """Revoke the grant behind an access or refresh token (all its tokens die). False if unknown."""
        with self._lock:
            grant = self._refresh.get(token) or (
                self.access_tokens[token].grant if token in self.access_tokens else None
            )
            if grant is None:
                return False
            grant.revoked = True
            return True

    # -- provider hooks ----------------------------------------------------------------------------

    def error(self, status: int, error: str, description: str) -> Response:
        """Token-endpoint error; RFC 6749 §5.2 shape by default."""
        return json_response(status, {"error": error, "error_description": description})

    def unauthorized(self, kind: str, required_scopes: list[str]) -> Response:
        """Bearer failure; kind is missing | invalid | expired | scope."""
        return json_response(401, {"error": kind})

    def wants_refresh_token(self, grant: Grant) -> bool:
        return True

    def token_extra(self, grant: Grant, grant_type: str, payload: dict[str, Any]) -> None:
        """Add provider-specific fields to a token response (in place)."""

    def redirect_extra(self, grant: Grant) -> dict[str, str]:
        return {}

    def bad_redirect(self, redirect_uri: str | None) -> Response:
        return text_response(400, f"Invalid redirect_uri: {redirect_uri!r}")

    # -- endpoints ---------------------------------------------------------------------------------

    def _redirect_ok(self, uri: str | None) -> bool:
        if self.redirect_uris is None:
            return bool(uri)
        if uri in self.redirect_uris:
            return True
        if self.loopback_any_port and uri:
            got = urlsplit(uri)
            for reg in self.redirect_uris:
                want = urlsplit(reg)
                if (
                    got.scheme == want.scheme == "http"
                    and got.hostname == want.hostname
                    and got.hostname in ("127.0.0.1", "::1", "localhost")
                    and got.path == want.path
                ):
                    return True
        return False

    def authorize(self, req: Request) -> Response:
        """GET authorize: auto-consent, 302 to redirect_uri with code+state (RFC 6749 §4.1.2)."""
        q = {k: v[0] for k, v in req.query.items()}
        redirect_uri = q.get("redirect_uri")
        no_redirect = redirect_uri is None and self.allow_no_redirect
        if q.get("client_id") != self.client_id or not (no_redirect or self._redirect_ok(redirect_uri)):
            return self.bad_redirect(redirect_uri)  # RFC 6749 §4.1.2.1: never redirect to an unchecked URI
        out: dict[str, str] = {}
        if self._deny:
            out["error"] = self._deny.pop(0)
        elif q.get("response_type") != "code":
            out["error"] = "unsupported_response_type"
        elif q.get("code_challenge") and q.get("code_challenge_method", "plain") not in ("S256", "plain"):
            out["error"] = "invalid_request"
        else:
            scopes = [s for s in q.get("scope", "").split(self.scope_separator) if s]
            grant = Grant(
                self.client_id,
                list(self.granted_scopes) if self.granted_scopes is not None else scopes,
                redirect_uri,
                q.get("code_challenge"),
                q.get("code_challenge_method", "plain") if q.get("code_challenge") else None,
                q,
                code_issued_at=self.now(),
            )
            code = "code-" + secrets.token_urlsafe(16)
            with self._lock:
                self._codes[code] = grant
                self.grants.append(grant)
            out["code"] = code
            out.update(self.redirect_extra(grant))
        if "state" in q:
            out["state"] = q["state"]
        if redirect_uri is None:  # code shown to the user for copy/paste (Dropbox, providers.md §2.1)
            shown = out.get("code") or out.get("error", "")
            page = (
                f"<html><body><p>Enter this code into your app:</p><code id=code>{shown}</code></body></html>"
            )
            return Response(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})
        sep = "&" if "?" in redirect_uri else "?"
        return Response(302, b"", {"Location": redirect_uri + sep + urlencode(out)})

    def _client(self, req: Request, form: dict[str, str]) -> tuple[str | None, str | None, bool]:
        """(client_id, client_secret, via_basic) from the Basic header or the form."""
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                cid, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError:
                return None, None, True
            return cid, secret, True
        return form.get("client_id"), form.get("client_secret"), False

    def _check_client(self, req: Request, form: dict[str, str], pkce: bool) -> Response | None:
        cid, secret, via_basic = self._client(req, form)
        if cid != self.client_id:
            return self.error(401, "invalid_client", "The OAuth client was not found.")
        if self.client_auth == "basic" and not via_basic:
            return self.error(401, "invalid_client", "Client authentication with HTTP Basic is required.")
        if self.client_auth == "form" and via_basic:
            return self.error(401, "invalid_client", "Send client_id and client_secret in the form body.")
        if self.client_auth == "form" and not secret:
            return self.error(400, "invalid_request", "client_secret is missing.")
        if secret is None and self.client_auth == "none" and not pkce:
            return self.error(400, "invalid_request", "No client_secret and no code_verifier.")
        if secret is not None and secret != self.client_secret:
            return self.error(401, "invalid_client", "Unauthorized")
        return None

    def token(self, req: Request) -> Response:
        """POST token, form-encoded (RFC 6749 §4.1.3 and §6)."""
        if req.method != "POST" or req.content_type != "application/x-www-form-urlencoded":
            return self.error(400, "invalid_request", "Use POST with application/x-www-form-urlencoded.")
        form = req.form()
        gt = form.get("grant_type")
        with self._lock:
            if gt == "authorization_code":
                return self._code_grant(req, form)
            if gt == "refresh_token":
                return self._refresh_grant(req, form)
        return self.error(400, "unsupported_grant_type", f"Invalid grant_type: {gt}")

    def _code_grant(self, req: Request, form: dict[str, str]) -> Response:
        grant = self._codes.get(form.get("code", ""))
        verifier = form.get("code_verifier")
        bad = self._check_client(req, form, pkce=bool(grant and grant.code_challenge))
        if bad:
            return bad
        if (
            grant is None
            or grant.code_used
            or grant.revoked
            or self.now() - grant.code_issued_at > self.code_ttl
        ):
            if grant is not None and grant.code_used:  # RFC 6749 §4.1.2: reuse SHOULD revoke the grant
                grant.revoked = True
            return self.error(400, "invalid_grant", "Malformed auth code.")
        if (grant.redirect_uri or None) != (form.get("redirect_uri") or None):  # RFC 6749 §4.1.3
            return self.error(400, "invalid_grant", "redirect_uri_mismatch")
        if grant.code_challenge:  # RFC 7636 §4.6
            if not verifier:
                return self.error(400, "invalid_grant", "Missing code verifier.")
            if not _VERIFIER.fullmatch(verifier):
                return self.error(400, "invalid_request", "Invalid code verifier format.")
            computed = pkce_s256(verifier) if grant.code_challenge_method == "S256" else verifier
            if computed != grant.code_challenge:
                return self.error(400, "invalid_grant", "Invalid code verifier.")
        elif verifier:
            return self.error(400, "invalid_grant", "code_verifier sent but no code_challenge was.")
        grant.code_used = True
        return json_response(
            200, self._token_payload(grant, "authorization_code", self.wants_refresh_token(grant))
        )

    def _refresh_grant(self, req: Request, form: dict[str, str]) -> Response:
        rt = form.get("refresh_token", "")
        grant = self._refresh.get(rt)
        bad = self._check_client(req, form, pkce=bool(grant and grant.code_challenge))
        if bad:
            return bad
        if grant is None or grant.revoked or rt in self._dead_refresh:
            return self.error(400, "invalid_grant", "Token has been expired or revoked.")
        self.refresh_count += 1
        if self.rotate_refresh_tokens:
            self._dead_refresh.add(rt)
            del self._refresh[rt]
        return json_response(200, self._token_payload(grant, "refresh_token", self.rotate_refresh_tokens))

    def _token_payload(self, grant: Grant, grant_type: str, new_refresh: bool) -> dict[str, Any]:
        at = f"{self.token_prefix}-" + secrets.token_urlsafe(24)
        self.access_tokens[at] = AccessToken(at, grant, self.now() + self.access_token_ttl)
        payload: dict[str, Any] = {
            "access_token": at,
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
            "scope": self.scope_separator.join(grant.scopes),
        }
        if new_refresh:
            rt = "rt-" + secrets.token_urlsafe(24)
            self._refresh[rt] = grant
            grant.refresh_token = rt
            payload["refresh_token"] = rt
        self.token_extra(grant, grant_type, payload)
        return payload

    # -- resource-server side ----------------------------------------------------------------------

    def check_bearer(self, req: Request, scopes: Iterable[str] = ()) -> AccessToken:
        """Return the token for ``Authorization: Bearer``; raise :class:`Abort` with the provider's 401
        (or scope error) otherwise."""
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise Abort(self.unauthorized("missing", list(scopes)))
        with self._lock:
            tok = self.access_tokens.get(auth[7:].strip())
            if tok is None or tok.grant.revoked:
                raise Abort(self.unauthorized("invalid", list(scopes)))
            if tok.expires_at <= self.now():
                raise Abort(self.unauthorized("expired", list(scopes)))
        missing = [s for s in scopes if s not in tok.grant.scopes]
        if missing:
            raise Abort(self.unauthorized("scope", missing))
        return tok
