"""remote-gallery: assets published over HTTP(S), from a JSON index or web-server folder listings.

JSON index (``index = "json"``): the URL answers a JSON document, either a list of assets or
``{"assets": [...], "next": "<url of the next page>"}``; each asset has ``path`` and/or ``url``
and optionally ``id``, ``size``, ``sha256``, ``modified`` (RFC 3339), ``media_type``, ``version``
and ``etag`` (the strong ETag its URL answers with, which guards a resumed download). An entry
that tells no version (no ``version``, ``sha256``, ``modified`` or ``size``) is versioned by the
download's ETag / Last-Modified, like a folder listing's files.

HTML (``index = "html"``): directory listings as nginx/Apache autoindex, Python's http.server
or ``rclone serve http`` produce them. Links are followed only below the URL, never above it,
to ``max_depth`` folders, several folders at a time (at most ``jobs``). No HEAD requests. Where
a listing dates its files (nginx autoindex: size and minute), a file whose minute ended over 12 hours
before the listing was answered (whatever its time zone) is versioned by that size and date, so a
re-fetch asks nothing about it (as ``rclone`` compares size and time). Other files (other servers,
files changed in the last 12 hours, ``recheck = true``) have ``version=""``: the engine learns the version from the
download's ETag / Last-Modified and re-checks it with a conditional GET.
``auto`` asks for JSON and crawls if HTML comes back.

The API key (optional) is sent as a Bearer token to the gallery's own origin only (scheme, host
and port of the configured URL), never to other hosts an index points at (a CDN).
"""

from __future__ import annotations

import calendar
import html
import json
import re
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.paths import selected
from pixsrc.sources import image_or_video, media_type, origin, parse_time
from pixsrc.types import (
    LISTED,
    Asset,
    AuthSpec,
    BearerKey,
    Checksum,
    HttpUrl,
    SourceConfig,
    SourceContext,
    SourceType,
    Transfer,
    TransferError,
    field,
)

if TYPE_CHECKING:
    import httpx

MAX_PAGES = 10_000
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class RemoteGalleryConfig(SourceConfig):
    url: HttpUrl = field(label="Gallery URL", placeholder="https://assets.example.com/gallery/")
    index: Literal["auto", "json", "html"] = field("auto", label="Index format")
    max_depth: int = field(10, label="Folder depth to crawl (html)")
    include: list[str] = field([], label="Only files matching (globs, comma-separated)", placeholder="*.jpg")
    exclude: list[str] = field([], label="Skip files matching (globs, comma-separated)")
    all_files: bool = field(False, label="All files, not only images and videos (html)")
    recheck: bool = field(False, label="Ask the server about every file on each fetch, not only changed ones (html)")


# A regex, not html.parser: listings with inline SVG icons (rclone serve) took 25 ms a page to parse.
_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.IGNORECASE)


# A relative link urljoin would only append to its folder's URL: one name (a folder's with its "/"), in
# characters a URL carries as they are; no ":" (a scheme), "?" , "#", leading "/" or inner "/".
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=@-]+/?")


# An nginx autoindex row: the link, its date (UTC, to the minute) and its size; folders show "-".
_NGINX_ROW = re.compile(r'<a href="([^"]+)">[^<\n]*</a>[ \t]+(\d{2})-([A-Z][a-z]{2})-(\d{4}) (\d{2}):(\d{2})'
                        r"[ \t]+(\d+)\r?$", re.MULTILINE)
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}  # not the locale's
# A listed date is trusted once its minute ended this long before the listing was answered: a file
# changed again within the minute pixsrc fetched it would otherwise keep its listed size and date.
# nginx dates are UTC, unless `autoindex_localtime on`: west of Greenwich local time is up to 12 h
# behind, so a date is only trusted once it is older than that too (east, files look newer: safe).
SETTLED = 12 * 3600 + 120


def _listed_versions(page: str, listed_at: float | None) -> dict[str, tuple[str, int]]:
    """href -> (version, size) for the files a dated listing shows as settled; {} for other listings."""
    if listed_at is None or "<pre>" not in page:
        return {}
    found = {}
    for href, day, month, year, hour, minute, size in _NGINX_ROW.findall(page):
        number = _MONTHS.get(month)
        if number is None:
            continue
        when = calendar.timegm((int(year), number, int(day), int(hour), int(minute), 0))
        if when + SETTLED <= listed_at:
            found[html.unescape(href)] = (f"{LISTED}{size}:{year}-{number:02}-{day}T{hour}:{minute}Z", int(size))
    return found


def _listed_at(response: httpx.Response) -> float | None:
    """When the server answered, by its own clock (the one its listing dates come from)."""
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(response.headers.get("Date", "")).timestamp()
    except (TypeError, ValueError):
        return None


def _hrefs(page: str) -> Iterator[str]:
    for match in _HREF.finditer(page):
        href = match[1] if match[1] is not None else match[2] if match[2] is not None else match[3]
        if href:
            yield html.unescape(href)


def _is_json(response: httpx.Response) -> bool:
    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _file_kind(response: httpx.Response) -> str | None:
    """The media type of an answer that is a file to download, not a page or an index; None for
    HTML, JSON, XML and other text (a listing may come as text/plain), and when the server names none."""
    if "attachment" in (response.headers.get("Content-Disposition") or "").lower():
        return (response.headers.get("Content-Type") or "application/octet-stream").split(";")[0].strip().lower()
    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if not kind or kind.startswith("text/") or kind.endswith(("json", "xml")):
        return None
    return kind


def _shown(url: str) -> str:
    """A URL for messages: without its query string, which may carry a signature or a token."""
    from pixsrc.api import safe_url

    return safe_url(url)


class RemoteGalleryController:
    def __init__(self, context: SourceContext) -> None:
        self.config: RemoteGalleryConfig = context.config
        self.source_id = context.source_id
        self.jobs = max(1, context.jobs)
        self.warn = context.warn
        secret = context.get_secret()
        # attached only to requests for the gallery's own origin
        self.key = BearerKey(secret, f"{context.source_id}: the gallery refused the stored API key (HTTP 401)",
                             f"store its API key: pixsrc auth login {context.source_id}") if secret else None
        self.origin = origin(self.config.url)
        self._own: dict[str, bool] = {}  # URL prefix -> whether it is the gallery's own origin
        # no Api-wide auth: the key is added per request, for the gallery's own origin only
        self.api = context.api(auth=None)

    def _auth_hint(self) -> str:
        return f"store its API key: pixsrc auth login {self.source_id}"

    # -- listing --------------------------------------------------------------------------------

    def _get(self, url: str, accept: str) -> httpx.Response:
        from pixsrc.api import ApiError

        headers = {"Accept": accept}
        if self.key is not None and origin(url) == self.origin:
            headers.update(self.key.headers())
        try:
            response = self.api.get(url, headers=headers)
        except ApiError as exc:
            raise SourceUnavailable(f"{self.source_id}: {exc}") from None
        status = response.status_code
        if status in (401, 403):
            raise AuthRequired(f"{self.source_id}: the gallery answered HTTP {status} for {_shown(url)}",
                               hint=self._auth_hint())
        if status != 200:
            raise SourceUnavailable(f"{self.source_id}: HTTP {status} for {_shown(url)}")
        return response

    def list_assets(self) -> Iterator[Asset]:
        mode = self.config.index
        accept = {"json": "application/json", "html": "text/html",
                  "auto": "application/json, text/html;q=0.9"}[mode]
        first = self._get(self.config.url, accept)
        body = first.content
        url = str(first.url)  # after redirects (/gallery -> /gallery/): links are relative to this one
        looks_json = _is_json(first) or body.lstrip()[:1] in (b"{", b"[")
        kind = _file_kind(first)
        if kind is not None and not (looks_json and mode != "html"):
            # a picture's own URL: no links, no index, so "0 listed" would look like an empty gallery
            folder = urlunsplit(urlsplit(url)._replace(path=urlsplit(url).path.rsplit("/", 1)[0] + "/",
                                                         query="", fragment=""))
            self.warn(f"{_shown(url)} is a file ({kind}), not a gallery folder or JSON index; use its folder: "
                      f"pixsrc edit {self.source_id} --set url={folder}")
            return
        if mode == "json" or (mode == "auto" and looks_json):
            assets = self._json_pages(url, body)
        else:
            assets = self._crawl(url, body, _listed_at(first))
        for asset in assets:
            if selected(asset.path, self.config.include, self.config.exclude):
                yield asset

    # -- JSON index -------------------------------------------------------------------------------

    def _json_pages(self, url: str, body: bytes) -> Iterator[Asset]:
        seen_pages = {url}
        seen_ids: set[str] = set()
        duplicates = 0
        while True:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise SourceUnavailable(f"{self.source_id}: {_shown(url)} is not a JSON index: {why}") from None
            items = document.get("assets") if isinstance(document, dict) else document
            if not isinstance(items, list):
                raise SourceUnavailable(f"{self.source_id}: {_shown(url)}: a JSON index is a list "
                                        "or an object with an 'assets' list")
            page_dir = url.split("?", 1)[0].rsplit("/", 1)[0] + "/"
            for position, item in enumerate(items):
                asset = self._json_asset(page_dir, url, position, item)
                if asset.id in seen_ids:
                    duplicates += 1
                    continue
                seen_ids.add(asset.id)
                yield asset
            next_url = document.get("next") if isinstance(document, dict) else None
            if next_url is None or next_url == "":
                break
            if not isinstance(next_url, str):
                raise SourceUnavailable(f"{self.source_id}: {_shown(url)}: 'next' must be a URL string")
            next_url = urljoin(url, next_url)
            if origin(next_url) is None:
                raise SourceUnavailable(f"{self.source_id}: {_shown(url)}: 'next' is not an http(s) URL")
            if next_url in seen_pages or len(seen_pages) >= MAX_PAGES:
                raise SourceUnavailable(f"{self.source_id}: the index pages loop at {_shown(next_url)}")
            seen_pages.add(next_url)
            response = self._get(next_url, "application/json")
            url, body = str(response.url), response.content
        if duplicates:
            self.warn(f"the index lists {duplicates} asset id(s) more than once; kept the first of each")

    def _json_asset(self, page_dir: str, page: str, position: int, item: Any) -> Asset:
        def bad(why: str) -> SourceUnavailable:
            return SourceUnavailable(f"{self.source_id}: {_shown(page)}: asset #{position}: {why}")

        def optional(key: str, kinds: tuple[type, ...], what: str) -> Any:
            value = item.get(key)
            if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise bad(f"'{key}' must be {what}")
            return value

        if not isinstance(item, dict):
            raise bad("an asset is an object with a 'path' or a 'url'")
        link = optional("url", (str,), "a URL string")
        path = optional("path", (str,), "a string")
        if not link and not path:
            raise bad("needs a 'path' or a 'url'")
        if link:
            url = urljoin(page, link)
            if origin(url) is None:
                raise bad(f"'url' is not an http(s) URL: {link[:100]!r}")
        else:  # urljoin costs ~40 us an asset; a plain relative path needs only the page's folder
            url = page_dir + quote(path.lstrip("/"))
        if not path:
            path = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
            if not path:
                raise bad("needs a 'path' (its 'url' names a folder)")
        size = optional("size", (int,), "a non-negative integer")
        if size is not None and size < 0:
            raise bad("'size' must be a non-negative integer")
        sha256 = optional("sha256", (str,), "a hex string")
        if sha256 is not None and not _HEX64.fullmatch(sha256):
            raise bad("'sha256' must be 64 hex digits")
        checksum = Checksum("sha256", sha256.lower()) if sha256 else None
        modified = optional("modified", (str,), "an RFC 3339 time string")
        explicit = optional("version", (str, int), "a string")
        asset_id = optional("id", (str, int), "a string")
        kind = optional("media_type", (str,), "a string")
        etag = optional("etag", (str,), "a string")
        if explicit is not None and explicit != "":
            version = str(explicit)
        elif checksum:
            version = f"sha256:{checksum.value}"
        elif modified or size is not None:
            version = f"{modified}:{size}"
        else:  # nothing tells a change: the engine learns the version from the download's ETag
            version = ""
        strong = etag if etag and etag.startswith('"') and "\n" not in etag and "\r" not in etag else None
        return Asset(id=str(asset_id) if asset_id not in (None, "") else path, path=path, version=version,
                     size=size, modified=parse_time(modified), media_type=kind or media_type(path),
                     checksum=checksum, ref=(url, strong))

    # -- HTML folder listings -------------------------------------------------------------------------

    def _crawl(self, url: str, body: bytes, listed_at: float | None) -> Iterator[Asset]:
        """Walk the listings breadth-first, up to ``jobs`` folders at a time; each folder's files are
        yielded once its page is read, so downloads start while deeper folders still load."""
        parts = urlsplit(url)
        last = parts.path.rsplit("/", 1)[-1]
        if parts.path.endswith("/") or "." not in last:
            base_path = parts.path.rstrip("/") + "/"  # "/gallery" served without a redirect is a folder too
        else:
            base_path = parts.path.rsplit("/", 1)[0] + "/"  # "/gallery/index.html"
        base = urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
        visited = {url, base}
        files: set[str] = set()

        def scan(page_base: str, page_body: bytes, depth: int,
                 listed_at: float | None) -> tuple[list[Asset], list[str]]:
            found: list[Asset] = []
            folders: list[str] = []
            text = page_body.decode("utf-8", "replace")
            dated = {} if self.config.recheck else _listed_versions(text, listed_at)
            page = urlsplit(page_base)
            # a folder page inside the gallery: a plain name in it (what autoindex writes) joins by appending
            # it, so the per-link cost of urljoin + urlsplit (a third of a no-op re-fetch) is paid only for
            # the links that need them
            plain_page = (page_base.endswith("/") and not page.query and not page.fragment
                          and page.netloc == parts.netloc and page.path.startswith(base_path))
            for href in _hrefs(text):
                if plain_page and _PLAIN_NAME.fullmatch(href):
                    path, clean = page.path + href, page_base + href
                else:
                    try:
                        target = urlsplit(urljoin(page_base, href))
                    except ValueError:  # an unbalanced IPv6 bracket and the like: not a link we follow
                        continue
                    if target.query or target.scheme not in ("http", "https") or target.netloc != parts.netloc:
                        continue  # sorting links, other hosts
                    path = target.path
                    clean = urlunsplit((target.scheme, target.netloc, path, "", ""))
                if {".", ".."} & set(unquote(path).split("/")):
                    continue  # encoded dot segments (%2e%2e/) a server would resolve above the gallery
                if not path.startswith(base_path) or path == base_path:
                    continue  # never above the gallery URL
                if path.endswith("/"):
                    if clean not in visited and depth < self.config.max_depth:
                        visited.add(clean)
                        folders.append(clean)
                    continue
                rel = unquote(path[len(base_path):])
                if rel in files:
                    continue
                kind = image_or_video(rel)
                if kind is None:
                    if not self.config.all_files:
                        continue
                    kind = media_type(rel)
                files.add(rel)
                version, size = dated.get(href, ("", None))
                found.append(Asset(id=rel, path=rel, version=version, size=size, media_type=kind, ref=(clean, None)))
            found.sort(key=lambda a: a.path)
            return found, folders

        found, folders = scan(base if "." not in last else url, body, 0, listed_at)
        yield from found
        if not folders:
            return
        # pages are read in the order they were found (a stable listing, run after run) while up to
        # `jobs` of them load at once; a slow page holds back only the yielding, not the loading
        pending: deque[tuple[Future[httpx.Response], int]] = deque()
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="pixsrc-crawl")
        try:
            pending.extend((pool.submit(self._get, folder, "text/html"), 1) for folder in folders)
            while pending:
                future, depth = pending.popleft()
                response = future.result()  # raises the first SourceUnavailable / AuthRequired
                found, folders = scan(str(response.url), response.content, depth, _listed_at(response))
                yield from found
                pending.extend((pool.submit(self._get, folder, "text/html"), depth + 1) for folder in folders)
        finally:
            # on an error or when the consumer stops early: queued pages are dropped, running ones end
            pool.shutdown(wait=True, cancel_futures=True)

    # -- content ------------------------------------------------------------------------------------

    def transfer(self, asset: Asset) -> Transfer:
        ref = asset.ref
        if not (isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[0], str)):
            raise AssetError(f"{asset.path}: not an asset of this gallery")
        url, validator = ref
        end = url.find("/", url.find("//") + 2)
        prefix = url if end < 0 else url[:end]  # scheme://host:port, the same for most files
        own = self._own.get(prefix)
        if own is None:
            own = self._own[prefix] = origin(url) == self.origin
        key = self.key if own else None
        host = prefix.partition("//")[2]
        hint = self._auth_hint()

        def on_error(status: int, headers: Mapping[str, str], body: bytes) -> TransferError | None:
            if own and status in (401, 403):
                if status == 401 and key is not None:
                    return None  # the engine asks the key (BearerKey.unauthorized: exit 3 with the hint)
                return TransferError(f"the gallery answered HTTP {status} for {asset.path}; {hint}", auth=True)
            if not own and status in (401, 403):  # another host's refusal is about this file, not our key
                return TransferError(f"HTTP {status} from {host}")
            return None

        return Transfer(url=url, auth=key, resumable=True, validator=validator, on_error=on_error)

    def close(self) -> None:
        self.api.close()


SOURCE_TYPE = SourceType(
    id="remote-gallery",
    name="Remote gallery (HTTP)",
    category="web",
    description="Files published over HTTP(S): a JSON index, or web-server folder listings.",
    config_model=RemoteGalleryConfig,
    factory=RemoteGalleryController,
    auth=AuthSpec(kind="api-key", required=False, label="API key (sent as a Bearer token)"),
)
