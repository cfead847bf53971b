"""json-feed: the images and videos of a JSON Feed (https://jsonfeed.org/version/1.1).

Each item's ``image`` (and, when asked, its ``banner_image``) and each attachment whose
``mime_type`` is an image or a video become assets. An asset's id is its media URL, so an image two
items share is listed once; its path is the URL's path, below a folder named after the host for
files on another host than the feed's (a CDN). A feed does not say when a file's bytes change, so
the assets have ``version=""``: pixsrc versions them by the download's ETag / Last-Modified and
checks them again with a conditional GET on the next fetch.

``next_url`` pages are followed, up to ``max_pages``. The access token (optional, for private
feeds) is sent as a Bearer token to the feed's own origin (scheme, host and port) only, never to
another host the feed links to.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from pixsrc.api import ApiError, safe_url
from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.types import (
    Asset,
    AuthSpec,
    BearerKey,
    HttpUrl,
    SourceConfig,
    SourceContext,
    SourceType,
    Transfer,
    TransferError,
    field,
)
from pydantic import BaseModel, ValidationError, field_validator

__all__ = ["SOURCE_TYPE", "JsonFeedConfig", "JsonFeedController", "asset_path"]

ACCEPT = "application/feed+json, application/json;q=0.9"
MEDIA = ("image", "video")


class JsonFeedConfig(SourceConfig):
    url: HttpUrl = field(label="Feed URL", placeholder="https://example.org/feed.json")
    max_pages: int = field(10, label="Feed pages to read (next_url)")
    attachments: bool = field(True, label="Include attachments (images and videos)")
    banner_images: bool = field(False, label="Include banner images")

    @field_validator("max_pages")
    @classmethod
    def _pages_in_range(cls, value: int) -> int:
        if not 1 <= value <= 1000:
            raise ValueError("must be between 1 and 1000")
        return value


# -- the JSON Feed document: only what this type reads (other keys are ignored, as the spec asks) --

class Attachment(BaseModel):
    url: str
    mime_type: str


class Item(BaseModel):
    image: str | None = None
    banner_image: str | None = None
    attachments: list[Attachment] = []


class FeedPage(BaseModel):
    version: str
    title: str | None = None
    items: list[Any]  # read one by one: a malformed item is skipped, not the whole feed
    next_url: str | None = None


def _problem(exc: ValidationError) -> str:
    """The first thing wrong with a document, in a few words and never its data."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the document"
    return f"{where}: {error['msg']}"


def origin(url: str) -> tuple[str, str, int] | None:
    """An http(s) URL's origin (scheme, host, port), None for anything else: a credential is bound to one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, an unbalanced IPv6 bracket
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port if port is not None else {"http": 80, "https": 443}[parts.scheme]


def asset_path(url: str, media_type: str | None, feed_origin: tuple[str, str, int] | None) -> str:
    """Where a media URL goes below the destination: its URL path, in a folder named after its host
    (``cdn.example.net`` or ``127.0.0.1_8080``) when that is not the feed's; a query string
    (``?w=800``) makes a file of its own; a name without an extension gets its media type's."""
    parts = urlsplit(url)
    names = [n.replace("\\", "_").replace("\x00", "_") for n in unquote(parts.path).split("/")
             if n not in ("", ".", "..")]
    name = names.pop() if names else "index"
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, (mimetypes.guess_extension(media_type or "") or "").lstrip(".")
    if parts.query:
        stem += "-" + hashlib.sha256(parts.query.encode()).hexdigest()[:8]
    if origin(url) != feed_origin:
        names.insert(0, f"{parts.hostname}_{parts.port}" if parts.port else str(parts.hostname))
    return "/".join([*names, f"{stem}.{ext}" if ext else stem])


def login_hint(source_id: str) -> str:
    return f"store its access token: pixsrc auth login {source_id}"


class JsonFeedController:
    def __init__(self, context: SourceContext) -> None:
        self.config: JsonFeedConfig = context.config
        self.source_id = context.source_id
        self.warn = context.warn
        secret = context.get_secret()
        # nothing to refresh: a 401 ends the source with exit 3 and the fix
        refused = f"{context.source_id}: the feed refused the stored access token (HTTP 401)"
        self.token = BearerKey(secret, refused, login_hint(context.source_id)) if secret else None
        self.origin = origin(self.config.url)
        # no client-wide credential: the token goes per request, to the feed's own origin only
        self.api = context.api(auth=None, headers={"Accept": ACCEPT})

    # -- listing -----------------------------------------------------------------------------------

    def _page(self, url: str) -> tuple[str, FeedPage]:
        """One page of the feed, and its URL after redirects (what its relative links are relative to)."""
        sent = self.token.headers() if self.token is not None and origin(url) == self.origin else {}
        try:
            response = self.api.get(url, headers=sent)
        except ApiError as exc:  # the network, TLS, a proxy: after the retries
            raise SourceUnavailable(f"{self.source_id}: {exc}") from None
        status = response.status_code
        if status in (401, 403):
            why = "refused the stored access token" if sent else "needs an access token"
            raise AuthRequired(f"{self.source_id}: the feed {why} (HTTP {status})", hint=login_hint(self.source_id))
        if status != 200:
            raise SourceUnavailable(f"{self.source_id}: HTTP {status} for {safe_url(url)}")
        try:
            page = FeedPage.model_validate_json(response.content)
        except ValidationError as exc:
            raise SourceUnavailable(f"{self.source_id}: {safe_url(url)} is not a JSON Feed ({_problem(exc)})",
                                    hint=f"check the URL: pixsrc show {self.source_id}") from None
        if "jsonfeed.org/version/" not in page.version:
            raise SourceUnavailable(f"{self.source_id}: {safe_url(url)} is not a JSON Feed "
                                    f"(version {page.version[:60]!r})")
        return str(response.url), page

    def _media(self, page_url: str, position: int, raw: Any) -> Iterator[tuple[str, str | None]]:
        """The (URL, media type) of the images and videos of one item."""
        try:
            item = Item.model_validate(raw)
        except ValidationError as exc:
            self.warn(f"{safe_url(page_url)}: item #{position} skipped ({_problem(exc)})")
            return
        links: list[tuple[str | None, str | None]] = [(item.image, None)]
        if self.config.banner_images:
            links.append((item.banner_image, None))
        if self.config.attachments:
            links += [(a.url, a.mime_type.lower()) for a in item.attachments
                      if a.mime_type.split("/")[0].lower() in MEDIA]
        for link, kind in links:
            if not link:
                continue
            url = urljoin(page_url, link).partition("#")[0]
            if origin(url) is None:
                self.warn(f"{safe_url(page_url)}: item #{position}: {link[:80]!r} is not an http(s) URL; skipped")
                continue
            yield url, kind or mimetypes.guess_type(urlsplit(url).path)[0]

    def list_assets(self) -> Iterator[Asset]:
        url = self.config.url
        pages: set[str] = set()  # read so far, as asked for and after redirects: a loop ends the listing
        seen: set[str] = set()
        for _ in range(self.config.max_pages):
            pages.add(url)
            url, page = self._page(url)
            pages.add(url)
            for position, raw in enumerate(page.items):
                for media_url, kind in self._media(url, position, raw):
                    if media_url in seen:
                        continue
                    seen.add(media_url)
                    yield Asset(id=media_url, path=asset_path(media_url, kind, self.origin), version="",
                                media_type=kind, ref=media_url)
            if not page.next_url:
                return
            url = urljoin(url, page.next_url)
            if origin(url) is None or url in pages:
                raise SourceUnavailable(f"{self.source_id}: next_url {safe_url(url)!r} is not an http(s) URL "
                                        "or loops back to a page already read")
        self.warn(f"read max_pages={self.config.max_pages} pages and stopped; the feed has more "
                  f"(pixsrc edit {self.source_id} --set max_pages=N)")

    def verify(self) -> str | None:
        """Optional: ``pixsrc auth login`` calls it once to prove a new token works."""
        return self._page(self.config.url)[1].title

    # -- content -------------------------------------------------------------------------------------

    def transfer(self, asset: Asset) -> Transfer:
        url = asset.ref
        if not isinstance(url, str):
            raise AssetError(f"{asset.path}: not an asset of this feed")
        own = origin(url) == self.origin
        hint = login_hint(self.source_id)

        def on_error(status: int, headers: Mapping[str, str], body: bytes) -> TransferError | None:
            if status in (401, 403) and own:  # the feed's host refused: the token is missing or wrong
                return TransferError(f"the feed's host answered HTTP {status} for {asset.path}", auth=True,
                                     hint=hint)
            if status in (401, 403):  # another host's refusal is about this file, not about our token
                return TransferError(f"HTTP {status} from {urlsplit(url).hostname}")
            return None  # the engine's default: 408/429/5xx retried, anything else fails this asset

        return Transfer(url=url, auth=self.token if own else None, on_error=on_error)

    def close(self) -> None:
        self.api.close()


SOURCE_TYPE = SourceType(
    id="json-feed",
    name="JSON Feed",
    category="web",
    description="The images and videos of a JSON Feed (jsonfeed.org): item images and attachments.",
    config_model=JsonFeedConfig,
    factory=JsonFeedController,
    auth=AuthSpec(kind="api-key", required=False, label="Access token (sent as a Bearer token)"),
)
