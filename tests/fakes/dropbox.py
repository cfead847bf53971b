"""Fake Dropbox API v2: three 127.0.0.1 servers, like the real hosts (providers.md §2.1):

* ``api`` (api.dropboxapi.com + www.dropbox.com): ``/oauth2/authorize``, ``/oauth2/token``,
  ``/2/auth/token/revoke``, ``/2/files/list_folder``, ``/2/files/list_folder/continue``
* ``content`` (content.dropboxapi.com): ``/2/files/download``
* ``notify`` (notify.dropboxapi.com): ``/2/files/list_folder/longpoll``, which blocks until something
  changes under the cursor's folder or its ``timeout`` ends (``longpoll_cap`` shortens that in tests)

Behaviour is from the Stone spec (``dropbox/stone/files.stone``, ``auth.stone``) and providers.md §2.
There is no usable OpenAPI for Dropbox (specs/README.md), so arguments are checked by hand here.

    with DropboxFake() as dbx:
        dbx.add_file("/Photos/a.jpg", b"...")
        token = dbx.issue_token()
        ... rpc base dbx.api_url, content base dbx.content_url ...
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .base import (
    Abort,
    FakeServer,
    Grant,
    OAuthServer,
    Request,
    Response,
    json_response,
    serve_bytes,
    text_response,
)

BLOCK = 4 * 1024 * 1024  # providers.md §2.3


def content_hash(data: bytes) -> str:
    """Dropbox content hash (providers.md §2.3): SHA-256 over the concatenated binary SHA-256 digests
    of 4 MiB blocks, as lowercase hex."""
    outer = hashlib.sha256()
    for i in range(0, len(data), BLOCK):
        outer.update(hashlib.sha256(data[i : i + BLOCK]).digest())
    return outer.hexdigest()


def route_error(tag_path: list[str], summary_extra: str = "..") -> Response:
    """409 route error: ``path/not_found`` -> {"error_summary": "path/not_found/..",
    "error": {".tag": "path", "path": {".tag": "not_found"}}} (providers.md §2.5)."""
    err: dict[str, Any] = {".tag": tag_path[-1]}
    for tag in reversed(tag_path[:-1]):
        err = {".tag": tag, tag: err}
    return json_response(409, {"error_summary": "/".join(tag_path) + "/" + summary_extra, "error": err})


def bad_input(route: str, message: str) -> Response:
    """400 plain text, as the HTTP docs' Errors section describes (providers.md §2.5)."""
    return text_response(400, f'Error in call to API function "{route}": {message}')


def _ts(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")  # common.DropboxTimestamp


@dataclass
class Entry:
    tag: str  # "file" | "folder" | "deleted"
    path_display: str
    id: str = ""
    data: bytes | None = None
    client_modified: str = ""
    server_modified: str = ""
    rev: str = ""
    is_downloadable: bool = True

    @property
    def path_lower(self) -> str:
        return self.path_display.lower()

    @property
    def name(self) -> str:
        return self.path_display.rsplit("/", 1)[-1]

    def metadata(self) -> dict[str, Any]:
        """files.stone Metadata / FileMetadata / FolderMetadata / DeletedMetadata."""
        m: dict[str, Any] = {
            ".tag": self.tag,
            "name": self.name,
            "path_lower": self.path_lower,
            "path_display": self.path_display,
        }
        if self.tag == "folder":
            m["id"] = self.id
        elif self.tag == "file":
            assert self.data is not None
            m.update(
                id=self.id,
                client_modified=self.client_modified,
                server_modified=self.server_modified,
                rev=self.rev,
                size=len(self.data),
                is_downloadable=self.is_downloadable,
                content_hash=content_hash(self.data),
            )
            if not self.is_downloadable:  # "This field must be set if is_downloadable is set to false."
                m["export_info"] = {"export_as": "pdf", "export_options": ["pdf"]}
        return m


@dataclass
class Cursor:
    path: str  # lower-case folder path, "" for root
    recursive: bool
    include_deleted: bool
    include_non_downloadable: bool
    limit: int
    pending: list[Entry]  # entries not yet returned in this page sequence
    seq: int  # change sequence the listing reflects
    valid: bool = True


class DropboxOAuth(OAuthServer):
    """providers.md §2.1: PKCE without secret (or secret when no PKCE), refresh token only with
    token_access_type=offline, 4 h access tokens, no rotation, space-separated scopes."""

    token_prefix = "sl."

    def __init__(self) -> None:
        super().__init__(
            client_id="fake-app-key",
            client_secret="fake-app-secret",
            client_auth="none",
            access_token_ttl=14400,
            rotate_refresh_tokens=False,
        )
        self.allow_no_redirect = True  # "the authorization code is displayed ... to copy and paste"
        self.account_id = "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"

    def wants_refresh_token(self, grant: Grant) -> bool:
        return grant.params.get("token_access_type") == "offline"

    def token_extra(self, grant: Grant, grant_type: str, payload: dict[str, Any]) -> None:
        payload["token_type"] = "bearer"
        if grant_type == "authorization_code":
            payload.update(uid="12345", account_id=self.account_id)
        else:  # refresh: access_token, token_type, expires_in only (sdk refresh_access_token)
            payload.pop("scope", None)

    def bad_redirect(self, redirect_uri: str | None) -> Response:
        return text_response(
            400,
            "Invalid redirect_uri. It must exactly match one of the redirect URIs "
            "you've pre-configured for your app (including the path).",
        )

    def unauthorized(self, kind: str, required_scopes: list[str]) -> Response:
        if kind == "missing":
            return text_response(
                400,
                'Error in call to API function: Must provide HTTP header "Authorization" '
                'or URL parameter "authorization".',
            )
        if kind == "scope":
            return json_response(
                401,
                {
                    "error_summary": "missing_scope/...",
                    "error": {".tag": "missing_scope", "required_scope": required_scopes[0]},
                },
            )
        tag = "expired_access_token" if kind == "expired" else "invalid_access_token"
        return json_response(401, {"error_summary": f"{tag}/...", "error": {".tag": tag}})


class DropboxFake:
    """Attributes: ``api`` and ``content`` (FakeServer), ``oauth`` (DropboxOAuth), ``entries``
    (path_lower -> Entry), ``default_limit``; ``requests``/``violations`` merge both servers."""

    def __init__(self) -> None:
        self.api = FakeServer("dropbox-api")
        self.content = FakeServer("dropbox-content")
        self.notify = FakeServer("dropbox-notify")
        self.changed = threading.Condition()  # notified on every mutation: wakes blocked long polls
        self.longpoll_backoff: int | None = None  # sent as ListFolderLongpollResult.backoff when set
        self.longpoll_cap: float | None = None  # block at most this many real seconds (tests)
        self.longpolls: list[tuple[float, float, bool]] = []  # (started, answered, changes): time.monotonic()
        self.oauth = DropboxOAuth()
        self.entries: dict[str, Entry] = {}
        self.changes: list[str] = []  # path_lower per mutation; index+1 = sequence number
        self.cursors: dict[str, Cursor] = {}
        self.default_limit = 2000
        a = self.api
        a.route("GET", r"/oauth2/authorize", self.oauth.authorize)
        a.route("POST", r"/oauth2/token", self.oauth.token)
        a.route("POST", r"/2/auth/token/revoke", self._revoke)
        a.route("POST", r"/2/files/list_folder", self._list_folder)
        a.route("POST", r"/2/files/list_folder/continue", self._continue)
        self.content.route("POST", r"/2/files/download", self._download)
        self.content.route("GET", r"/2/files/download", self._download)
        self.notify.route("POST", r"/2/files/list_folder/longpoll", self._longpoll)

    # -- lifecycle / delegation ----------------------------------------------------------------------

    def __enter__(self) -> DropboxFake:
        self.api.start()
        self.content.start()
        self.notify.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    start = __enter__

    def stop(self) -> None:
        self.api.stop()
        self.content.stop()
        self.notify.stop()
        with self.changed:
            self.changed.notify_all()

    api_url = property(lambda self: self.api.base_url)  # https://api.dropboxapi.com
    content_url = property(lambda self: self.content.base_url)  # https://content.dropboxapi.com
    notify_url = property(lambda self: self.notify.base_url)  # https://notify.dropboxapi.com
    authorize_url = property(lambda self: self.api.base_url + "/oauth2/authorize")
    token_url = property(lambda self: self.api.base_url + "/oauth2/token")
    revoke_url = property(lambda self: self.api.base_url + "/2/auth/token/revoke")
    requests = property(lambda self: self.api.requests + self.content.requests + self.notify.requests)
    violations = property(lambda self: self.api.violations + self.content.violations + self.notify.violations)

    def _server(self, host: str) -> FakeServer:
        return {"api": self.api, "content": self.content, "notify": self.notify}[host]

    def fail_next(self, *args: Any, host: str = "api", **kwargs: Any) -> None:
        self._server(host).fail_next(*args, **kwargs)

    def truncate_next(self, *, host: str = "content", **kwargs: Any) -> None:
        self._server(host).truncate_next(**kwargs)

    def wrong_range_next(self, *, host: str = "content", **kwargs: Any) -> None:
        """The next download with ``Range`` is answered from another start (see FakeServer.wrong_range_next)."""
        self._server(host).wrong_range_next(**kwargs)

    def fail_next_rate_limit(
        self,
        retry_after: int = 1,
        *,
        host: str = "api",
        json_body: bool = True,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """429 + Retry-After; JSON RateLimitError body (auth.stone) or plain text (providers.md §2.5)."""
        headers = {"Retry-After": str(retry_after)}
        if json_body:
            body: Any = {
                "error_summary": "too_many_requests/..",
                "error": {"reason": {".tag": "too_many_requests"}, "retry_after": retry_after},
            }
        else:
            body, headers["Content-Type"] = "Too Many Requests", "text/plain"
        self._server(host).fail_next(429, body, headers, times=times, path=path)

    def issue_token(self, scopes: list[str] | None = None) -> str:
        return self.oauth.issue_tokens(scopes or ["files.metadata.read", "files.content.read"])[
            "access_token"
        ]

    # -- tree builder --------------------------------------------------------------------------------

    def _touch(self, path_lower: str) -> None:
        with self.changed:
            self.changes.append(path_lower)
            self.changed.notify_all()

    def _ensure_parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(len(parts)):
            p = "/" + "/".join(parts[: i + 1])
            if p.lower() not in self.entries or self.entries[p.lower()].tag == "deleted":
                self.add_folder(p)

    def add_folder(self, path: str) -> str:
        assert path.startswith("/") and not path.endswith("/"), path
        self._ensure_parents(path)
        e = Entry("folder", path, id="id:" + secrets.token_urlsafe(16))
        self.entries[e.path_lower] = e
        self._touch(e.path_lower)
        return e.id

    def add_file(
        self, path: str, data: bytes, *, client_modified: str | None = None, is_downloadable: bool = True
    ) -> str:
        """Add or replace a file (parents are created). Returns the file id ("id:...")."""
        assert path.startswith("/") and not path.endswith("/"), path
        self._ensure_parents(path)
        old = self.entries.get(path.lower())
        now = _ts()
        e = Entry(
            "file",
            path,
            id=old.id if old and old.tag == "file" else "id:" + secrets.token_urlsafe(16),
            data=data,
            client_modified=client_modified or now,
            server_modified=now,
            rev=f"{len(self.changes) + 1:09x}" + secrets.token_hex(3),
            is_downloadable=is_downloadable,
        )
        self.entries[e.path_lower] = e
        self._touch(e.path_lower)
        return e.id

    def delete(self, path: str) -> None:
        """Delete a file or folder (and its children); leaves ``deleted`` entries for cursors."""
        low = path.lower()
        for key in [k for k in self.entries if k == low or k.startswith(low + "/")]:
            self.entries[key] = Entry("deleted", self.entries[key].path_display)
            self._touch(key)

    def expire_cursors(self) -> None:
        """Every cursor issued so far now gives 409 ``reset`` (ListFolderContinueError.reset)."""
        for c in self.cursors.values():
            c.valid = False

    # -- helpers -------------------------------------------------------------------------------------

    def _rpc_args(self, req: Request, route: str) -> dict[str, Any]:
        """RPC endpoints: JSON body with Content-Type application/json (providers.md §2.4)."""
        ct = req.headers.get("content-type", "")
        if ct.split(";")[0].strip().lower() not in ("application/json", "text/plain") or (
            ct.lower().startswith("text/plain") and "dropbox-cors-hack" not in ct.lower()
        ):
            raise Abort(
                bad_input(
                    route,
                    f'Bad HTTP "Content-Type" header: "{ct}".  Expecting one of '
                    '"application/json", "application/json; charset=utf-8", '
                    '"text/plain; charset=dropbox-cors-hack".',
                )
            )
        try:
            args = json.loads(req.body)
        except ValueError:
            raise Abort(bad_input(route, "request body: could not decode input as JSON")) from None
        if not isinstance(args, dict):
            raise Abort(bad_input(route, "request body: expected object"))
        return args

    @staticmethod
    def _check_types(
        route: str, args: dict[str, Any], spec: dict[str, type], where: str = "request body"
    ) -> None:
        for key, value in args.items():
            if key not in spec:  # unverified: whether Dropbox rejects or ignores unknown fields
                raise Abort(bad_input(route, f'{where}: unknown field "{key}"'))
            if not isinstance(value, spec[key]) or (spec[key] is int and isinstance(value, bool)):
                raise Abort(bad_input(route, f"{where}: {key}: expected {spec[key].__name__}"))

    def _resolve(self, path: str) -> Entry | None:
        if path.startswith("id:"):
            return next((e for e in self.entries.values() if e.id == path and e.tag != "deleted"), None)
        e = self.entries.get(path.lower())
        return e if e and e.tag != "deleted" else None

    def _in_scope(self, c: Cursor, e: Entry) -> bool:
        parent = e.path_lower.rsplit("/", 1)[0]
        if c.recursive:
            return e.path_lower.startswith(c.path + "/")
        return parent == c.path

    def _page(self, c: Cursor) -> Response:
        page, c.pending = c.pending[: c.limit], c.pending[c.limit :]
        new_id = "AAH" + secrets.token_urlsafe(40)
        self.cursors[new_id] = c
        return json_response(
            200, {"entries": [e.metadata() for e in page], "cursor": new_id, "has_more": bool(c.pending)}
        )

    # -- endpoints -----------------------------------------------------------------------------------

    def _revoke(self, req: Request) -> Response:
        """auth.stone token/revoke: Bearer, Void in and out; kills the refresh token and its access tokens."""
        tok = self.oauth.check_bearer(req)
        self.oauth.revoke(tok.token)
        return json_response(200, None)

    def _list_folder(self, req: Request) -> Response:
        route = "files/list_folder"
        self.oauth.check_bearer(req, ["files.metadata.read"])
        args = self._rpc_args(req, route)
        self._check_types(
            route,
            args,
            {
                "path": str,
                "recursive": bool,
                "include_media_info": bool,
                "include_deleted": bool,
                "include_has_explicit_shared_members": bool,
                "include_mounted_folders": bool,
                "limit": int,
                "include_non_downloadable_files": bool,
                "include_restorable_info": bool,
            },
        )
        if "path" not in args:
            return bad_input(route, 'request body: missing required field "path"')
        path = args["path"]
        if path == "/":  # files.stone PathROrId: root is ""
            return bad_input(
                route, 'request body: path: Specify the root folder as an empty string rather than as "/".'
            )
        if path and not (path.startswith("/") or path.startswith("id:")) or path.endswith("/"):
            return bad_input(
                route,
                f"request body: path: '{path}' did not match pattern "
                "'(/(.|[\\r\\n])*)?|id:.*|(ns:[0-9]+(/.*)?)'",
            )
        limit = args.get("limit", self.default_limit)
        if not 1 <= limit <= 2000:  # UInt32(max_value=2000, min_value=1)
            return bad_input(route, f"request body: limit: {limit} is not within range [1, 2000]")
        folder = ""
        if path:
            e = self._resolve(path)
            if e is None:
                return route_error(["path", "not_found"])
            if e.tag != "folder":
                return route_error(["path", "not_folder"])
            folder = e.path_lower
        c = Cursor(
            folder,
            args.get("recursive", False),
            args.get("include_deleted", False),
            args.get("include_non_downloadable_files", True),
            limit,
            [],
            len(self.changes),
        )
        c.pending = sorted(
            (
                e
                for e in self.entries.values()
                if self._in_scope(c, e)
                and (e.tag != "deleted" or c.include_deleted)
                and (e.tag != "file" or e.is_downloadable or c.include_non_downloadable)
            ),
            key=lambda e: e.path_lower,
        )
        return self._page(c)

    def _continue(self, req: Request) -> Response:
        route = "files/list_folder/continue"
        self.oauth.check_bearer(req, ["files.metadata.read"])
        args = self._rpc_args(req, route)
        self._check_types(route, args, {"cursor": str})
        old = self.cursors.get(args.get("cursor", ""))
        if old is None:
            return bad_input(route, 'Invalid "cursor" parameter: the cursor is malformed or from another app')
        if not old.valid:
            return route_error(["reset"])
        c = Cursor(
            old.path,
            old.recursive,
            old.include_deleted,
            old.include_non_downloadable,
            old.limit,
            list(old.pending),
            old.seq,
        )
        if not c.pending:  # caught up: report what changed since the cursor's sequence number
            changed = sorted(set(self.changes[c.seq :]))
            c.pending = [
                self.entries[p] for p in changed if p in self.entries and self._in_scope(c, self.entries[p])
            ]
            c.seq = len(self.changes)
        return self._page(c)

    def _longpoll(self, req: Request) -> Response:
        """files/list_folder/longpoll (files.stone): ``auth = "noauth"``, so a request that carries a
        credential is refused here (pixsrc must not send its token to a host that takes none; what the
        real host does with one is unverified). ``cursor`` required, ``timeout`` 30..480 (default 30).
        Blocks until a change under the cursor's folder since the cursor was made, or the timeout;
        answers ``{"changes": bool}`` plus ``backoff`` when ``longpoll_backoff`` is set. An invalidated
        cursor gives 409 ``reset`` (ListFolderLongpollError)."""
        import time

        route = "files/list_folder/longpoll"
        if "authorization" in req.headers:
            return bad_input(route, "this endpoint takes no Authorization header (noauth)")
        args = self._rpc_args(req, route)
        self._check_types(route, args, {"cursor": str, "timeout": int})
        if "cursor" not in args:
            return bad_input(route, 'request body: missing required field "cursor"')
        timeout = args.get("timeout", 30)
        if not 30 <= timeout <= 480:
            return bad_input(route, f"request body: timeout: {timeout} is not within range [30, 480]")
        c = self.cursors.get(args["cursor"])
        if c is None:
            return bad_input(route, 'Invalid "cursor" parameter: the cursor is malformed or from another app')
        if not c.valid:
            return route_error(["reset"])
        limit = timeout if self.longpoll_cap is None else min(timeout, self.longpoll_cap)
        started = time.monotonic()
        deadline = started + limit

        def changed() -> bool:
            return any(self._in_scope(c, self.entries[p]) for p in set(self.changes[c.seq :]) if p in self.entries)

        with self.changed:
            while not (found := changed()) and (left := deadline - time.monotonic()) > 0:
                self.changed.wait(left)
        self.longpolls.append((started, time.monotonic(), found))
        answer: dict[str, Any] = {"changes": found}
        if self.longpoll_backoff is not None:
            answer["backoff"] = self.longpoll_backoff
        return json_response(200, answer)

    def _download(self, req: Request) -> Response:
        """files/download (content host, "download" style): arg in Dropbox-API-Arg header (or ``arg``
        query), no body, result JSON in Dropbox-API-Result, bytes as body; Range honoured."""
        route = "files/download"
        raw = req.headers.get("dropbox-api-arg")
        if raw is None:
            raw = req.arg("arg")
            if raw is None:
                return bad_input(route, 'Must provide HTTP header "Dropbox-API-Arg" or URL parameter "arg".')
        elif any(ord(ch) > 0x7E for ch in raw):  # json-encoding page: escape 0x7F and non-ASCII as \uXXXX
            return bad_input(
                route,
                'HTTP header "Dropbox-API-Arg": could not decode input as JSON '
                "(non-ASCII characters must be escaped as \\uXXXX)",
            )
        ct = req.headers.get("content-type")
        if ct is not None and ct.split(";")[0].strip().lower() not in (
            "",
            "text/plain",
            "application/octet-stream",
        ):
            return bad_input(
                route,
                f'Bad HTTP "Content-Type" header: "{ct}".  Expecting one of "text/plain", '
                '"text/plain; charset=utf-8", "application/octet-stream", '
                '"application/octet-stream; charset=utf-8".',
            )
        if req.body:
            return bad_input(
                route, "request body: this endpoint takes no body; pass arguments in Dropbox-API-Arg"
            )
        self.oauth.check_bearer(req, ["files.content.read"])
        try:
            args = json.loads(raw)
        except ValueError:
            return bad_input(route, 'HTTP header "Dropbox-API-Arg": could not decode input as JSON')
        if not isinstance(args, dict):
            return bad_input(route, 'HTTP header "Dropbox-API-Arg": expected object')
        self._check_types(route, args, {"path": str, "rev": str}, where='HTTP header "Dropbox-API-Arg"')
        e = self._resolve(args.get("path", ""))
        if e is None:
            return route_error(["path", "not_found"])
        if e.tag != "file":
            return route_error(["path", "not_file"])
        if not e.is_downloadable:
            return route_error(["unsupported_file"])
        assert e.data is not None
        result = json.dumps(e.metadata())  # ensure_ascii: header-safe
        return serve_bytes(
            req,
            e.data,
            {
                "Content-Type": "application/octet-stream",
                "Dropbox-API-Result": result,
                "ETag": f'W/"{e.rev}"',
                "x-dropbox-request-id": secrets.token_hex(16),
            },
        )
