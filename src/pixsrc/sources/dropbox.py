"""dropbox: files in a Dropbox folder, through the Dropbox API v2 (OAuth 2.0, PKCE, no client secret).

Facts are from /work/shared/providers.md section 2 (cited as "providers.md 2.x" below):

* listing: ``POST {api}/2/files/list_folder`` then ``/2/files/list_folder/continue`` while
  ``has_more``; a 409 ``reset`` on continue means the cursor died: the listing starts over.
  Listings stay sequential: Dropbox answers parallel identical listings with a RateLimitError (2.2).
* download: ``POST {content}/2/files/download``, the argument JSON in the ``Dropbox-API-Arg``
  header with every non-ASCII character escaped as ``\\uXXXX`` (2.4), no body, ``Range`` to resume.
* verification: ``content_hash``, SHA-256 over the SHA-256 digests of 4 MiB blocks (2.3), registered
  in ``pixsrc.types.HASHERS`` as ``dropbox-content-hash`` so the engine checks it while streaming.
* Dropbox is case-insensitive: entries are matched by ``path_lower`` and written with the display
  case; only the last component of ``path_display`` is reliably cased, so folders take the case of
  their own folder entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from pydantic import field_validator

from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.http import MAX_RETRY_AFTER, HttpError, Response, retry_after_seconds
from pixsrc.http import wait as interruptible_wait
from pixsrc.paths import selected
from pixsrc.sources import is_media, media_type, parse_time
from pixsrc.types import (
    HASHERS,
    Asset,
    AuthSpec,
    Checksum,
    OAuthProvider,
    SourceConfig,
    SourceContext,
    SourceType,
    field,
)

CONTENT_HASH = "dropbox-content-hash"
BLOCK = 4 * 1024 * 1024  # providers.md 2.3
PAGE_LIMIT = 2000  # list_folder's maximum (files.stone: UInt32(min 1, max 2000)), "approximate"
MAX_RESETS = 3  # listings restarted after a 409 reset before giving up
RATE_LIMIT_ROUNDS = 3  # extra waits on a 429 that HttpClient's own retries did not get past
MAX_WARNED = 10  # non-downloadable files named one by one; the rest are counted
DEFAULT_PORT = 53682  # the redirect URI to register: http://127.0.0.1:53682/callback


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


def _error_tags(body: bytes) -> tuple[list[str], str]:
    """A route error's tag path (``["path", "not_found"]``) and its error_summary (providers.md 2.5)."""
    try:
        document = json.loads(body)
    except ValueError:
        return [], body.decode("utf-8", "replace").strip()[:300]
    if not isinstance(document, dict):
        return [], ""
    tags: list[str] = []
    error = document.get("error")
    while isinstance(error, dict) and isinstance(error.get(".tag"), str):
        tag = error[".tag"]
        tags.append(tag)
        error = error.get(tag)
    summary = document.get("error_summary")
    return tags, summary if isinstance(summary, str) else "/".join(tags)


def _body_retry_after(body: bytes) -> float | None:
    """``retry_after`` of a JSON RateLimitError body (auth.stone; providers.md 2.5)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    value = error.get("retry_after") if isinstance(error, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


class _CursorReset(Exception):
    pass


class DropboxController:
    def __init__(self, context: SourceContext) -> None:
        self.context = context
        self.config: DropboxConfig = context.config
        self.source = context.source_id
        provider = context.provider
        self.api = (provider.api_base_url if provider is not None else API_BASE).rstrip("/")
        self.content = ((provider.content_base_url if provider is not None else None) or CONTENT_BASE).rstrip("/")
        self.http = context.http()
        self.requests = 0  # sent by this controller (HttpClient's own retries not included)

    # -- transport ----------------------------------------------------------------------------------

    def _send(self, url: str, headers: dict[str, str], body: bytes | None) -> tuple[Response, bytes | None]:
        """POST; a 429 that outlived HttpClient's retries (which honour the Retry-After header) waits
        for the header's or the JSON body's ``retry_after`` a few more times. Returns the response and,
        when it is an error, its body (already read)."""
        rounds = 0
        while True:
            self.requests += 1
            response = self.http.request("POST", url, headers=headers, body=body)
            if response.status < 400:
                return response, None
            data = response.read_all(1 << 20)
            if response.status != 429 or rounds >= RATE_LIMIT_ROUNDS:
                return response, data
            delay = retry_after_seconds(response.headers.get("Retry-After"))
            if delay is None:
                delay = _body_retry_after(data)
            delay = 1.0 if delay is None else delay  # RateLimitError.retry_after defaults to 1 (auth.stone)
            if delay > MAX_RETRY_AFTER:
                raise HttpError(f"POST {url}: HTTP 429, Dropbox asks to wait {delay:.0f} s", 429, retryable=True)
            if delay >= 2:
                self.context.warn(f"Dropbox rate limit (HTTP 429); waiting {delay:.0f} s before retrying")
            interruptible_wait(delay)
            rounds += 1

    def _auth_error(self, route: str, body: bytes) -> AuthRequired:
        tags, summary = _error_tags(body)
        tag = tags[0] if tags else "unauthorized"
        if tag == "missing_scope":
            return AuthRequired(
                f"{self.source}: the Dropbox app lacks a permission for {route} ({summary})",
                hint="tick files.metadata.read and files.content.read in the App Console's Permissions tab, "
                     f"then: pixsrc auth login {self.source}")
        return AuthRequired(f"{self.source}: Dropbox refused the credential ({tag})",
                            hint=f"run: pixsrc auth login {self.source}")

    def _rpc(self, route: str, args: dict[str, Any]) -> dict[str, Any]:
        """An RPC call for the listing: JSON in, JSON out (providers.md 2.4: Content-Type application/json)."""
        body = json.dumps(args).encode()
        try:
            response, error = self._send(f"{self.api}/2/{route}", {"Content-Type": "application/json"}, body)
            if error is None:
                document = response.json()
        except HttpError as exc:
            raise SourceUnavailable(f"{self.source}: Dropbox {route}: {exc}") from None
        if error is None:
            if not isinstance(document, dict):
                raise SourceUnavailable(f"{self.source}: Dropbox {route}: the answer is not a JSON object")
            return document
        status = response.status
        if status == 401:
            raise self._auth_error(route, error)
        if status == 400:  # plain text: pixsrc sent something Dropbox does not accept (providers.md 2.5)
            text = error.decode("utf-8", "replace").strip()[:300]
            raise SourceUnavailable(f"{self.source}: Dropbox rejected pixsrc's {route} request as malformed "
                                    f"(a pixsrc bug; please report it): {text}")
        tags, summary = _error_tags(error)
        if status == 409:
            if route == "files/list_folder/continue" and tags[:1] == ["reset"]:
                raise _CursorReset()
            folder = self.config.path or "/"
            if tags[:2] == ["path", "not_found"]:
                raise SourceUnavailable(f"{self.source}: the Dropbox folder {folder!r} does not exist",
                                        hint="check `path` (pixsrc edit "
                                             f"{self.source} --set path=/Folder); an App-folder app sees only "
                                             "/Apps/<app name>/")
            if tags[:2] == ["path", "not_folder"]:
                raise SourceUnavailable(f"{self.source}: {folder!r} in Dropbox is a file, not a folder")
            raise SourceUnavailable(f"{self.source}: Dropbox {route} failed for {folder!r}: {summary or status}")
        if status == 403:
            raise SourceUnavailable(f"{self.source}: Dropbox denied access for {route}: {summary or 'HTTP 403'}")
        raise SourceUnavailable(f"{self.source}: Dropbox {route}: HTTP {status}{': ' + summary if summary else ''}")

    # -- listing ------------------------------------------------------------------------------------

    def _entries(self) -> list[dict[str, Any]]:
        """One complete listing of the folder, page after page (never in parallel: providers.md 2.2)."""
        args: dict[str, Any] = {"path": self.config.path, "recursive": self.config.recursive,
                                "include_non_downloadable_files": True}  # listed, so the user hears why skipped
        if PAGE_LIMIT:
            args["limit"] = PAGE_LIMIT
        page = self._rpc("files/list_folder", args)
        entries: list[dict[str, Any]] = []
        seen_cursors: set[str] = set()
        while True:
            batch = page.get("entries")
            if not isinstance(batch, list):
                raise SourceUnavailable(f"{self.source}: Dropbox list_folder answered without entries")
            entries.extend(e for e in batch if isinstance(e, dict))
            if not page.get("has_more"):
                return entries
            cursor = page.get("cursor")
            if not isinstance(cursor, str) or not cursor or cursor in seen_cursors:
                raise SourceUnavailable(f"{self.source}: Dropbox list_folder pages loop or lack a cursor")
            seen_cursors.add(cursor)
            page = self._rpc("files/list_folder/continue", {"cursor": cursor})

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

    def _assets(self, entries: list[dict[str, Any]]) -> Iterator[Asset]:
        depth = self.config.path.count("/")  # components of the configured folder ("" -> 0)
        # a folder's own entry carries its correct case in `name`; children's path_display may not
        folder_names = {e["path_lower"]: e["name"] for e in entries
                        if e.get(".tag") == "folder" and isinstance(e.get("path_lower"), str)
                        and isinstance(e.get("name"), str)}
        skipped: list[str] = []
        for entry in entries:
            if entry.get(".tag") != "file":
                continue  # folders give names only; "deleted" entries only come with include_deleted
            lower, display, file_id = entry.get("path_lower"), entry.get("path_display"), entry.get("id")
            if not (isinstance(lower, str) and isinstance(file_id, str) and file_id):
                continue
            lower_parts = lower.split("/")[1:]
            if len(lower_parts) <= depth:
                continue
            display_parts = display.split("/")[1:] if isinstance(display, str) else []
            if len(display_parts) != len(lower_parts):
                display_parts = lower_parts
            given = entry.get("name")
            name: str = given if isinstance(given, str) and given else display_parts[-1]
            rel_parts = []
            for index in range(depth, len(lower_parts) - 1):
                folder_lower = "/" + "/".join(lower_parts[: index + 1])
                rel_parts.append(folder_names.get(folder_lower, display_parts[index]))
            rel_parts.append(name)
            rel = "/".join(rel_parts)
            if not self.config.all_files and not is_media(name):
                continue
            if not selected(rel.lower(), [p.lower() for p in self.config.include],
                            [p.lower() for p in self.config.exclude]):
                continue
            if entry.get("is_downloadable") is False:  # e.g. Google Docs in Dropbox: export only (2.4)
                skipped.append(rel)
                continue
            content_hash = entry.get("content_hash")
            checksum = Checksum(CONTENT_HASH, content_hash.lower()) if isinstance(content_hash, str) else None
            rev = entry.get("rev")
            # content_hash changes iff the bytes do (a re-upload of the same bytes keeps it); rev otherwise
            version = f"ch:{content_hash.lower()}" if checksum and content_hash else f"rev:{rev}"
            size = entry.get("size")
            yield Asset(id=file_id, path=rel, version=version,
                        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                        modified=parse_time(entry.get("client_modified")) or parse_time(entry.get("server_modified")),
                        media_type=media_type(name), checksum=checksum, ref=(lower, file_id))
        for rel in skipped[:MAX_WARNED]:
            self.context.warn(f"skipped {rel}: Dropbox cannot download it (is_downloadable=false; "
                              "a cloud document that can only be exported)")
        if len(skipped) > MAX_WARNED:
            self.context.warn(f"skipped {len(skipped) - MAX_WARNED} more files Dropbox cannot download")

    # -- content ------------------------------------------------------------------------------------

    def open(self, asset: Asset, offset: int = 0) -> Response:
        path_lower, file_id = asset.ref
        return self._download(asset, path_lower, offset, fallback=file_id)

    def _download(self, asset: Asset, target: str, offset: int, fallback: str | None) -> Response:
        # "HTTP header safe" JSON: ensure_ascii escapes 0x7F and non-ASCII as \uXXXX (providers.md 2.4)
        headers = {"Dropbox-API-Arg": json.dumps({"path": target}, ensure_ascii=True)}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response, error = self._send(f"{self.content}/2/files/download", headers, None)
        except HttpError as exc:
            raise AssetError(str(exc), retryable=exc.retryable) from None
        status = response.status
        if error is None:
            if status == 206 and offset:
                if (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
                    response.offset = offset
                    return response
                response.close()
                return self._download(asset, target, 0, fallback)
            if status == 200:
                return response
            response.close()
            raise AssetError(f"Dropbox answered HTTP {status} to the download", retryable=False)
        if status == 416 and offset:
            return self._download(asset, target, 0, fallback)
        if status == 401:
            raise self._auth_error("files/download", error)
        tags, summary = _error_tags(error)
        if status == 409:
            if tags[:2] == ["path", "not_found"] and fallback:  # moved since the listing: the id still works
                return self._download(asset, fallback, offset, None)
            if tags[:1] == ["unsupported_file"]:
                raise AssetError("Dropbox cannot download this file (export only)")
            raise AssetError(f"Dropbox: {summary or 'HTTP 409'}")
        if status == 400:
            text = error.decode("utf-8", "replace").strip()[:300]
            raise AssetError(f"Dropbox rejected pixsrc's download request as malformed (a pixsrc bug): {text}")
        raise AssetError(f"Dropbox: HTTP {status}{': ' + summary if summary else ''}",
                         retryable=status in (408, 429) or status >= 500)

    def verify(self) -> str | None:
        """One cheap call after login: the configured folder can be listed."""
        args = {"path": self.config.path, "recursive": False, "limit": 1}
        self._rpc("files/list_folder", args)
        return f"folder {self.config.path or '/'} is readable"

    def close(self) -> None:
        self.http.close()


API_BASE = "https://api.dropboxapi.com"
CONTENT_BASE = "https://content.dropboxapi.com"

PROVIDER = OAuthProvider(
    name="dropbox",
    display_name="Dropbox",
    authorize_url="https://www.dropbox.com/oauth2/authorize",  # providers.md 2.1
    token_url="https://api.dropboxapi.com/oauth2/token",
    revoke_url="https://api.dropboxapi.com/2/auth/token/revoke",  # Bearer, no arguments (auth.stone)
    revoke_style="bearer",
    api_base_url=API_BASE,
    content_base_url=CONTENT_BASE,
    scope_separator=" ",
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
