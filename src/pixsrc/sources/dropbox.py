"""dropbox: files in a Dropbox folder, through the Dropbox API v2 (OAuth 2.0, PKCE, no client secret).

Facts are from /work/shared/providers.md section 2 (cited as "providers.md 2.x" below):

* listing: ``POST {api}/2/files/list_folder`` then ``/2/files/list_folder/continue`` while
  ``has_more``; a 409 ``reset`` on continue means the cursor died: the listing starts over.
  Listings stay sequential: Dropbox answers parallel identical listings with a RateLimitError (2.2).
* download: ``POST {content}/2/files/download``, the argument JSON in the ``Dropbox-API-Arg``
  header with every non-ASCII character escaped as ``\\uXXXX`` (2.4), no body, ``Range`` to resume.
* verification: ``content_hash``, SHA-256 over the SHA-256 digests of 4 MiB blocks (2.3), registered
  in ``pixsrc.types.HASHERS`` as ``dropbox-content-hash`` so the engine checks it while streaming.
* changes: the listing's last cursor is kept in the source cache (``dropbox-cursor``, with the folder
  and ``recursive`` it belongs to); ``pixsrc watch`` waits on ``POST {notify}/2/files/list_folder/longpoll``
  with it (files.stone: no Authorization, ``timeout`` 30..480 s plus up to 90 s of jitter, and a
  ``backoff`` in the answer that must be waited out before the next long poll).
* Dropbox is case-insensitive: entries are matched by ``path_lower`` and written with the display
  case; only the last component of ``path_display`` is reliably cased, so folders take the case of
  their own folder entry.

RPC calls go through ``pixsrc.api.Api`` (httpx) as idempotent POSTs (they only read), so 429 and 5xx
are retried; a ``retry_after`` given only in the JSON body (2.5) is honoured like ``Retry-After``.
Answers are parsed into strict pydantic models: a page of the wrong shape ends the listing with
SourceUnavailable naming the route. Downloads are ``Transfer``s the engine moves; ``on_error``
maps Dropbox's route errors (409 path errors, 429 with ``retry_after``) for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pixsrc.api import ApiError, retry_after_seconds
from pixsrc.errors import AuthRequired, SourceUnavailable
from pixsrc.paths import selected
from pixsrc.sources import describe_invalid, is_media, media_type, parse_time
from pixsrc.types import (
    HASHERS,
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

    from pixsrc.api import Api

CONTENT_HASH = "dropbox-content-hash"
BLOCK = 4 * 1024 * 1024  # providers.md 2.3
PAGE_LIMIT = 2000  # list_folder's maximum (files.stone: UInt32(min 1, max 2000)), "approximate"
MAX_RESETS = 3  # listings restarted after a 409 reset before giving up
MAX_WARNED = 10  # non-downloadable files named one by one; the rest are counted
DEFAULT_PORT = 53682  # the redirect URI to register: http://127.0.0.1:53682/callback
CURSOR_KEY = "dropbox-cursor"
LONGPOLL_MIN, LONGPOLL_MAX = 30, 480  # ListFolderLongpollArg.timeout: UInt64(max_value=480, min_value=30)
LONGPOLL_JITTER = 90  # "plus up to 90 seconds of random jitter" (files.stone)


class DropboxContentHasher:
    """Dropbox's content hash, fed incrementally (providers.md 2.3): the SHA-256 of the concatenated
    binary SHA-256 digests of consecutive 4 MiB blocks, as lowercase hex. Empty input hashes to the
    SHA-256 of nothing."""

    name = CONTENT_HASH

    def __init__(self) -> None:
        self._outer = hashlib.sha256()
        self._block = hashlib.sha256()
        self._filled = 0

    def update(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            part = view[: BLOCK - self._filled]
            self._block.update(part)
            self._filled += len(part)
            view = view[len(part):]
            if self._filled == BLOCK:
                self._outer.update(self._block.digest())
                self._block = hashlib.sha256()
                self._filled = 0

    def hexdigest(self) -> str:
        outer = self._outer.copy()
        if self._filled:
            outer.update(self._block.digest())
        return outer.hexdigest()


HASHERS[CONTENT_HASH] = DropboxContentHasher


class DropboxConfig(SourceConfig):
    path: str = field("", label="Dropbox folder (empty: the whole Dropbox or the app folder)",
                      placeholder="/Photos",
                      description="A folder path like /Photos/2024; matched case-insensitively, like Dropbox does.")
    recursive: bool = field(True, label="Include sub-folders")
    include: list[str] = field([], label="Only files matching (globs, comma-separated)", placeholder="*.jpg,*.heic",
                               description="Matched case-insensitively against the path below the folder.")
    exclude: list[str] = field([], label="Skip files matching (globs, comma-separated)")
    all_files: bool = field(False, label="All files, not only images and videos")

    @field_validator("path")
    @classmethod
    def _folder(cls, value: str) -> str:
        value = value.strip()
        if value.startswith(("id:", "ns:", "rev:")):
            raise ValueError("give a folder path like /Photos, not an id")
        value = value.strip("/")
        if any(part in ("", ".", "..") for part in value.split("/")) and value:
            raise ValueError("must be a folder path like /Photos/2024 (no empty, '.' or '..' parts)")
        return "/" + value if value else ""  # the root is "" for list_folder, never "/" (files.stone)


# -- what Dropbox answers (files.stone) ---------------------------------------------------------------


class _Wire(BaseModel):
    """Strict: a value of another JSON type than files.stone declares is garbage to report, not to
    coerce. Fields pixsrc does not read are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Entry(_Wire):
    """A Metadata union member (FileMetadata / FolderMetadata / DeletedMetadata), flattened."""

    tag: str = Field(alias=".tag")
    name: str | None = None
    path_lower: str | None = None
    path_display: str | None = None
    id: str | None = None
    rev: str | None = None
    size: int | None = Field(None, ge=0)
    content_hash: str | None = None
    is_downloadable: bool | None = None
    client_modified: str | None = None
    server_modified: str | None = None


class _Page(_Wire):
    """ListFolderResult: every field required."""

    entries: list[_Entry]
    cursor: str
    has_more: bool


class _Longpoll(_Wire):
    """ListFolderLongpollResult."""

    changes: bool
    backoff: int | None = Field(None, ge=0)


_Doc = TypeVar("_Doc", bound=_Wire)


def _error_tags(body: bytes) -> tuple[list[str], str]:
    """A route error's tag path (``["path", "not_found"]``) and its error_summary (providers.md 2.5);
    for a body that is not Dropbox's JSON (400s are plain text), no tags and its start as one line."""
    try:
        document = json.loads(body)
    except ValueError:
        return [], _one_line(body[:300].decode("utf-8", "replace"))
    if not isinstance(document, dict):
        return [], ""
    tags: list[str] = []
    error = document.get("error")
    while isinstance(error, dict) and isinstance(error.get(".tag"), str) and len(tags) < 10:
        tag = error[".tag"]
        tags.append(tag)
        error = error.get(tag)
    summary = document.get("error_summary")
    return tags, _one_line(summary if isinstance(summary, str) else "/".join(tags))


def _one_line(text: str, limit: int = 300) -> str:
    """Text a server sent, fit for one line of a message: no control characters (a terminal must not
    obey them), whitespace runs as one space, at most ``limit`` characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text[:limit]).split())


def _body_retry_after(body: bytes) -> float | None:
    """``retry_after`` of a JSON RateLimitError body (auth.stone; providers.md 2.5)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    value = error.get("retry_after") if isinstance(error, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _hint_from_body(response: httpx.Response) -> None:
    """An httpx response hook: a 429 that gives its wait only in the JSON body (2.5) gets it as
    ``Retry-After`` too, so the Api's one retry policy honours it like the header."""
    if response.status_code != 429 or "Retry-After" in response.headers:
        return
    response.read()
    delay = _body_retry_after(response.content)
    if delay is not None:
        response.headers["Retry-After"] = str(math.ceil(delay))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A response header by name, whatever case the engine's mapping keeps (HTTP/2 sends lower case)."""
    name = name.lower()
    return next((value for key, value in headers.items() if key.lower() == name), None)


class _CursorReset(Exception):
    pass


class DropboxController:
    def __init__(self, context: SourceContext) -> None:
        self.context = context
        self.config: DropboxConfig = context.config
        self.source = context.source_id
        provider = context.provider
        self.api_url = (provider.api_base_url if provider is not None else API_BASE).rstrip("/")
        self.content_url = ((provider.content_base_url if provider is not None else None) or CONTENT_BASE).rstrip("/")
        self.http = context.api()
        self.http.client.event_hooks["response"].append(_hint_from_body)
        self.requests = 0  # RPC calls made by this controller (the Api's own retries not included)
        self.notify_url = ((provider.notify_base_url if provider is not None else None) or NOTIFY_BASE).rstrip("/")
        self._notify: Api | None = None  # the long-poll client, made on first use (watch only)
        self._not_before = 0.0  # time.monotonic() before which no long poll may start (its `backoff`)

    # -- RPC ----------------------------------------------------------------------------------------

    def _auth_error(self, route: str, body: bytes) -> AuthRequired:
        tags, summary = _error_tags(body)
        tag = _one_line(tags[0], 100) if tags else "unauthorized"
        if tag == "missing_scope":
            return AuthRequired(
                f"{self.source}: the Dropbox app lacks a permission for {route} ({summary})",
                hint="tick files.metadata.read and files.content.read in the App Console's Permissions tab, "
                     f"then: pixsrc auth login {self.source}")
        return AuthRequired(f"{self.source}: Dropbox refused the credential for {route} (HTTP 401 {tag})",
                            hint=f"run: pixsrc auth login {self.source}")

    def _rpc(self, route: str, args: dict[str, Any], model: type[_Doc], *, client: Api | None = None,
             base: str | None = None) -> _Doc:
        """An RPC call for the listing: JSON in, JSON out (providers.md 2.4: Content-Type application/json).
        Idempotent: these routes only read, so a POST lost on the way may be sent again. ``client`` and
        ``base``: another host's (the long poll's notify host), else the API's."""
        self.requests += 1
        try:
            response = (client or self.http).post(f"{base or self.api_url}/2/{route}",
                                                  content=json.dumps(args).encode(),
                                                  headers={"Content-Type": "application/json"}, idempotent=True)
        except ApiError as exc:
            raise SourceUnavailable(f"{self.source}: Dropbox {route}: {exc}") from None
        status = response.status_code
        if status == 200:
            try:
                return model.model_validate_json(response.content)
            except ValidationError as exc:
                raise SourceUnavailable(f"{self.source}: Dropbox answered {route} with {describe_invalid(exc)}",
                                        hint="try again later; if it persists, report it") from None
        error = response.content
        if status == 401:
            raise self._auth_error(route, error)
        tags, summary = _error_tags(error)
        if status == 400:  # plain text: pixsrc sent something Dropbox does not accept (providers.md 2.5)
            raise SourceUnavailable(f"{self.source}: Dropbox rejected pixsrc's {route} request as malformed "
                                    f"(a pixsrc bug; please report it): {summary}")
        if status == 409:
            if route in ("files/list_folder/continue", "files/list_folder/longpoll") and tags[:1] == ["reset"]:
                raise _CursorReset()
            folder = self.config.path or "/"
            if tags[:2] == ["path", "not_found"]:
                raise SourceUnavailable(f"{self.source}: the Dropbox folder {folder!r} does not exist",
                                        hint="check `path` (pixsrc edit "
                                             f"{self.source} --set path=/Folder); an App-folder app sees only "
                                             "/Apps/<app name>/")
            if tags[:2] == ["path", "not_folder"]:
                raise SourceUnavailable(f"{self.source}: {folder!r} in Dropbox is a file, not a folder")
            raise SourceUnavailable(f"{self.source}: Dropbox {route} failed for {folder!r}: HTTP 409 "
                                    f"{summary or 'without a reason'}")
        detail = f": {summary}" if summary else ""
        if status == 403:
            raise SourceUnavailable(f"{self.source}: Dropbox denied access for {route}: HTTP 403{detail}")
        if status == 429:
            raise SourceUnavailable(f"{self.source}: Dropbox {route}: HTTP 429{detail} (still rate-limited "
                                    "after retrying)", hint="try again later")
        raise SourceUnavailable(f"{self.source}: Dropbox {route}: HTTP {status}{detail}")

    # -- listing ------------------------------------------------------------------------------------

    def _entries(self) -> list[_Entry]:
        """One complete listing of the folder, page after page (never in parallel: providers.md 2.2)."""
        args: dict[str, Any] = {"path": self.config.path, "recursive": self.config.recursive,
                                "include_non_downloadable_files": True}  # listed, so the user hears why skipped
        if PAGE_LIMIT:
            args["limit"] = PAGE_LIMIT
        page = self._rpc("files/list_folder", args, _Page)
        entries: list[_Entry] = []
        seen_cursors: set[str] = set()
        while True:
            entries.extend(page.entries)
            if not page.has_more:  # the cursor to wait on for changes after this listing (watch)
                self.context.cache.put(CURSOR_KEY, json.dumps({"folder": self._folder_key(), "cursor": page.cursor}))
                return entries
            cursor = page.cursor
            if not cursor or cursor in seen_cursors:
                raise SourceUnavailable(f"{self.source}: Dropbox files/list_folder pages loop or lack a cursor")
            seen_cursors.add(cursor)
            page = self._rpc("files/list_folder/continue", {"cursor": cursor}, _Page)

    def list_assets(self) -> Iterator[Asset]:
        for attempt in range(MAX_RESETS + 1):
            try:
                entries = self._entries()
                break
            except _CursorReset:
                if attempt == MAX_RESETS:
                    raise SourceUnavailable(f"{self.source}: Dropbox reset the listing cursor "
                                            f"{MAX_RESETS + 1} times in a row; try again later") from None
                self.context.warn("Dropbox reset the listing cursor; listing the folder again from the start")
        yield from self._assets(entries)

    def _assets(self, entries: list[_Entry]) -> Iterator[Asset]:
        depth = self.config.path.count("/")  # components of the configured folder ("" -> 0)
        # a folder's own entry carries its correct case in `name`; children's path_display may not
        folder_names = {e.path_lower: e.name for e in entries
                        if e.tag == "folder" and e.path_lower is not None and e.name is not None}
        skipped: list[str] = []
        for entry in entries:
            if entry.tag != "file":
                continue  # folders give names only; "deleted" entries only come with include_deleted
            lower, display, file_id = entry.path_lower, entry.path_display, entry.id
            if not (lower and file_id):
                continue  # not mounted (files.stone: path_lower is then null): nothing to download by
            lower_parts = lower.split("/")[1:]
            if len(lower_parts) <= depth:
                continue
            display_parts = display.split("/")[1:] if display is not None else []
            if len(display_parts) != len(lower_parts):
                display_parts = lower_parts
            name = entry.name or display_parts[-1]
            rel_parts = []
            for index in range(depth, len(lower_parts) - 1):
                folder_lower = "/" + "/".join(lower_parts[: index + 1])
                rel_parts.append(folder_names.get(folder_lower, display_parts[index]))
            rel_parts.append(name)
            rel = "/".join(rel_parts)
            if not self.config.all_files and not is_media(name):
                continue
            if not selected(rel, self.config.include, self.config.exclude, ignore_case=True):  # as Dropbox
                continue
            if entry.is_downloadable is False:  # e.g. Google Docs in Dropbox: export only (2.4)
                skipped.append(rel)
                continue
            content_hash = entry.content_hash.lower() if entry.content_hash else None
            checksum = Checksum(CONTENT_HASH, content_hash) if content_hash else None
            # content_hash changes iff the bytes do (a re-upload of the same bytes keeps it); rev otherwise
            version = f"ch:{content_hash}" if content_hash else f"rev:{entry.rev}"
            yield Asset(id=file_id, path=rel, version=version, size=entry.size,
                        modified=parse_time(entry.client_modified) or parse_time(entry.server_modified),
                        media_type=media_type(name), checksum=checksum, ref=lower)
        for rel in skipped[:MAX_WARNED]:
            self.context.warn(f"skipped {rel}: Dropbox cannot download it (is_downloadable=false; "
                              "a cloud document that can only be exported)")
        if len(skipped) > MAX_WARNED:
            self.context.warn(f"skipped {len(skipped) - MAX_WARNED} more files Dropbox cannot download")

    # -- content ------------------------------------------------------------------------------------

    def transfer(self, asset: Asset) -> Transfer:
        # the listed path; a file moved since the listing fails alone (409 path/not_found) and is listed
        # at its new place by the next run
        path_lower: str = asset.ref
        # "HTTP header safe" JSON: ensure_ascii escapes 0x7F and non-ASCII as \uXXXX (providers.md 2.4).
        # No body and no Content-Type (a form one is refused, 2.4); content endpoints honour Range.
        arg = json.dumps({"path": path_lower}, ensure_ascii=True)
        return Transfer(url=f"{self.content_url}/2/files/download", method="POST",
                        headers={"Dropbox-API-Arg": arg}, body=b"", auth=self.context.auth, resumable=True,
                        on_error=self._download_error)

    def _download_error(self, status: int, headers: Mapping[str, str], body: bytes) -> TransferError | None:
        """Classify a refused download (providers.md 2.5). A 401 is left to the engine (refresh once,
        then exit 3) unless a scope is missing, which no refresh mends."""
        tags, summary = _error_tags(body)
        if status == 401:
            if tags[:1] != ["missing_scope"]:
                return None
            return TransferError(f"the Dropbox app lacks a permission for files/download ({summary}): tick "
                                 "files.content.read in the App Console's Permissions tab, then: pixsrc auth "
                                 f"login {self.source}", auth=True)
        if status == 409:
            if tags[:2] == ["path", "not_found"]:
                return TransferError(f"Dropbox: {summary} (moved or deleted since the listing)")
            if tags[:1] == ["unsupported_file"]:
                return TransferError("Dropbox cannot download this file (export only)")
            return TransferError(f"Dropbox: {summary or 'HTTP 409 without a reason'}")
        if status == 400:
            return TransferError(f"Dropbox rejected pixsrc's download request as malformed (a pixsrc bug): "
                                 f"{summary}")
        detail = f": {summary}" if summary else ""
        if status == 429:
            delay = retry_after_seconds(_header(headers, "Retry-After"))
            if delay is None:
                delay = _body_retry_after(body)
            return TransferError(f"Dropbox rate limit (HTTP 429{detail})", retry=True, retry_after=delay)
        return TransferError(f"Dropbox answered HTTP {status}{detail}", retry=status == 408 or status >= 500)

    # -- changes (pixsrc watch) --------------------------------------------------------------------

    def _folder_key(self) -> list[Any]:
        return [self.config.path.lower(), self.config.recursive]

    def _saved_cursor(self) -> str | None:
        try:
            saved = json.loads(self.context.cache.get(CURSOR_KEY) or "null")
        except ValueError:
            return None
        if not isinstance(saved, dict) or saved.get("folder") != self._folder_key():
            return None  # the folder or `recursive` was edited since: that cursor watches something else
        cursor = saved.get("cursor")
        return cursor if isinstance(cursor, str) and cursor else None

    def wait_for_change(self, cancel: threading.Event, timeout: float) -> bool:
        """Long-poll Dropbox for a change after the last completed listing (files/list_folder/longpoll).

        True: something changed (or the cursor is gone, or there is none yet): a fetch lists again.
        A ``backoff`` in the answer is waited out before the next long poll, however soon that is asked
        for. The notify host takes no Authorization header (files.stone: ``auth = "noauth"``), so the
        credential is not sent there."""
        delay = self._not_before - time.monotonic()
        if delay > 0 and (cancel.wait(min(delay, timeout)) or delay > timeout):
            return False
        cursor = self._saved_cursor()
        if cursor is None:
            return True
        if self._notify is None:
            self._notify = self.context.api(auth=None, limit=None,
                                            timeout=float(LONGPOLL_MAX + LONGPOLL_JITTER + 30))
            self._notify.client.event_hooks["response"].append(_hint_from_body)
        seconds = int(min(LONGPOLL_MAX, max(LONGPOLL_MIN, timeout)))
        try:
            answer = self._rpc("files/list_folder/longpoll", {"cursor": cursor, "timeout": seconds}, _Longpoll,
                               client=self._notify, base=self.notify_url)
        except _CursorReset:
            return True  # ListFolderLongpollError.reset: the cursor died; the next listing makes a new one
        if answer.backoff:
            self._not_before = time.monotonic() + answer.backoff
        return answer.changes

    def verify(self) -> str | None:
        """One cheap call after login: the configured folder can be listed."""
        args = {"path": self.config.path, "recursive": False, "limit": 1}
        self._rpc("files/list_folder", args, _Page)
        return f"folder {self.config.path or '/'} is readable"

    def close(self) -> None:
        self.http.close()
        if self._notify is not None:
            self._notify.close()


API_BASE = "https://api.dropboxapi.com"
CONTENT_BASE = "https://content.dropboxapi.com"
NOTIFY_BASE = "https://notify.dropboxapi.com"  # providers.md 2.1: the longpoll host

PROVIDER = OAuthProvider(
    name="dropbox",
    display_name="Dropbox",
    authorize_url="https://www.dropbox.com/oauth2/authorize",  # providers.md 2.1
    token_url="https://api.dropboxapi.com/oauth2/token",
    revoke_url="https://api.dropboxapi.com/2/auth/token/revoke",  # Bearer, no arguments (auth.stone)
    revoke_style="bearer",
    api_base_url=API_BASE,
    content_base_url=CONTENT_BASE,
    notify_base_url=NOTIFY_BASE,
    scope_separator=" ",
    sends_iss=False,  # RFC 9207 iss: not documented for Dropbox (providers.md), so not required
    pkce=True,
    secret="none",  # PKCE replaces the app secret, also for refresh (providers.md 2.1)
    loopback_port=DEFAULT_PORT,  # redirect URIs must match exactly, port included: no any-port rule
    redirect_path="/callback",
    authorize_params=(("token_access_type", "offline"),),  # without it there is no refresh token
    rotates_refresh_token=False,
    refresh_token_days=None,  # valid until revoked
    limits_note="access tokens last 4 h (refreshed automatically); Dropbox publishes no fixed request "
                "limits and answers HTTP 429 with Retry-After, which pixsrc honours",
    console_url="https://www.dropbox.com/developers/apps",
    max_concurrency=8,
    requests_per_second=50.0,  # a ceiling, not a published number (there is none); [providers.dropbox] overrides
)

SOURCE_TYPE = SourceType(
    id="dropbox",
    name="Dropbox",
    category="cloud",
    description="Images and videos in a Dropbox folder (Dropbox API v2, read-only OAuth).",
    config_model=DropboxConfig,
    factory=DropboxController,
    auth=AuthSpec(kind="oauth2", provider="dropbox", scopes=("files.metadata.read", "files.content.read"),
                  oauth=PROVIDER),
)
