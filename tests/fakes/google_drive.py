"""Fake Google Drive v3 + Google OAuth on one 127.0.0.1 server (test code only).

Paths mirror the real hosts (providers.md §1.1, §1.6):

* ``/o/oauth2/v2/auth`` (accounts.google.com), ``/token`` and ``/revoke`` (oauth2.googleapis.com)
* ``/drive/v3/files``, ``/drive/v3/files/{id}`` (+``alt=media``), ``/drive/v3/files/{id}/export``,
  ``/drive/v3/changes/startPageToken``, ``/drive/v3/changes``, ``/drive/v3/drives`` (www.googleapis.com)

Every ``/drive/v3`` request is validated against ``drive.v3.openapi.apisguru.json`` (openapi-core);
problems land in ``violations``. Behaviour follows the official discovery document
(``drive.v3.discovery.json``) where the two disagree (e.g. pageSize > 1000 is clamped, but still
reported as a violation because the OpenAPI file declares ``maximum: 1000``).

Build a tree::

    with DriveFake() as drive:
        photos = drive.add_folder("Photos")
        drive.add_file("a.jpg", b"...", parent=photos)
        token = drive.issue_token()            # or run the real OAuth flow
        ... point pixsrc at drive.base_url / drive.api_url ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from .base import (
    Abort,
    FakeServer,
    Grant,
    OAuthServer,
    OneServerFake,
    Request,
    Response,
    SpecValidator,
    json_response,
    serve_bytes,
    spec_path,
)

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
DOC = "application/vnd.google-apps.document"
DRAWING = "application/vnd.google-apps.drawing"
SCOPE_RO = "https://www.googleapis.com/auth/drive.readonly"
SCOPE_META_RO = "https://www.googleapis.com/auth/drive.metadata.readonly"
SCOPE_FULL = "https://www.googleapis.com/auth/drive"
READ_SCOPES = {SCOPE_RO, SCOPE_META_RO, SCOPE_FULL}  # providers.md §1.5
CONTENT_SCOPES = {SCOPE_RO, SCOPE_FULL}
EXPORT_LIMIT = 10 * 1024 * 1024  # discovery files.export: "exported content is limited to 10 MB"

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# reason -> (domain, message); providers.md §1.7 and the handle-errors guide it cites
REASONS = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "downloadQuotaExceeded": ("global", "The download quota for this file has been exceeded."),
    "cannotDownloadAbusiveFile": (
        "global",
        "This file has been identified as malware or spam and cannot be downloaded.",
    ),
    "exportSizeLimitExceeded": ("global", "This file is too large to be exported."),
    "fileNotDownloadable": (
        "global",
        "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
    ),
    "cannotDownloadFile": ("global", "The user does not have sufficient permissions for this file."),
    "insufficientPermissions": ("global", "Insufficient Permission"),
    "notFound": ("global", "File not found."),
    "authError": ("global", "Invalid Credentials"),
    "backendError": ("global", "Backend Error"),
    "invalid": ("global", "Invalid Value"),
    "badRequest": ("global", "Bad Request"),
}


def google_error(
    status: int,
    reason: str,
    message: str | None = None,
    location: str | None = None,
    location_type: str = "parameter",
    headers: dict[str, str] | None = None,
) -> Response:
    """Google's JSON error body (providers.md §1.7):
    {"error": {"code", "message", "errors": [{domain, reason, message}], "status"}}."""
    domain, default = REASONS.get(reason, ("global", reason))
    item: dict[str, Any] = {"message": message or default, "domain": domain, "reason": reason}
    if location:
        item.update(location=location, locationType=location_type)
    body = {
        "error": {
            "code": status,
            "message": message or default,
            "errors": [item],
            "status": _STATUS.get(status, "UNKNOWN"),
        }
    }
    return json_response(status, body, headers)


# --------------------------------------------------------------------------------------------------
# fields projection, e.g.
# ``fields=nextPageToken,files(id,name,shortcutDetails(targetId),capabilities/canDownload)``


@cache
def _discovery_schemas() -> dict[str, Any]:
    with open(spec_path("google-drive", "drive.v3.discovery.json"), encoding="utf-8") as fh:
        return json.load(fh)["schemas"]


def parse_fields(text: str) -> dict[str, Any]:
    """``a,b(c,d/e),f/g`` -> {"a": None, "b": {"c": None, "d": {"e": None}}, "f": {"g": None}}; None = all."""
    pos = 0

    def parse_list(stop: str | None) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while True:
            m = re.compile(r"\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*)\s*").match(text, pos)
            if not m:
                raise ValueError(text[pos:] or text)
            pos = m.end()
            path = m[1].split("/")
            sub: Any = None
            if pos < len(text) and text[pos] == "(":
                pos += 1
                sub = parse_list(")")
            _insert(out, path, sub)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if stop and pos < len(text) and text[pos] == stop:
                pos += 1
                return out
            if stop is None and pos == len(text):
                return out
            raise ValueError(text[pos:] or text)

    return parse_list(None)


def _insert(tree: dict[str, Any], path: list[str], sub: dict[str, Any] | None) -> None:
    """Add ``a/b/c`` (with optional sub-selection) to a selection tree; None means "everything"."""
    node = tree
    for part in path[:-1]:
        if part in node and node[part] is None:
            return  # already fully selected
        node = node.setdefault(part, {})
    last = path[-1]
    if last not in node:
        node[last] = sub
    elif node[last] is not None:
        node[last] = None if sub is None else {**node[last], **sub}


def check_fields(tree: dict[str, Any], schema: str) -> str | None:
    """Return the first field name the discovery schema does not have, else None."""
    props = _discovery_schemas()[schema]["properties"]
    for name, sub in tree.items():
        if name == "*":
            continue
        if name not in props:
            return name
        if sub:
            prop = props[name]
            ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
            if ref:
                bad = check_fields(sub, ref)
            elif "properties" in prop:
                bad = next((k for k in sub if k not in prop["properties"]), None)
            else:
                bad = next(iter(sub))
            if bad:
                return bad
    return None


def project(obj: Any, tree: dict[str, Any] | None) -> Any:
    if tree is None or "*" in tree:
        return obj
    if isinstance(obj, list):
        return [project(x, tree) for x in obj]
    if not isinstance(obj, dict):
        return obj
    return {k: project(obj[k], sub) for k, sub in tree.items() if k in obj}


# --------------------------------------------------------------------------------------------------
# q parsing: the forms pixsrc uses (providers.md §1.6), joined with "and"


_Q_TOKEN = re.compile(r"\s*(?:'((?:[^'\\]|\\.)*)'|(!=|<=|>=|=|<|>)|([A-Za-z]+))")


def parse_q(q: str) -> list[tuple[str, str, str]]:
    """``'<id>' in parents and trashed = false and mimeType contains 'image/'`` -> [(field, op, value)].
    Supported: ``'<v>' in parents``; ``trashed = true|false``; ``mimeType``/``name`` with = != contains;
    ``modifiedTime``/``createdTime`` with = != < <= > >=. ``or``, ``not`` and parentheses raise ValueError."""
    toks: list[tuple[str, str]] = []
    pos = 0
    while pos < len(q.rstrip()):
        m = _Q_TOKEN.match(q, pos)
        if not m or m.end() == pos:
            raise ValueError(q)
        pos = m.end()
        if m[1] is not None:  # string literal: \' and \\ escapes (search-files guide)
            toks.append(("str", re.sub(r"\\(.)", r"\1", m[1])))
        elif m[2]:
            toks.append(("op", m[2]))
        else:
            toks.append(("word", m[3]))
    terms, i = [], 0
    while i < len(toks):
        t = toks[i : i + 3]
        if len(t) == 3 and t[0][0] == "str" and t[1] == ("word", "in") and t[2] == ("word", "parents"):
            terms.append(("parents", "in", t[0][1]))
        elif (
            len(t) == 3
            and t[0] == ("word", "trashed")
            and t[1] == ("op", "=")
            and t[2][1] in ("true", "false")
        ):
            terms.append(("trashed", "=", t[2][1]))
        elif (
            len(t) == 3
            and t[0][0] == "word"
            and t[0][1] in ("mimeType", "name")
            and t[2][0] == "str"
            and t[1][1] in ("=", "!=", "contains")
        ) or (
            len(t) == 3
            and t[0][0] == "word"
            and t[0][1] in ("modifiedTime", "createdTime")
            and t[1][0] == "op"
            and t[2][0] == "str"
        ):
            terms.append((t[0][1], t[1][1], t[2][1]))
        else:
            raise ValueError(q)
        i += 3
        if i < len(toks):
            if toks[i] != ("word", "and") or i + 1 == len(toks):
                raise ValueError(q)
            i += 1
    return terms


def _cmp(a: str, op: str, b: str) -> bool:
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


# --------------------------------------------------------------------------------------------------
# the model


def _ts(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


@dataclass
class DriveFile:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    data: bytes | None = None  # blob content (None for folders, Google types, shortcuts)
    exports: dict[str, bytes] = field(default_factory=dict)  # Google Workspace types: mime -> bytes
    drive_id: str | None = None  # shared drive
    trashed: bool = False
    can_download: bool = True
    abusive: bool = False
    target_id: str | None = None  # shortcuts
    target_mime_type: str | None = None
    modified_time: str = field(default_factory=_ts)
    created_time: str = field(default_factory=_ts)
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the resource (e.g. imageMediaMetadata)
    version: int = 1

    def resource(self) -> dict[str, Any]:
        """The full File resource (discovery ``File`` schema); projection trims it."""
        r: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "parents": list(self.parents),
            "trashed": self.trashed,
            "explicitlyTrashed": self.trashed,
            "modifiedTime": self.modified_time,
            "createdTime": self.created_time,
            "version": str(self.version),
            "starred": False,
            "capabilities": {
                "canDownload": self.can_download,
                "canEdit": False,
                "canListChildren": self.mime_type == FOLDER,
            },
        }
        if self.drive_id:
            r["driveId"] = self.drive_id
        if self.data is not None:  # File.md5Checksum/sha*Checksum/size: blobs only; size is an int64 string
            r.update(
                size=str(len(self.data)),
                md5Checksum=hashlib.md5(self.data).hexdigest(),
                sha1Checksum=hashlib.sha1(self.data).hexdigest(),
                sha256Checksum=hashlib.sha256(self.data).hexdigest(),
                headRevisionId="rev" + hashlib.md5(self.data).hexdigest()[:12],
                originalFilename=self.name,
            )
            if "." in self.name:
                r.update(
                    fileExtension=self.name.rsplit(".", 1)[1], fullFileExtension=self.name.split(".", 1)[1]
                )
        if self.mime_type == SHORTCUT:
            r["shortcutDetails"] = {"targetId": self.target_id, "targetMimeType": self.target_mime_type}
        if self.exports:
            r["exportLinks"] = {
                m: f"https://docs.google.com/export?id={self.id}&exportFormat={m}" for m in self.exports
            }
        r.update(self.extra)
        return r


@dataclass
class Change:
    seq: int
    file_id: str
    removed: bool
    time: str


class GoogleOAuth(OAuthServer):
    """providers.md §1.1-1.3: secret in the form, PKCE S256, no rotation, ~1 h tokens, any loopback port,
    refresh token only with access_type=offline on a consent (first time, or prompt=consent)."""

    token_prefix = "ya29"

    def __init__(self) -> None:
        super().__init__(
            client_id="123-fake.apps.googleusercontent.com",
            client_secret="GOCSPX-fake",
            client_auth="form",
            access_token_ttl=3599,
            rotate_refresh_tokens=False,
        )
        self.consented = False

    def _redirect_ok(self, uri: str | None) -> bool:  # §1.2: loopback any port; OOB is dead
        if self.redirect_uris is not None:
            return super()._redirect_ok(uri)
        m = re.match(r"http://(127\.0\.0\.1|\[::1\]|localhost)(:\d+)?(/|$)", uri or "")
        return bool(m)

    def wants_refresh_token(self, grant: Grant) -> bool:
        offline = grant.params.get("access_type") == "offline"
        first = not self.consented or grant.params.get("prompt") == "consent"
        self.consented = True
        return offline and first

    def redirect_extra(self, grant: Grant) -> dict[str, str]:
        return {"scope": " ".join(grant.scopes)}  # Google echoes the granted scopes in the redirect

    def unauthorized(self, kind: str, required_scopes: list[str]) -> Response:
        if kind == "scope":
            return google_error(
                403, "insufficientPermissions", "Request had insufficient authentication scopes."
            )
        return google_error(
            401,
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
            "other valid authentication credential.",
            location="Authorization",
            location_type="header",
            headers={
                "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
            },
        )


class DriveFake(OneServerFake):
    """Fake Drive v3. Attributes: ``server`` (FakeServer), ``oauth`` (GoogleOAuth), ``files`` (id ->
    DriveFile), ``drives`` (shared drive id -> name), ``export_limit``, ``violations``, ``requests``."""

    ROOT = "root-folder-id"

    def __init__(self, *, validate: bool = True):
        validator = (
            SpecValidator.load(
                spec_path("google-drive", "drive.v3.openapi.apisguru.json"), "https://www.googleapis.com"
            )
            if validate
            else None
        )
        self.server = FakeServer("google-drive", validator)
        self.oauth = GoogleOAuth()
        self.files: dict[str, DriveFile] = {}
        self.drives: dict[str, str] = {}
        self.changes: list[Change] = []
        self.export_limit = EXPORT_LIMIT
        self._token_gen = 0
        self.files[self.ROOT] = DriveFile(self.ROOT, "My Drive", FOLDER, [])
        s = self.server
        s.not_found = lambda req: google_error(404, "notFound", "Not Found")  # type: ignore[method-assign]
        s.route("GET", r"/o/oauth2/v2/auth|/o/oauth2/auth", self.oauth.authorize, validate=False)
        s.route("POST", r"/token", self.oauth.token, validate=False)
        s.route("POST", r"/revoke", self._revoke, validate=False)
        s.route("GET", r"/drive/v3/files", self._list)
        s.route("GET", r"/drive/v3/files/(?P<fid>[^/]+)", self._get)
        s.route("GET", r"/drive/v3/files/(?P<fid>[^/]+)/export", self._export)
        s.route("GET", r"/drive/v3/changes/startPageToken", self._start_token)
        s.route("GET", r"/drive/v3/changes", self._changes)
        s.route("GET", r"/drive/v3/drives", self._drives)

    # -- lifecycle / delegation ----------------------------------------------------------------------

    def __enter__(self) -> DriveFake:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    start = __enter__

    def stop(self) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def api_url(self) -> str:  # https://www.googleapis.com/drive/v3
        return self.server.base_url + "/drive/v3"

    authorize_url = property(lambda self: self.base_url + "/o/oauth2/v2/auth")
    token_url = property(lambda self: self.base_url + "/token")
    revoke_url = property(lambda self: self.base_url + "/revoke")

    def fail_next_error(
        self,
        status: int,
        reason: str | None = None,
        *,
        message: str | None = None,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """One-shot Google-shaped error, e.g. ``fail_next_error(403, "userRateLimitExceeded")``,
        ``fail_next_error(429)``, ``fail_next_error(503)``."""
        reason = reason or {401: "authError", 404: "notFound", 429: "rateLimitExceeded"}.get(
            status, "backendError"
        )
        r = google_error(status, reason, message, headers=headers)
        self.server.fail_next(status, r.body, r.headers, times=times, method=method, path=path)

    def issue_token(self, scopes: list[str] | None = None) -> str:
        return self.oauth.issue_tokens(scopes or [SCOPE_RO])["access_token"]

    # -- tree builder --------------------------------------------------------------------------------

    def _add(self, f: DriveFile) -> str:
        parent = self.files.get(f.parents[0]) if f.parents else None
        if parent is not None and parent.drive_id and f.drive_id is None:
            f.drive_id = parent.drive_id
        self.files[f.id] = f
        self._record(f.id)
        return f.id

    def _record(self, file_id: str, removed: bool = False) -> None:
        self.changes.append(Change(len(self.changes) + 1, file_id, removed, _ts()))

    @staticmethod
    def new_id() -> str:
        return "1" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")

    def _parent(self, parent: str) -> list[str]:
        return [self.ROOT if parent == "root" else parent]

    def add_folder(self, name: str, parent: str = "root", **kw: Any) -> str:
        return self._add(DriveFile(self.new_id(), name, FOLDER, self._parent(parent), **kw))

    def add_file(
        self, name: str, data: bytes, parent: str = "root", mime_type: str | None = None, **kw: Any
    ) -> str:
        """A blob: md5Checksum/sha256Checksum/size come from ``data``. kw: trashed, can_download, abusive,
        modified_time (RFC 3339 string), extra={...} (e.g. imageMediaMetadata), file_id."""
        mime = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return self._add(
            DriveFile(
                kw.pop("file_id", None) or self.new_id(), name, mime, self._parent(parent), data=data, **kw
            )
        )

    def add_google_doc(
        self,
        name: str,
        parent: str = "root",
        mime_type: str = DOC,
        exports: dict[str, bytes] | None = None,
        **kw: Any,
    ) -> str:
        """A Docs Editors file: no md5/size; only files.export works (with ``exports``' formats)."""
        exports = (
            exports if exports is not None else {"application/pdf": b"%PDF-1.4 fake", "text/plain": b"text"}
        )
        return self._add(
            DriveFile(self.new_id(), name, mime_type, self._parent(parent), exports=exports, **kw)
        )

    def add_drawing(self, name: str, png: bytes, parent: str = "root", **kw: Any) -> str:
        """A Google Drawing exportable as image/png, image/jpeg, image/svg+xml, application/pdf
        (providers.md §1.6, ref-export-formats)."""
        exports = {
            "image/png": png,
            "image/jpeg": b"\xff\xd8\xff" + png,
            "image/svg+xml": b"<svg/>",
            "application/pdf": b"%PDF-1.4 drawing",
        }
        return self.add_google_doc(name, parent, DRAWING, exports, **kw)

    def add_shortcut(
        self, name: str, target_id: str, parent: str = "root", target_mime_type: str | None = None, **kw: Any
    ) -> str:
        """A shortcut; ``targetMimeType`` is a snapshot. A target id that does not exist is dangling."""
        target = self.files.get(target_id)
        tmime = target_mime_type or (target.mime_type if target else "application/octet-stream")
        return self._add(
            DriveFile(
                self.new_id(),
                name,
                SHORTCUT,
                self._parent(parent),
                target_id=target_id,
                target_mime_type=tmime,
                **kw,
            )
        )

    def add_shared_drive(self, name: str) -> str:
        """A shared drive; its id is also the id of its root folder (add children with parent=<id>)."""
        drive_id = "0A" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        self.drives[drive_id] = name
        self.files[drive_id] = DriveFile(drive_id, name, FOLDER, [], drive_id=drive_id)
        return drive_id

    def update_file(self, file_id: str, data: bytes | None = None, **changes: Any) -> None:
        f = self.files[file_id]
        if data is not None:
            f.data = data
        for k, v in changes.items():
            setattr(f, k, v)
        f.version += 1
        f.modified_time = changes.get("modified_time", _ts())
        self._record(file_id)

    def trash(self, file_id: str) -> None:
        self.update_file(file_id, trashed=True)

    def delete(self, file_id: str) -> None:
        self.files.pop(file_id)
        self._record(file_id, removed=True)

    def invalidate_page_tokens(self) -> None:
        """Every nextPageToken handed out so far becomes invalid (400 on use)."""
        self._token_gen += 1

    # -- helpers -------------------------------------------------------------------------------------

    def _auth(self, req: Request, any_of: set[str] = READ_SCOPES) -> None:
        tok = self.oauth.check_bearer(req)
        if not any_of & set(tok.grant.scopes):
            raise Abort(self.oauth.unauthorized("scope", sorted(any_of)))

    @staticmethod
    def _flag(req: Request, name: str) -> bool:
        return req.arg(name, "false") == "true"

    def _fields(self, req: Request, schema: str) -> dict[str, Any] | None:
        text = req.arg("fields")
        if text is None:
            return None
        try:
            tree = parse_fields(text)
        except ValueError:
            raise Abort(
                google_error(400, "invalidParameter", f"Invalid field selection {text}", "fields")
            ) from None
        bad = check_fields(tree, schema)
        if bad:
            raise Abort(google_error(400, "invalidParameter", f"Invalid field selection {bad}", "fields"))
        return tree

    def _visible(self, req: Request, f: DriveFile) -> bool:
        """Shared-drive items need supportsAllDrives=true on every call (providers.md §1.6)."""
        return f.drive_id is None or self._flag(req, "supportsAllDrives")

    def _lookup(self, req: Request, fid: str) -> DriveFile:
        f = self.files.get(self.ROOT if fid == "root" else fid)
        if f is None or not self._visible(req, f):
            raise Abort(google_error(404, "notFound", f"File not found: {fid}.", "fileId"))
        return f

    def _token(self, offset: int, sig: str) -> str:
        raw = json.dumps({"o": offset, "s": sig, "g": self._token_gen}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _untoken(self, token: str, sig: str) -> int:
        try:
            d = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if d["s"] == sig and d["g"] == self._token_gen:
                return int(d["o"])
        except (ValueError, KeyError, TypeError):
            pass
        raise Abort(google_error(400, "invalid", "Invalid Value", "pageToken"))

    def _page_size(self, req: Request, default: int | None) -> int | None:
        raw = req.arg("pageSize")
        if raw is None:
            return default
        try:
            n = int(raw)
        except ValueError:
            raise Abort(
                google_error(
                    400,
                    "invalid",
                    f"Invalid value '{raw}'. Values must be within the range: [1, 1000]",
                    "pageSize",
                )
            ) from None
        if n < 1:
            raise Abort(
                google_error(
                    400,
                    "invalid",
                    f"Invalid value '{raw}'. Values must be within the range: [1, 1000]",
                    "pageSize",
                )
            )
        return min(n, 1000)  # discovery: "values above 1000 will be coerced to 1000"

    # -- endpoints -----------------------------------------------------------------------------------

    def _revoke(self, req: Request) -> Response:
        token = req.form().get("token") or req.arg("token") or ""
        if self.oauth.revoke(token):
            return json_response(200, {})
        return json_response(400, {"error": "invalid_token", "error_description": "Token expired or revoked"})

    def _list(self, req: Request) -> Response:
        """files.list (discovery ``resources.files.methods.list``)."""
        self._auth(req)
        tree = self._fields(req, "FileList")
        try:
            terms = parse_q(req.arg("q", "") or "") if req.arg("q") else []
        except ValueError:
            return google_error(400, "invalid", "Invalid Value", "q")
        corpora = req.arg("corpora", "user")
        drive_id = req.arg("driveId")
        all_drives = self._flag(req, "includeItemsFromAllDrives")
        if all_drives and not self._flag(req, "supportsAllDrives"):
            # unverified: the real status/reason for this combination was not found in the docs
            return google_error(
                400,
                "badRequest",
                "The includeItemsFromAllDrives parameter must be used with supportsAllDrives=true.",
                "includeItemsFromAllDrives",
            )
        if corpora == "drive" and (not drive_id or not all_drives):
            return google_error(
                400,
                "invalid",
                "The driveId parameter must be specified together with "
                "corpora=drive and includeItemsFromAllDrives=true.",
                "driveId",
            )
        if drive_id and corpora != "drive":
            return google_error(400, "invalid", "driveId requires corpora=drive.", "corpora")
        if corpora not in ("user", "drive", "domain", "allDrives"):
            return google_error(400, "invalid", "Invalid Value", "corpora")
        if drive_id and drive_id not in self.drives:
            return google_error(404, "notFound", f"Shared drive not found: {drive_id}", "driveId")

        def in_corpus(f: DriveFile) -> bool:
            if f.id == self.ROOT or f.id in self.drives:
                return False
            if corpora == "drive":
                return f.drive_id == drive_id
            return f.drive_id is None or all_drives

        def match(f: DriveFile) -> bool:
            r = f.resource()
            for fld, op, val in terms:
                if fld == "parents":
                    if (self.ROOT if val == "root" else val) not in f.parents:
                        return False
                elif fld == "trashed":
                    if f.trashed != (val == "true"):
                        return False
                elif op == "contains":
                    if val not in r[fld]:
                        return False
                elif not _cmp(r[fld], op, val):
                    return False
            return True

        hits = [f for f in self.files.values() if in_corpus(f) and match(f)]
        for key in reversed([k.strip() for k in (req.arg("orderBy") or "").split(",") if k.strip()]):
            name, _, desc = key.partition(" ")
            keyfn = {
                "name": lambda f: f.name,
                "name_natural": lambda f: f.name,
                "modifiedTime": lambda f: f.modified_time,
                "createdTime": lambda f: f.created_time,
                "folder": lambda f: f.mime_type != FOLDER,
            }.get(name)
            if keyfn is None:
                return google_error(400, "invalid", "Invalid Value", "orderBy")
            hits.sort(key=keyfn, reverse=desc.strip() == "desc")
        sig = hashlib.sha1(
            json.dumps(
                [req.arg(k) for k in ("q", "corpora", "driveId", "orderBy", "includeItemsFromAllDrives")]
            ).encode()
        ).hexdigest()
        start = self._untoken(req.arg("pageToken"), sig) if req.arg("pageToken") else 0
        size = self._page_size(req, 100 if corpora == "drive" else None) or len(hits) or 1
        page = hits[start : start + size]
        body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False}
        if start + size < len(hits):
            body["nextPageToken"] = self._token(start + size, sig)
        body["files"] = [f.resource() for f in page]
        if tree is None:  # default: kind,id,name,mimeType per file (search-files guide)
            body["files"] = [
                project(r, {"kind": None, "id": None, "name": None, "mimeType": None}) for r in body["files"]
            ]
            return json_response(200, body)
        return json_response(200, project(body, tree))

    def _get(self, req: Request, fid: str) -> Response:
        """files.get: metadata, or content with alt=media (Range supported)."""
        if req.arg("alt") == "media":
            self._auth(req, CONTENT_SCOPES)
            f = self._lookup(req, fid)
            if f.data is None:  # folders, Docs Editors files, shortcuts: "only works if stored in Drive"
                return google_error(403, "fileNotDownloadable", location="alt")
            if not f.can_download:
                return google_error(403, "cannotDownloadFile")
            if f.abusive and not self._flag(req, "acknowledgeAbuse"):
                return google_error(403, "cannotDownloadAbusiveFile", location="acknowledgeAbuse")
            return serve_bytes(
                req, f.data, {"Content-Type": f.mime_type, "ETag": f'"{hashlib.md5(f.data).hexdigest()}"'}
            )
        self._auth(req)
        tree = self._fields(req, "File")
        f = self._lookup(req, fid)
        res = f.resource()
        if tree is None:
            return json_response(
                200, project(res, {"kind": None, "id": None, "name": None, "mimeType": None})
            )
        return json_response(200, project(res, tree))

    def _export(self, req: Request, fid: str) -> Response:
        """files.export: Docs Editors files only; 10 MB limit -> 403 exportSizeLimitExceeded."""
        self._auth(req, CONTENT_SCOPES)
        f = self._lookup(req, fid)
        mime = req.arg("mimeType")
        if not mime:
            return google_error(400, "required", "Required parameter: mimeType", "mimeType")
        if not f.mime_type.startswith("application/vnd.google-apps.") or f.mime_type in (FOLDER, SHORTCUT):
            return google_error(403, "fileNotExportable", "Export only supports Docs Editors files.")
        if mime not in f.exports:
            return google_error(400, "badRequest", "The requested conversion is not supported.", "convertTo")
        data = f.exports[mime]
        if len(data) > self.export_limit:
            return google_error(403, "exportSizeLimitExceeded")
        return Response(200, data, {"Content-Type": mime})

    def _start_token(self, req: Request) -> Response:
        self._auth(req)
        return json_response(
            200, {"kind": "drive#startPageToken", "startPageToken": str(len(self.changes) + 1)}
        )

    def _changes(self, req: Request) -> Response:
        """changes.list: numeric page tokens; last page carries newStartPageToken, others nextPageToken.
        A file changed several times appears once, in its latest state (removed=true once deleted)."""
        self._auth(req)
        tree = self._fields(req, "ChangeList")
        token = req.arg("pageToken") or ""
        if not token.isdigit() or not 1 <= int(token) <= len(self.changes) + 1:
            return google_error(400, "invalid", "Invalid Value", "pageToken")
        drive_id = req.arg("driveId")
        all_drives = self._flag(req, "includeItemsFromAllDrives") and self._flag(req, "supportsAllDrives")
        size = self._page_size(req, 100) or 100
        start = int(token) - 1
        selected: list[dict[str, Any]] = []
        pos = start
        while pos < len(self.changes) and len(selected) < size:
            ch = self.changes[pos]
            pos += 1
            if any(later.file_id == ch.file_id for later in self.changes[pos:]):
                continue  # one entry per file, in its latest state
            f = self.files.get(ch.file_id)
            file_drive = f.drive_id if f else None
            if drive_id is not None and file_drive != drive_id:
                continue
            if drive_id is None and file_drive is not None and not all_drives:
                continue
            item: dict[str, Any] = {
                "kind": "drive#change",
                "changeType": "file",
                "time": ch.time,
                "removed": ch.removed or f is None,
                "fileId": ch.file_id,
            }
            if f is not None and not ch.removed:
                item["file"] = f.resource()
                if f.drive_id:
                    item["driveId"] = f.drive_id
            selected.append(item)
        body: dict[str, Any] = {"kind": "drive#changeList"}
        if pos < len(self.changes):
            body["nextPageToken"] = str(pos + 1)
        else:
            body["newStartPageToken"] = str(len(self.changes) + 1)
        body["changes"] = selected
        if tree is None:
            for item in selected:
                if "file" in item:
                    item["file"] = project(
                        item["file"], {"kind": None, "id": None, "name": None, "mimeType": None}
                    )
            return json_response(200, body)
        return json_response(200, project(body, tree))

    def _drives(self, req: Request) -> Response:
        """drives.list (pageSize max 100); no paging needed for a fake with few drives."""
        self._auth(req)
        drives = [{"kind": "drive#drive", "id": d, "name": n} for d, n in self.drives.items()]
        return json_response(200, {"kind": "drive#driveList", "drives": drives})
