"""remote-gallery: assets published over HTTP(S), from a JSON index or web-server folder listings.

JSON index (``index = "json"``): the URL answers a JSON document, either a list of assets or
``{"assets": [...], "next": "<url of the next page>"}``; each asset has ``path`` and/or ``url``
and optionally ``id``, ``size``, ``sha256``, ``modified`` (RFC 3339), ``media_type``, ``version``.

HTML (``index = "html"``): directory listings as nginx/Apache autoindex, Python's http.server
or ``rclone serve http`` produce them. Links are followed only below the URL, never above it,
to ``max_depth`` folders. Each file's version comes from a HEAD request: ETag, else
Last-Modified + size. ``auto`` asks for JSON and crawls if HTML comes back.
"""

from __future__ import annotations

import html
import json
import queue
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.http import HttpClient, HttpError, Response
from pixsrc.paths import selected
from pixsrc.sources import is_media, media_type, parse_time
from pixsrc.types import Asset, AuthSpec, Checksum, HttpUrl, SourceConfig, SourceContext, SourceType, field

MAX_PAGES = 10_000
HEAD_BATCH = 64  # files of one listing per task: their HEADs are pipelined on one connection


class RemoteGalleryConfig(SourceConfig):
    url: HttpUrl = field(label="Gallery URL", placeholder="https://assets.example.com/gallery/")
    index: Literal["auto", "json", "html"] = field("auto", label="Index format")
    max_depth: int = field(10, label="Folder depth to crawl (html)")
    include: list[str] = field([], label="Only files matching (globs, comma-separated)", placeholder="*.jpg")
    exclude: list[str] = field([], label="Skip files matching (globs, comma-separated)")
    all_files: bool = field(False, label="All files, not only images and videos (html)")


# A regex, not html.parser: listings with inline SVG icons (rclone serve) took 25 ms a page to parse.
_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.IGNORECASE)


def _hrefs(page: str) -> Iterator[str]:
    for match in _HREF.finditer(page):
        href = match[1] if match[1] is not None else match[2] if match[2] is not None else match[3]
        if href:
            yield html.unescape(href)


def _is_json(response: Response) -> bool:
    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class RemoteGalleryController:
    def __init__(self, context: SourceContext) -> None:
        self.config: RemoteGalleryConfig = context.config
        self.source_name = context.source_id
        self.jobs = context.jobs
        secret = context.get_secret()
        # the key goes to the gallery's own origin only, never to hosts an index points at (CDNs)
        self._auth = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._auth_origin = urlsplit(self.config.url)[:2]
        self.http = HttpClient()

    def _headers(self, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._auth and urlsplit(url)[:2] == self._auth_origin:
            headers.update(self._auth)
        return headers

    # -- listing --------------------------------------------------------------------------------

    def _get(self, url: str, accept: str) -> Response:
        try:
            response = self.http.get(url, self._headers(url, {"Accept": accept}))
        except HttpError as exc:
            raise SourceUnavailable(f"{self.source_name}: {exc}") from None
        if response.status in (401, 403):
            response.close()
            raise AuthRequired(
                f"{self.source_name}: the gallery answered HTTP {response.status} for {url}",
                hint=f"store its API key: pixsrc auth login {self.source_name}",
            )
        if response.status != 200:
            response.close()
            raise SourceUnavailable(f"{self.source_name}: HTTP {response.status} for {url}")
        return response

    def list_assets(self) -> Iterator[Asset]:
        mode = self.config.index
        url = self.config.url
        accept = {"json": "application/json", "html": "text/html",
                  "auto": "application/json, text/html;q=0.9"}[mode]
        first = self._get(url, accept)
        body = first.read_all()
        url = first.url  # after redirects (/gallery -> /gallery/): links are relative to this one
        if mode == "json" or (mode == "auto" and (_is_json(first) or body.lstrip()[:1] in (b"{", b"["))):
            assets = self._json_pages(url, body)
        else:
            assets = self._crawl(url, body)
        for asset in assets:
            if selected(asset.path, self.config.include, self.config.exclude):
                yield asset

    def _json_pages(self, url: str, body: bytes) -> Iterator[Asset]:
        seen = {url}
        while True:
            try:
                document = json.loads(body)
            except ValueError as exc:
                raise SourceUnavailable(f"{self.source_name}: {url} is not a JSON index: {exc}") from None
            items = document.get("assets") if isinstance(document, dict) else document
            if not isinstance(items, list):
                raise SourceUnavailable(f"{self.source_name}: {url}: a JSON index is a list or has an 'assets' list")
            page_dir = url.split("?", 1)[0].rsplit("/", 1)[0] + "/"
            for position, item in enumerate(items):
                yield self._json_asset(page_dir, url, position, item)
            next_url = document.get("next") if isinstance(document, dict) else None
            if not next_url:
                return
            next_url = urljoin(url, next_url)
            if next_url in seen or len(seen) >= MAX_PAGES:
                raise SourceUnavailable(f"{self.source_name}: the index pages loop at {next_url}")
            seen.add(next_url)
            url, body = next_url, self._get(next_url, "application/json").read_all()

    def _json_asset(self, page_dir: str, page: str, position: int, item: Any) -> Asset:
        def bad(why: str) -> SourceUnavailable:
            return SourceUnavailable(f"{self.source_name}: {page}: asset #{position}: {why}")

        if not isinstance(item, dict) or not (item.get("path") or item.get("url")):
            raise bad("needs a 'path' or a 'url'")
        link = item.get("url")
        path = item.get("path") or unquote(urlsplit(link).path).rsplit("/", 1)[-1]
        if not isinstance(path, str):
            raise bad("'path' must be a string")
        # urljoin costs ~40 us an asset; a plain relative path needs only the page's folder
        url = urljoin(page, link) if link else page_dir + _quote_path(path)
        size = item.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise bad("'size' must be a non-negative integer")
        sha256 = item.get("sha256")
        checksum = Checksum("sha256", sha256.lower()) if isinstance(sha256, str) else None
        modified = item.get("modified")
        if item.get("version"):
            version = str(item["version"])
        elif checksum:
            version = f"sha256:{checksum.value}"
        elif modified or size is not None:
            version = f"{modified}:{size}"
        else:  # nothing tells a change: fetched once (again with --force)
            version = f"url:{url}"
        return Asset(id=str(item.get("id") or path), path=path, version=version, size=size,
                     modified=parse_time(modified), media_type=item.get("media_type") or media_type(path),
                     checksum=checksum, ref=(url, None))

    def _crawl(self, url: str, body: bytes) -> Iterator[Asset]:
        """Walk the listings breadth-first; folders and HEAD requests run concurrently on one pool,
        so versions are being fetched while deeper listings still load."""
        parts = urlsplit(url)
        last = parts.path.rsplit("/", 1)[-1]
        if parts.path.endswith("/") or "." not in last:
            base_path = parts.path.rstrip("/") + "/"  # "/gallery" served without a redirect is a folder too
        else:
            base_path = parts.path.rsplit("/", 1)[0] + "/"  # "/gallery/index.html"
        base = urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
        visited = {url, base}
        files: set[str] = set()
        assets: list[Asset] = []
        # completions arrive on a queue: wait(FIRST_COMPLETED) over thousands of futures is O(n) each
        finished: queue.SimpleQueue[tuple[Future[Any], int]] = queue.SimpleQueue()
        with ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="pixsrc-crawl") as pool:
            outstanding = 0

            def submit(depth: int, fn: Any, *args: Any) -> None:
                nonlocal outstanding
                outstanding += 1
                pool.submit(fn, *args).add_done_callback(lambda future: finished.put((future, depth)))

            def scan(page: str, page_base: str, page_body: bytes, depth: int) -> None:
                found: list[tuple[str, str]] = []
                for href in _hrefs(page_body.decode("utf-8", "replace")):
                    target = urlsplit(urljoin(page_base, href))
                    if {".", ".."} & set(unquote(target.path).split("/")):
                        continue  # encoded dot segments (%2e%2e/) a server would resolve above the gallery
                    if target.query or target.scheme not in ("http", "https") or target.netloc != parts.netloc:
                        continue  # sorting links, other hosts
                    if not target.path.startswith(base_path) or target.path == base_path:
                        continue  # never above the gallery URL
                    clean = urlunsplit((target.scheme, target.netloc, target.path, "", ""))
                    if target.path.endswith("/"):
                        if clean not in visited and depth < self.config.max_depth:
                            visited.add(clean)
                            submit(depth + 1, self._page, clean)
                        continue
                    rel = unquote(target.path[len(base_path):])
                    if rel not in files and (self.config.all_files or is_media(rel)):
                        files.add(rel)
                        found.append((rel, clean))
                for start in range(0, len(found), HEAD_BATCH):
                    submit(-1, self._heads, found[start:start + HEAD_BATCH])

            scan(url, base if "." not in last else url, body, 0)
            while outstanding:
                future, depth = finished.get()
                outstanding -= 1
                result = future.result()  # raises the first SourceUnavailable / AuthRequired
                if depth < 0:
                    assets.extend(result)
                else:
                    scan(result[0], result[0], result[1], depth)
        assets.sort(key=lambda a: a.path)
        yield from assets

    def _page(self, page: str) -> tuple[str, bytes]:
        response = self._get(page, "text/html")
        return response.url, response.read_all()

    def _heads(self, files: list[tuple[str, str]]) -> list[Asset]:
        try:
            responses = self.http.head_many([url for _, url in files], self._headers(files[0][1]))
        except HttpError as exc:
            raise SourceUnavailable(f"{self.source_name}: {exc}") from None
        return [self._asset_from_head(rel, url, response) for (rel, url), response in zip(files, responses,
                                                                                          strict=True)]

    def _asset_from_head(self, rel: str, url: str, response: Response) -> Asset:
        response.close()
        if response.status in (401, 403):
            raise AuthRequired(f"{self.source_name}: the gallery answered HTTP {response.status} for {url}",
                               hint=f"store its API key: pixsrc auth login {self.source_name}")
        if response.status >= 400:  # listed but gone: let the download fail for this file alone
            return Asset(id=rel, path=rel, version=f"http-{response.status}", media_type=media_type(rel),
                         ref=(url, None))
        headers = response.headers
        length = headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        etag = headers.get("ETag")
        last_modified = headers.get("Last-Modified")
        modified = None
        if last_modified:
            try:
                modified = parsedate_to_datetime(last_modified)
            except (TypeError, ValueError):
                modified = None
        version = f"etag:{etag}" if etag else f"{last_modified}:{size}"
        strong_etag = etag if etag and not etag.startswith("W/") else None
        return Asset(id=rel, path=rel, version=version, size=size, modified=modified,
                     media_type=media_type(rel), ref=(url, strong_etag))

    # -- content ------------------------------------------------------------------------------------

    def open(self, asset: Asset, offset: int = 0) -> Response:
        url, etag = asset.ref
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if etag:
                headers["If-Range"] = etag  # a changed file comes back whole
        try:
            response = self.http.get(url, self._headers(url, headers))
        except HttpError as exc:
            raise AssetError(str(exc), retryable=exc.retryable) from None
        if response.status == 206 and offset:
            content_range = response.headers.get("Content-Range", "")
            if content_range.startswith(f"bytes {offset}-"):
                response.offset = offset
                return response
        if response.status == 416 and offset:
            response.close()
            return self.open(asset, 0)
        if response.status in (401, 403):
            response.close()
            raise AuthRequired(f"{self.source_name}: HTTP {response.status} for {asset.path}",
                               hint=f"store its API key: pixsrc auth login {self.source_name}")
        if response.status != 200:
            response.close()
            raise AssetError(f"HTTP {response.status}", retryable=response.status in (408, 429) or
                             response.status >= 500)
        return response

    def close(self) -> None:
        self.http.close()


def _quote_path(path: str) -> str:
    from urllib.parse import quote

    return quote(path.lstrip("/"))


SOURCE_TYPE = SourceType(
    id="remote-gallery",
    name="Remote gallery (HTTP)",
    category="web",
    description="Files published over HTTP(S): a JSON index, or web-server folder listings.",
    config_model=RemoteGalleryConfig,
    factory=RemoteGalleryController,
    auth=AuthSpec(kind="api-key", required=False, label="API key (sent as a Bearer token)"),
)
