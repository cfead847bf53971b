"""google-drive: images and videos in a Google Drive folder (My Drive, a shared drive, shared with me).

Facts come from /work/shared/providers.md section 1 (cited as §1.x below) and the Drive v3
discovery document. Listing walks folders **by id** (never by name), breadth first, a few folders
at a time: ``files.list`` with ``q = '<id>' in parents and trashed = false``, ``pageSize=1000``
and an explicit ``fields`` projection (§1.6). The whole tree is kept in the per-source cache as a
compact snapshot together with a Changes API start page token taken *before* the first full
listing; later runs read ``changes.list`` from that token, patch the snapshot and yield the full
current listing from it (the engine treats "not listed" as deleted). One shared computation turns
the snapshot into assets, so an incremental listing is by construction the same as a full one.
``pixsrc watch`` polls ``changes.list`` from the snapshot's token (never saving what it read: the next
listing applies those changes itself) and wakes a fetch when a change touches the tree.

Shortcuts are resolved to their targets (a folder shortcut back to an ancestor is skipped; a
dangling one is reported). Google Docs/Sheets/Slides cannot be downloaded as images and are
skipped with a warning; Drawings are exported (``files.export``, 10 MB limit). Same-name siblings
get ``name~<id prefix>.ext`` names that depend only on their own ids.

API calls go through ``pixsrc.api.Api`` (httpx): 403 rate-limit reasons are retried like 429/5xx
(§1.7). Every answer is parsed into strict pydantic models: a document of the wrong shape (a number
where Drive documents a string, a truncated page, an HTML error page) ends the listing with
SourceUnavailable naming the endpoint, never with a traceback. Downloads are described as
``Transfer``s (``alt=media``, or ``files.export``) that the engine moves; ``on_error`` reads
Google's JSON error reason for it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import posixpath
import threading
import time
import unicodedata
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pixsrc.api import ApiError, retry_after_seconds
from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.paths import safe_name, selected
from pixsrc.sources import describe_invalid, is_media, parse_time
from pixsrc.types import (
    Asset,
    AuthSpec,
    Checksum,
    OAuthProvider,
    SourceConfig,
    SourceContext,
    SourceType,
    Transfer,
    TransferError,
    field,
)

if TYPE_CHECKING:
    import httpx

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
DRAWING = "application/vnd.google-apps.drawing"
GOOGLE_APPS = "application/vnd.google-apps."
SCOPE = "https://www.googleapis.com/auth/drive.readonly"  # §1.5: list and download, nothing else

# §1.6: ask for exactly what the listing needs (by default a file carries only kind,id,name,mimeType)
FILE_FIELDS = ("id,name,mimeType,parents,trashed,size,md5Checksum,sha256Checksum,modifiedTime,"
               "capabilities/canDownload,shortcutDetails(targetId,targetMimeType)")
LIST_FIELDS = f"nextPageToken,incompleteSearch,files({FILE_FIELDS})"
CHANGE_FIELDS = f"nextPageToken,newStartPageToken,changes(changeType,fileId,removed,file({FILE_FIELDS}))"
PAGE_SIZE = 1000  # §1.6: the maximum; larger values are clamped by Drive and rejected by the spec
FOLDER_WORKERS = 4  # folders listed at once: small, the rate limit still applies to each request

EXPORTS = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg"), "svg": ("image/svg+xml", ".svg")}
# §1.7: rate limiting shows up as 403 with these reasons (or as 429, which the Api retries anyway)
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
# Quotas that will not recover within this run: stop asking (unverified reason list, see report)
DAILY_REASONS = frozenset({"dailyLimitExceeded", "dailyLimitExceededUnreg", "quotaExceeded"})
AUTH_REASONS = frozenset({"insufficientPermissions", "authError", "insufficientScopes"})
SHARED_ROOT = "pixsrc:shared-with-me"  # a virtual folder holding the items shared with the user
SNAPSHOT_KEY = "drive-snapshot"
SNAPSHOT_VERSION = 1
FULL_LISTING_EVERY = 7 * 86400  # seconds between forced full listings

PROVIDER = OAuthProvider(
    name="google",
    display_name="Google",
    authorize_url="https://accounts.google.com/o/oauth2/v2/auth",  # §1.1
    token_url="https://oauth2.googleapis.com/token",
    revoke_url="https://oauth2.googleapis.com/revoke",  # §1.1: token=<access or refresh token>, form body
    revoke_style="rfc7009",
    api_base_url="https://www.googleapis.com",
    issuer="https://accounts.google.com",
    # RFC 9207: Google adds iss to the redirect for some accounts only and does not declare it in its
    # metadata (openiddict/openiddict-core#2428); providers.md has no such fact. A wrong iss is refused,
    # a missing one is not: requiring it would fail the sign-in of every account without it.
    sends_iss=False,
    scope_separator=" ",
    pkce=True,  # §1.1: S256 supported
    # §1.1: Desktop clients still send their (non-confidential) secret at the token endpoint, in the form
    secret="required",
    client_auth="post",
    loopback_port=None,  # §1.2: Desktop clients accept any loopback port, nothing to register
    redirect_path="/",  # as google-auth-oauthlib's run_local_server builds it (§1.2)
    # §1.1: a refresh token only with access_type=offline, and again only on a consent screen
    authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    rotates_refresh_token=False,  # §1.3: keep the old one unless a new one comes back
    refresh_token_days=None,
    limits_note=("Apps whose OAuth consent screen is External and in 'Testing' status get refresh "
                 "tokens that expire after 7 days; publish the app (or use an Internal one) to avoid "
                 "weekly sign-ins. drive.readonly is a restricted scope."),
    console_url="https://console.cloud.google.com/apis/credentials",
    # Not a published number: Drive allows 12,000 queries per minute per user by default; stay well below
    max_concurrency=8,
    requests_per_second=20.0,
)


class GoogleDriveConfig(SourceConfig):
    folder_id: str = field("", label="Folder id (empty: the root of My Drive or of the shared drive)",
                           placeholder="the part after /folders/ in the folder's URL")
    recursive: bool = field(True, label="Include sub-folders")
    include_shared: bool = field(False, label="Also fetch items shared with me (under 'Shared with me/')")
    shared_drive_id: str = field("", label="Shared drive id (empty: My Drive)",
                                 placeholder="the part after /drive/folders/ when the shared drive is open")
    export_drawings: Literal["png", "svg", "jpeg", "skip"] = field("png", label="Export Google Drawings as")
    include: list[str] = field([], label="Only files matching (globs, comma-separated)", placeholder="*.jpg")
    exclude: list[str] = field([], label="Skip files matching (globs, comma-separated)")
    all_files: bool = field(False, label="All files, not only images and videos")


# -- what Drive answers (§1.6, the discovery document's schemas) -----------------------------------------


class _Wire(BaseModel):
    """Strict: a value of another JSON type than the discovery document says is garbage to report, not
    to coerce (a number for ``size``, a string for ``parents``). Fields pixsrc does not ask for are
    ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Capabilities(_Wire):
    canDownload: bool = True


class _ShortcutDetails(_Wire):
    targetId: str | None = None
    targetMimeType: str | None = None


class DriveFile(_Wire):
    """The fields of a File resource the listing asks for (FILE_FIELDS)."""

    id: str = Field(min_length=1)
    name: str = ""
    mimeType: str = ""
    parents: list[str] = []
    trashed: bool = False
    size: str | None = Field(None, pattern=r"^[0-9]+$")  # §1.6: an int64 *string*; blobs only
    md5Checksum: str | None = None
    sha256Checksum: str | None = None
    modifiedTime: str | None = None
    capabilities: _Capabilities | None = None
    shortcutDetails: _ShortcutDetails | None = None


class _FileList(_Wire):
    nextPageToken: str | None = None
    files: list[DriveFile] = []


class _Change(_Wire):
    changeType: str = "file"
    fileId: str | None = None
    removed: bool = False
    file: DriveFile | None = None


class _ChangeList(_Wire):
    nextPageToken: str | None = None
    newStartPageToken: str | None = None
    changes: list[_Change] = []


class _StartPageToken(_Wire):
    startPageToken: str = Field(min_length=1)


class _User(_Wire):
    displayName: str | None = None
    emailAddress: str | None = None


class _About(_Wire):
    user: _User | None = None


_Doc = TypeVar("_Doc", bound=_Wire)


# -- the snapshot -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """What the listing needs of one Drive item; kept compact in the cache."""

    id: str
    name: str
    mime: str
    parents: tuple[str, ...] = ()
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    modified: str | None = None
    can_download: bool = True
    target: str | None = None  # shortcuts: targetId
    target_mime: str | None = None

    @classmethod
    def from_file(cls, item: DriveFile) -> Node:
        details = item.shortcutDetails
        return cls(item.id, item.name, item.mimeType, tuple(item.parents),
                   int(item.size) if item.size is not None else None,
                   item.md5Checksum, item.sha256Checksum, item.modifiedTime,
                   item.capabilities.canDownload if item.capabilities else True,
                   details.targetId if details else None, details.targetMimeType if details else None)

    def pack(self) -> list[Any]:
        return [self.id, self.name, self.mime, list(self.parents), self.size, self.md5, self.sha256,
                self.modified, self.can_download, self.target, self.target_mime]

    @classmethod
    def unpack(cls, row: list[Any]) -> Node:
        return cls(row[0], row[1], row[2], tuple(row[3]), *row[4:])

    @property
    def folder(self) -> bool:
        return self.mime == FOLDER


MISSING = "pixsrc:missing"  # the mime of a shortcut target that could not be read (dangling)


@dataclass
class Snapshot:
    root: str
    token: str | None
    fingerprint: str
    nodes: dict[str, Node]
    full_at: float = 0.0  # when the last full listing was made (time.time())

    def dump(self) -> str:
        data = {"v": SNAPSHOT_VERSION, "root": self.root, "token": self.token, "fp": self.fingerprint,
                "full_at": self.full_at, "nodes": [n.pack() for n in self.nodes.values()]}
        raw = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 6)
        return base64.b64encode(raw).decode()

    @classmethod
    def load(cls, text: str | None) -> Snapshot | None:
        if not text:
            return None
        try:
            data = json.loads(zlib.decompress(base64.b64decode(text)))
            if data.get("v") != SNAPSHOT_VERSION:
                return None
            nodes = {row[0]: Node.unpack(row) for row in data["nodes"]}
            return cls(data["root"], data["token"], data["fp"], nodes, float(data.get("full_at") or 0))
        except (ValueError, KeyError, TypeError, IndexError, zlib.error):
            return None


# -- errors -------------------------------------------------------------------------------------------


def one_line(text: str, limit: int = 300) -> str:
    """Text a server sent, fit for one line of a message: no control characters (a terminal must not
    obey them), whitespace runs as one space, at most ``limit`` characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text[:limit]).split())


def google_reason(body: bytes) -> tuple[str | None, str]:
    """(reason, message) of Google's JSON error body (§1.7), tolerant of anything else (an HTML page
    from a proxy, a truncated body): then no reason, and the start of the body as the message."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None, one_line(body[:300].decode("utf-8", "replace"))
    if not isinstance(error, dict):
        return None, one_line(str(error or ""))
    errors = error.get("errors") or [{}]
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    reason = first.get("reason")
    message = error.get("message") or first.get("message") or ""
    return (one_line(reason, 100) if isinstance(reason, str) else None), (
        one_line(message) if isinstance(message, str) else "")


def _detail(reason: str | None, message: str) -> str:
    return f": {reason}: {message}" if reason and message else f": {reason or message}" if reason or message else ""


def _rate_limited(response: httpx.Response) -> bool:
    """For Api.retry_when: a 403 is transient only when its reason says rate limit (§1.7)."""
    return response.status_code == 403 and google_reason(response.content)[0] in RATE_REASONS


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A response header by name, whatever case the engine's mapping keeps (HTTP/2 sends lower case)."""
    name = name.lower()
    return next((value for key, value in headers.items() if key.lower() == name), None)


def _q_string(value: str) -> str:
    """A q string literal: escape \\ and ' with a backslash (§1.6)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _TokenRejected(Exception):
    """A page token (files.list) or change token (changes.list) was refused."""


class _NotFound(Exception):
    pass


# -- the controller ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    file_id: str
    export_mime: str | None = None


class GoogleDriveController:
    def __init__(self, context: SourceContext) -> None:
        self.context = context
        self.config: GoogleDriveConfig = context.config
        self.source = context.source_id
        self.warn = context.warn
        self.cache = context.cache
        provider = context.provider
        base = (provider.api_base_url if provider is not None else PROVIDER.api_base_url).rstrip("/")
        self.base = f"{base}/drive/v3"
        self.api = context.api(retry_when=_rate_limited, headers={"Accept": "application/json"})
        self.jobs = max(1, min(FOLDER_WORKERS, context.jobs))
        self.requests = 0  # API calls made by the listing (the Api's own retries not included)
        self._count_lock = threading.Lock()
        self._stop: str | None = None  # set once a daily quota is exhausted: no more downloads this run
        # wait_for_change's reading position: (the saved token it started from, where it has read to)
        self._peek: tuple[str | None, str] | None = None
        shared = self.config.shared_drive_id.strip()
        self.drive_id = shared or None
        # §1.6: supportsAllDrives everywhere; corpora=drive + driveId to list inside one shared drive
        self.list_params: dict[str, str] = {"supportsAllDrives": "true", "includeItemsFromAllDrives": "true"}
        if shared:
            self.list_params |= {"corpora": "drive", "driveId": shared}

    # -- requests -----------------------------------------------------------------------------

    def _url(self, path: str, params: dict[str, str]) -> str:
        return f"{self.base}/{path}?{urlencode(params, quote_via=quote)}"

    def _get(self, endpoint: str, path: str, params: dict[str, str], model: type[_Doc], *,
             token_param: str | None = None, missing_ok: bool = False) -> _Doc:
        """GET one API document for the listing, parsed into ``model``. Every other outcome becomes
        SourceUnavailable or AuthRequired naming ``endpoint`` (e.g. ``files.list``), except the two the
        caller asks to handle: a refused ``token_param`` (_TokenRejected) and, with ``missing_ok``, a
        404 (_NotFound)."""
        with self._count_lock:
            self.requests += 1
        try:
            response = self.api.get(self._url(path, params))
        except ApiError as exc:
            raise SourceUnavailable(f"{self.source}: Google Drive {endpoint}: {exc}") from None
        status = response.status_code
        if status == 200:
            try:
                return model.model_validate_json(response.content)
            except ValidationError as exc:
                raise SourceUnavailable(f"{self.source}: Google Drive answered {endpoint} with {describe_invalid(exc)}",
                                        hint="try again later; if it persists, report it") from None
        reason, message = google_reason(response.content)
        what = f"{self.source}: Google Drive {endpoint}: HTTP {status}{_detail(reason, message)}"
        if status == 401 or (status == 403 and reason in AUTH_REASONS):
            raise AuthRequired(f"{self.source}: Google Drive refused the credential for {endpoint} "
                               f"(HTTP {status}{_detail(reason, message)})",
                               hint=f"run: pixsrc auth login {self.source}")
        if token_param and params.get(token_param) and status in (400, 404, 410):
            raise _TokenRejected(message)  # §1.6: "if a token is rejected, discard it and restart"
        if status == 404 and missing_ok:
            raise _NotFound(message)
        if status == 429 or (status == 403 and reason in RATE_REASONS):
            raise SourceUnavailable(f"{what} (still rate-limited after retrying)",
                                    hint="try again later, or lower [providers.google] requests_per_second")
        if status == 403 and reason in DAILY_REASONS:
            raise SourceUnavailable(f"{what} (a daily quota is exhausted)", hint="try again in 24 hours")
        raise SourceUnavailable(what)

    def _get_file(self, file_id: str) -> Node:
        """files.get; a file in the trash counts as not found (the listing never shows trashed items)."""
        item = self._get("files.get", f"files/{quote(file_id, safe='')}",
                         {"fields": FILE_FIELDS, "supportsAllDrives": "true"}, DriveFile, missing_ok=True)
        if item.trashed:
            raise _NotFound(f"{file_id} is in the trash")
        return Node.from_file(item)

    def _list_query(self, q: str, scope: dict[str, str] | None = None) -> list[Node]:
        """Every page of one files.list query; a rejected page token restarts it (twice at most)."""
        for _attempt in range(3):
            nodes: list[Node] = []
            params = {"q": q, "pageSize": str(PAGE_SIZE), "fields": LIST_FIELDS,
                      **(scope or self.list_params)}
            try:
                while True:
                    page = self._get("files.list", "files", params, _FileList, token_param="pageToken")
                    nodes.extend(Node.from_file(item) for item in page.files)
                    if not page.nextPageToken:
                        return nodes
                    params = {**params, "pageToken": page.nextPageToken}
            except _TokenRejected:
                self.warn("Google Drive refused a page token; listing that folder again from its first page")
        raise SourceUnavailable(f"{self.source}: Google Drive kept refusing its own page tokens")

    def _children(self, folder_id: str) -> list[Node]:
        return self._list_query(f"{_q_string(folder_id)} in parents and trashed = false")

    # -- full listing -------------------------------------------------------------------------

    def _root(self) -> Node:
        ref = self.config.folder_id.strip() or self.drive_id or "root"
        try:
            root = self._get_file(ref)
        except _NotFound:
            raise SourceUnavailable(f"{self.source}: Google Drive folder {ref!r} was not found "
                                    "(or is not shared with this account)") from None
        if root.mime == SHORTCUT and root.target:
            try:
                root = self._get_file(root.target)
            except _NotFound:
                raise SourceUnavailable(f"{self.source}: folder_id {ref!r} is a shortcut whose target "
                                        "is gone") from None
        if not root.folder:
            raise SourceUnavailable(f"{self.source}: {ref!r} is not a folder ({root.mime})",
                                    hint="folder_id takes the id of a folder: the part after "
                                         "/folders/ in its URL")
        return root

    def _walk(self, nodes: dict[str, Node], folders: list[str], walked: set[str]) -> None:
        """List ``folders`` and, if recursive, every folder below them, by id, breadth first; resolve
        shortcuts found on the way (their targets, and folders they point at)."""
        level = [f for f in dict.fromkeys(folders) if f not in walked]
        pool = (ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="pixsrc-drive")
                if self.jobs > 1 else None)
        try:
            while level:
                walked.update(level)
                results = (list(pool.map(self._children, level)) if pool
                           else [self._children(f) for f in level])
                next_level: list[str] = []
                for children in results:
                    for node in children:
                        nodes[node.id] = node
                    for node in children:
                        for folder in self._follow(nodes, node):
                            if folder not in walked and folder not in next_level:
                                next_level.append(folder)
                level = next_level if self.config.recursive else []
        finally:
            if pool:
                pool.shutdown(wait=True)

    def _follow(self, nodes: dict[str, Node], node: Node) -> list[str]:
        """The folders to list because of ``node``: itself, or a shortcut's target folder."""
        if node.folder:
            return [node.id]
        if node.mime != SHORTCUT or not node.target:
            return []
        target = nodes.get(node.target)
        if target is None:
            try:
                target = self._get_file(node.target)
            except _NotFound:
                target = Node(node.target, "", MISSING)
            if target.mime == SHORTCUT:  # Drive does not allow shortcuts to shortcuts; do not chase one
                target = Node(node.target, target.name, MISSING)
            nodes.setdefault(target.id, target)
        return [target.id] if target.folder else []

    def _full_listing(self, incremental: bool) -> Snapshot:
        token = None
        if incremental:  # taken BEFORE listing: a change made while we list is seen next time
            token = self._start_token()
        root = self._root()
        nodes: dict[str, Node] = {root.id: root}
        walked: set[str] = set()
        self._walk(nodes, [root.id], walked)
        if self.config.include_shared:
            shared = self._list_query("sharedWithMe = true and trashed = false",
                                      {"supportsAllDrives": "true", "includeItemsFromAllDrives": "true"})
            nodes[SHARED_ROOT] = Node(SHARED_ROOT, "Shared with me", FOLDER, (root.id,))
            for node in shared:
                nodes[node.id] = dataclasses.replace(node, parents=(SHARED_ROOT,))
            walked.add(SHARED_ROOT)
            follow = [f for node in shared for f in self._follow(nodes, nodes[node.id])]
            self._walk(nodes, follow, walked)
        return Snapshot(root.id, token, self._fingerprint(), nodes, time.time())

    def _fingerprint(self) -> str:
        c = self.config
        return json.dumps([c.folder_id.strip(), c.shared_drive_id.strip(), c.recursive, c.include_shared])

    # -- incremental listing ------------------------------------------------------------------

    def _changes(self, token: str) -> tuple[list[tuple[str, Node | None]], str]:
        """All changes since ``token``: [(file id, its node or None if removed/trashed)], new token."""
        params = {"pageToken": token, "pageSize": str(PAGE_SIZE), "fields": CHANGE_FIELDS,
                  "includeRemoved": "true", "supportsAllDrives": "true", "includeItemsFromAllDrives": "true"}
        if self.drive_id:
            params["driveId"] = self.drive_id
        changes: list[tuple[str, Node | None]] = []
        while True:
            page = self._get("changes.list", "changes", params, _ChangeList, token_param="pageToken")
            for change in page.changes:
                if not change.fileId or change.changeType != "file":
                    continue  # a shared drive's own metadata changed
                item = change.file
                if change.removed or item is None or item.trashed:
                    changes.append((change.fileId, None))
                else:
                    changes.append((change.fileId, Node.from_file(item)))
            if page.newStartPageToken:
                return changes, page.newStartPageToken
            if not page.nextPageToken:
                raise _TokenRejected("changes.list ended without a newStartPageToken")
            params = {**params, "pageToken": page.nextPageToken}

    def _apply(self, snap: Snapshot, changes: list[tuple[str, Node | None]]) -> bool:
        """Patch the snapshot; False when a full listing is needed instead (the root went away)."""
        nodes = snap.nodes
        before = set(nodes)
        was_missing = {i for i, n in nodes.items() if n.mime == MISSING}
        targets = {n.target for n in nodes.values() if n.mime == SHORTCUT and n.target}
        pending: dict[str, Node | None] = {}
        for file_id, node in changes:
            pending[file_id] = node  # the latest state of each file wins
        if snap.root in pending:
            root = pending.pop(snap.root)
            if root is None or not root.folder:
                return False
            nodes[snap.root] = root
        for file_id, node in list(pending.items()):
            if node is None:
                if file_id in targets:  # keep a marker: a shortcut points at it, and it may come back
                    nodes[file_id] = Node(file_id, "", MISSING)
                else:
                    nodes.pop(file_id, None)
                del pending[file_id]
        # a change may name a folder after its children; add until nothing more joins the tree
        placed = True
        while placed and pending:
            placed = False
            for file_id, node in list(pending.items()):
                assert node is not None
                known = file_id in nodes
                if any(p in nodes and nodes[p].folder for p in node.parents) or (known and not node.parents):
                    nodes[file_id] = node
                    del pending[file_id]
                    placed = True
        for file_id, node in pending.items():
            if file_id in nodes:
                assert node is not None
                if nodes[file_id].mime == MISSING or file_id in targets:
                    nodes[file_id] = node  # a shortcut target that lives elsewhere
                else:
                    del nodes[file_id]  # moved out of the tree
        # folders new to the tree arrive without their content: list them, and resolve new shortcuts
        fresh = [n for i, n in nodes.items() if i not in before or i in was_missing]
        walked = {i for i in before if i in nodes and nodes[i].folder}
        follow = [folder for node in fresh for folder in self._follow(nodes, node)]
        if follow and self.config.recursive:
            self._walk(nodes, follow, walked)
        return True

    def _snapshot(self) -> Snapshot:
        incremental = not self.config.include_shared  # see the README: shared-with-me is listed in full
        snap = Snapshot.load(self.cache.get(SNAPSHOT_KEY)) if incremental else None
        # a full listing now and then bounds the damage of any change the Changes API did not report
        # (e.g. in folders other people own, not verified in providers.md)
        fresh = snap is not None and time.time() - snap.full_at < FULL_LISTING_EVERY
        if snap is not None and fresh and snap.fingerprint == self._fingerprint() and snap.token:
            try:
                changes, token = self._changes(snap.token)
            except _TokenRejected:
                self.warn("Google Drive no longer accepts the saved change token; listing everything again")
            else:
                if self._apply(snap, changes):
                    snap.token = token
                    return snap
        return self._full_listing(incremental)

    # -- changes (pixsrc watch) ----------------------------------------------------------------

    def wait_for_change(self, cancel: threading.Event, timeout: float) -> bool:
        """Poll changes.list every ``poll_every`` seconds (for at most ``timeout``) from the saved
        snapshot's token; True once a change touches the listed tree (an item in it, or a new item in
        one of its folders). The saved token is left where the last listing put it: the next fetch
        applies every change since then itself. Without a snapshot (never fetched, or include_shared,
        which is always listed in full) there is nothing to compare with: any change of the account
        after the first poll counts, or, before any fetch, the answer is True at once."""
        deadline = time.monotonic() + timeout
        snap = Snapshot.load(self.cache.get(SNAPSHOT_KEY))
        if snap is None or not snap.token or snap.fingerprint != self._fingerprint():
            snap = None
            if not self.config.include_shared:
                return True
        base = snap.token if snap is not None else None
        if self._peek is None or self._peek[0] != base:  # a fetch moved the token on: start from there
            self._peek = (base, base or self._start_token())
        while True:
            try:
                changes, token = self._changes(self._peek[1])
            except _TokenRejected:
                self._peek = None
                return True  # the next listing finds out what a dead token hid (a full listing)
            if changes and (snap is None or any(self._touches(snap, fid, node) for fid, node in changes)):
                if snap is None:
                    self._peek = None  # after the fetch, wait for changes from then on
                return True
            self._peek = (base, token)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or cancel.wait(min(self.context.poll_every, remaining)):
                return False
            if time.monotonic() >= deadline:
                return False

    def _start_token(self) -> str:
        params = {"supportsAllDrives": "true", **({"driveId": self.drive_id} if self.drive_id else {})}
        return self._get("changes.getStartPageToken", "changes/startPageToken", params,
                         _StartPageToken).startPageToken

    @staticmethod
    def _touches(snap: Snapshot, file_id: str, node: Node | None) -> bool:
        if file_id in snap.nodes:
            return True
        return node is not None and any(p in snap.nodes and snap.nodes[p].folder for p in node.parents)

    # -- assets -------------------------------------------------------------------------------

    def list_assets(self) -> Iterator[Asset]:
        snap = self._snapshot()
        assets, reachable = self._assets(snap)
        # keep only what the tree reaches: files moved out or deleted folders' content drop away
        snap.nodes = {i: n for i, n in snap.nodes.items() if i in reachable}
        if snap.token:
            self.cache.put(SNAPSHOT_KEY, snap.dump())
        for asset in assets:
            if selected(asset.path, self.config.include, self.config.exclude):
                yield asset

    def _assets(self, snap: Snapshot) -> tuple[list[Asset], set[str]]:
        """The snapshot as assets: a breadth-first walk from the root, sorted by name, so the result
        (paths, which place of a file reached twice is its "own") is the same for the same tree. A file
        reached twice is listed at both places; its own place (if the tree holds it) wins the id."""
        nodes = snap.nodes
        children: dict[str, list[Node]] = {}
        for node in nodes.values():
            for parent in node.parents:
                children.setdefault(parent, []).append(node)
        drawing = EXPORTS.get(self.config.export_drawings)
        assets: list[Asset] = []
        seen_files: set[str] = set()
        walked: set[str] = set()
        reachable: set[str] = {snap.root}
        skipped_docs: list[str] = []
        # a file's own place wins over places reached through shortcuts: those wait until the end
        deferred: list[tuple[Node, str, str]] = []
        # (folder, its path, the folders above it, the nearest shortcut that led here)
        queue: deque[tuple[str, str, tuple[str, ...], str | None]] = deque()
        queue.append((snap.root, "", (snap.root,), None))
        while queue:
            folder_id, prefix, chain, via = queue.popleft()
            if folder_id in walked:
                continue  # reached twice (two shortcuts to one folder): the first path wins
            walked.add(folder_id)
            entries: list[tuple[Node, Node, str]] = []  # (listed item, what it resolves to, name)
            for item in sorted(children.get(folder_id, ()), key=lambda n: (n.name, n.id)):
                reachable.add(item.id)
                node = item
                if item.mime == SHORTCUT:
                    target = nodes.get(item.target or "")
                    if target is not None:
                        reachable.add(target.id)  # kept, missing or not: a change may bring it back
                    if target is None or target.mime == MISSING:
                        self.warn(f"skipped shortcut {prefix}{item.name!r}: its target is gone or not shared "
                                  "with you")
                        continue
                    reachable.add(target.id)
                    node = target
                    if node.folder and node.id in chain:
                        self.warn(f"skipped shortcut {prefix}{item.name!r}: it points back to a folder "
                                  "above it")
                        continue
                name = safe_name(item.name)  # a "/" in a name is no folder, ".." is no parent
                if node.folder:
                    if self.config.recursive:
                        entries.append((item, node, name))
                    continue
                if node.mime.startswith(GOOGLE_APPS):
                    if node.mime != DRAWING or drawing is None:
                        if node.mime != DRAWING:
                            skipped_docs.append(prefix + name)
                        continue
                    if not name.lower().endswith(drawing[1]):
                        name += drawing[1]
                elif not (self.config.all_files or is_media(name) or is_media(node.name)
                          or node.mime.split("/", 1)[0] in ("image", "video")):
                    continue
                elif item is not node and not posixpath.splitext(name)[1]:
                    name += posixpath.splitext(node.name)[1]  # a shortcut named without the extension
                if not node.can_download:
                    self.warn(f"skipped {prefix}{name}: its owner disabled downloading (canDownload=false)")
                    continue
                entries.append((item, node, name))
            for item, node, name in _disambiguate(entries):
                through = item.id if item is not node else via
                if node.folder:
                    queue.append((node.id, f"{prefix}{name}/", (*chain, node.id), through))
                elif through:
                    deferred.append((node, prefix + name, through))
                else:
                    assets.append(self._occurrence(node, prefix + name, folder_id, seen_files, drawing))
        for node, path, through in deferred:
            assets.append(self._occurrence(node, path, through, seen_files, drawing))
        if skipped_docs:
            more = len(skipped_docs) - 5
            shown = ", ".join(skipped_docs[:5]) + (f" and {more} more" if more > 0 else "")
            self.warn(f"skipped {len(skipped_docs)} Google Docs/Sheets/Slides file(s) (not images; "
                      f"Drive can only export them as documents): {shown}")
        return assets, reachable

    def _occurrence(self, node: Node, path: str, context: str, seen: set[str],
                    drawing: tuple[str, str] | None) -> Asset:
        """The first place a file is found gets its id; another place (a shortcut to it, a second
        parent) gets ``<shortcut or folder id>:<file id>`` and ``same_as``: the engine copies it."""
        asset = self._asset(node, path, drawing)
        if node.id not in seen:
            seen.add(node.id)
            return asset
        return dataclasses.replace(asset, id=f"{context}:{node.id}", same_as=node.id)

    def _asset(self, node: Node, path: str, drawing: tuple[str, str] | None) -> Asset:
        modified = parse_time(node.modified)
        if node.mime == DRAWING:
            assert drawing is not None
            return Asset(id=node.id, path=path, version=f"export:{drawing[0]}:{node.modified}", size=None,
                         modified=modified, media_type=drawing[0], ref=_Ref(node.id, drawing[0]))
        checksum = (Checksum("sha256", node.sha256.lower()) if node.sha256
                    else Checksum("md5", node.md5.lower()) if node.md5 else None)
        # the version is the md5 when there is one: Drive fills sha256Checksum in later for old files,
        # and that must not look like a content change
        version = (f"md5:{node.md5.lower()}" if node.md5 else f"sha256:{node.sha256.lower()}" if node.sha256
                   else f"{node.modified}:{node.size}")
        return Asset(id=node.id, path=path, version=version, size=node.size, modified=modified,
                     media_type=node.mime or None, checksum=checksum, ref=_Ref(node.id))

    # -- content ------------------------------------------------------------------------------

    def transfer(self, asset: Asset) -> Transfer:
        if self._stop:
            raise AssetError(self._stop)
        ref: _Ref = asset.ref
        file_path = f"files/{quote(ref.file_id, safe='')}"
        if ref.export_mime:  # §1.6: files.export, no ranges, at most 10 MB
            return Transfer(url=self._url(f"{file_path}/export", {"mimeType": ref.export_mime}),
                            auth=self.context.auth, resumable=False, on_error=self._download_error)
        # §1.6: alt=media, with supportsAllDrives=true for shared-drive items; Range is honoured
        return Transfer(url=self._url(file_path, {"alt": "media", "supportsAllDrives": "true"}),
                        auth=self.context.auth, resumable=True, on_error=self._download_error)

    def _download_error(self, status: int, headers: Mapping[str, str], body: bytes) -> TransferError | None:
        """Classify a refused download by Google's error reason (§1.7). A 401 is left to the engine
        (refresh once, then exit 3). Raises SourceUnavailable when a daily quota is exhausted: every
        further download of this run would be refused the same way."""
        reason, message = google_reason(body)
        if status == 401:
            return None
        if status == 403:
            return self._forbidden(reason, message)
        if status == 404:
            return TransferError("Google Drive says it no longer exists (or it is not shared with you any more)")
        summary = f"Google Drive answered HTTP {status}{_detail(reason, message)}"
        if status in (408, 429) or status >= 500:
            return TransferError(summary, retry=True, retry_after=retry_after_seconds(_header(headers, "Retry-After")))
        return TransferError(summary)

    def _forbidden(self, reason: str | None, message: str) -> TransferError:
        per_file = "this file" in message.lower()
        if reason in DAILY_REASONS or reason == "downloadQuotaExceeded" and not per_file:
            # a quota of the account or the app: every further download would fail the same way
            self._stop = f"not tried: Google Drive's daily quota is exhausted ({message})"
            raise SourceUnavailable(f"{self.source}: Google Drive's daily quota is exhausted "
                                    f"({reason}: {message})",
                                    hint="try again in 24 hours; already downloaded files are kept")
        if reason in AUTH_REASONS:
            return TransferError(f"the credential may not download files ({message}); run: pixsrc auth login "
                                 f"{self.source} (the drive.readonly scope is needed)", auth=True)
        if reason in RATE_REASONS:
            return TransferError(f"rate limited by Google Drive ({message})", retry=True)
        why = {
            "downloadQuotaExceeded": "too many downloads of this file today (Drive's per-file quota); "
                                     "try again in 24 hours",
            "cannotDownloadAbusiveFile": "Google flagged it as malware or spam; only its owner can "
                                         "download it",
            "cannotDownloadFile": "its owner does not allow you to download it",
            "exportSizeLimitExceeded": "larger than the 10 MB Google Drive can export",
            "fileNotDownloadable": "it has no downloadable content",
        }.get(reason or "")
        return TransferError(why or f"Google Drive answered HTTP 403{_detail(reason, message)}")

    def verify(self) -> str | None:
        """One cheap call after `auth login`: the account's name (about.get)."""
        about = self._get("about.get", "about", {"fields": "user(displayName,emailAddress)"}, _About)
        user = about.user
        return (user.emailAddress or user.displayName) if user else None

    def close(self) -> None:
        self.api.close()


def _disambiguate(entries: list[tuple[Node, Node, str]]) -> list[tuple[Node, Node, str]]:
    """Same-name siblings (also differing only in case or Unicode form) all get ``name~<id prefix>.ext``:
    each name depends only on its own id, so it stays the same whatever else is added or removed."""
    groups: dict[str, list[int]] = {}
    for index, (_item, _node, name) in enumerate(entries):
        groups.setdefault(unicodedata.normalize("NFC", name).casefold(), []).append(index)
    out = list(entries)
    for members in groups.values():
        if len(members) < 2:
            continue
        ids = [entries[i][0].id for i in members]
        width = 8
        while len({i[:width] for i in ids}) < len(ids) and width < max(len(i) for i in ids):
            width += 4
        for index in members:
            item, node, name = entries[index]
            stem, ext = posixpath.splitext(name) if not node.folder else (name, "")
            out[index] = (item, node, f"{stem}~{item.id[:width]}{ext}")
    return out


def _factory(context: SourceContext) -> GoogleDriveController:
    return GoogleDriveController(context)


SOURCE_TYPE = SourceType(
    id="google-drive",
    name="Google Drive",
    category="cloud",
    description="Images and videos in a Google Drive folder: My Drive, a shared drive, or shared with you.",
    config_model=GoogleDriveConfig,
    factory=_factory,
    auth=AuthSpec(kind="oauth2", provider="google", scopes=(SCOPE,), oauth=PROVIDER),
)

__all__ = ["PROVIDER", "SOURCE_TYPE", "GoogleDriveConfig", "GoogleDriveController"]
