"""pinterest: the images of the user's Pinterest boards (API v5), one folder per board and section.

Facts are from /work/shared/providers.md section 3 and the official OpenAPI file
(specs/pinterest/openapi.json, 5.23.0); the numbers in comments name those sections.

Listing: ``GET /v5/boards`` (all boards, ``bookmark`` paging, ``page_size=250``), then per board
``/v5/boards/{id}/sections`` + ``/v5/boards/{id}/sections/{sid}/pins`` and ``/v5/boards/{id}/pins``.
Whether the board's pin list also holds the pins of its sections is not documented, so pins are
de-duplicated by id within a board: a pin seen in a section is not listed again at the board's top.

Assets: one per pin (``<board>/<section>/<pin id>.<ext>``), one per item of a ``multiple_images``
pin (``<pin id>-<n>.<ext>``, id ``<pin id>-<n>``), the cover image of video pins when
``video_covers`` is on. Only the image URLs the API returns are downloaded; they live on the CDN
(i.pinimg.com): their ``Transfer`` carries no auth, so the CDN never sees the token.

The API publishes no size and no checksum for images (3.2). The image URLs are content-addressed
(``/1200x/0d/f6/f1/<hash>.jpg``), so an asset's version is its URL path: it changes when the image
(or the chosen size) changes. The same image saved on several boards is listed once per board
folder but downloaded once: every later asset with the same URL names the first in ``same_as``
and the engine copies the file it already has.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.sources import media_type, parse_time
from pixsrc.types import (
    Asset,
    AuthSpec,
    OAuthProvider,
    SourceConfig,
    SourceContext,
    SourceType,
    Transfer,
    TransferError,
    field,
)

PAGE_SIZE = 250  # boards/list and */list_pins: 1..250, default 25 (3.2)
MAX_PAGES = 100_000
SIZES = ("1200x", "600x", "400x300", "150x150")  # ImageSize keys in 5.23.0, largest first (3.2)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp"}
BASE_SCOPES = ("boards:read", "pins:read")
SECRET_SCOPES = ("boards:read_secret", "pins:read_secret")  # secret boards and their pins (3.1)
DEFAULT_PORT = 8085  # the port of Pinterest's own quickstart; register http://127.0.0.1:8085/callback


class PinterestConfig(SourceConfig):
    board: str = field("", label="Board (its id or its name; empty = all your boards)",
                       placeholder="Recipes")
    include_sections: bool = field(True, label="Include the pins in board sections (one folder per section)")
    include_secret: bool = field(False,
                                 label="Include secret boards (signs in with the *_read_secret scopes)")
    image_size: Literal["1200x", "600x", "400x300", "150x150"] = field(
        "1200x", label="Image size (the largest Pinterest offers is 1200x)",
        description="Preferred rendition; when a pin lacks it, the next smaller one, then the next larger.")
    video_covers: bool = field(True, label="Download the cover image of video pins")


def scopes_for(config: PinterestConfig) -> tuple[str, ...]:
    return BASE_SCOPES + (SECRET_SCOPES if config.include_secret else ())


PROVIDER = OAuthProvider(
    name="pinterest",
    display_name="Pinterest",
    authorize_url="https://www.pinterest.com/oauth/",
    token_url="https://api.pinterest.com/v5/oauth/token",
    api_base_url="https://api.pinterest.com",
    # /v5/oauth/token/revoke: "Only tokens issued for system users are currently supported" (3.1),
    # so a user's token cannot be revoked by pixsrc: logout says to disconnect the app instead.
    revoke_url="https://api.pinterest.com/v5/oauth/token/revoke",
    revoke_style="none",
    scope_separator=",",  # 3.1: scopes are comma-separated
    sends_iss=False,  # RFC 9207 iss: not in the v5 spec (providers.md 3.1), so not required
    pkce=False,  # 3.1: not documented by Pinterest (no code_challenge in the spec or the quickstart)
    secret="required",
    client_auth="basic",  # 3.1: HTTP Basic base64(client_id:client_secret) at /v5/oauth/token
    loopback_port=DEFAULT_PORT,  # 3.1: the redirect URI must match the registered one exactly, port included
    # 3.1: apps created before 2025-09-25 must ask for the continuous refresh token explicitly;
    # for newer apps it is the only kind there is.
    refresh_params=(("continuous_refresh", "true"),),
    rotates_refresh_token=True,  # 3.1: every refresh returns a new refresh token (new 60-day window)
    refresh_token_days=60,
    limits_note="continuous refresh token: 60 days, renewed on every refresh",
    console_url="https://developers.pinterest.com/apps/",
    requests_per_second=100.0,  # 3.3: Standard access, 100 requests/second per user per app
)


def _order(preferred: str) -> tuple[str, ...]:
    """The preferred size, then the smaller ones (largest first), then the larger ones (closest first)."""
    i = SIZES.index(preferred)
    return SIZES[i:] + tuple(reversed(SIZES[:i]))


def _url(value: Any) -> str | None:
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https") and urlsplit(value).hostname:
        return value
    return None


def _folder(name: Any, fallback: str) -> str:
    """One path component from a board or section name: a '/' in a name must not make a folder."""
    text = name if isinstance(name, str) else ""
    text = text.replace("/", "_").replace("\\", "_").replace("\x00", "_").strip()
    return fallback if text in ("", ".", "..") else text


def _error(body: bytes) -> str:
    """Pinterest's ``Error`` body {"code", "message"} (3.2) as one line."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and ("message" in data or "code" in data):
        return f"{data.get('message', '')} (code {data.get('code')})".strip()
    text = body[:200].decode("utf-8", "replace").strip()
    return text or "no details"


class _BadBookmark(Exception):
    pass


class PinterestController:
    def __init__(self, context: SourceContext) -> None:
        self.config: PinterestConfig = context.config
        self.source_id = context.source_id
        self.warn = context.warn
        self.auth = context.auth
        settings = context.provider
        self.base = (settings.api_base_url if settings is not None else PROVIDER.api_base_url).rstrip("/")
        # the API: the OAuth token (refreshed once after a 401) and the provider's rate limit.
        # Image downloads do not go through it: they are Transfers without auth (transfer()).
        self.api = context.api(headers={"Accept": "application/json"})
        self.sizes = _order(self.config.image_size)

    # -- API ----------------------------------------------------------------------------------------

    def _login_hint(self) -> str:
        return f"run: pixsrc auth login {self.source_id}"

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        from pixsrc.api import ApiError

        try:
            response = self.api.get(f"{self.base}/v5{path}", params=params)
        except ApiError as exc:
            raise SourceUnavailable(f"Pinterest: {exc}") from None
        status = response.status_code
        body = response.content
        if status == 200:
            try:
                return json.loads(body)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                raise SourceUnavailable(f"Pinterest answered invalid JSON for {path}") from None
        detail = _error(body)
        if status == 401:
            raise AuthRequired(f"Pinterest refused the sign-in: {detail}", hint=self._login_hint())
        if status == 403:  # code 29, "You are not permitted to access that resource": a missing scope
            raise AuthRequired(f"Pinterest denied access to {path}: {detail}",
                               hint=f"sign in again to grant the scopes: pixsrc auth login {self.source_id}")
        if status == 400 and params.get("bookmark"):
            raise _BadBookmark(detail)
        if status == 429:  # still limited after the Api's backoff (no Retry-After is sent, 3.3)
            raise SourceUnavailable(f"Pinterest's rate limit: {detail}",
                                    hint="try again later; Trial access allows 1,000 requests a day")
        raise SourceUnavailable(f"Pinterest answered HTTP {status} for {path}: {detail}")

    def _items(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following ``bookmark`` until it is null or absent (3.2).

        A bookmark the server no longer accepts (HTTP 400) restarts the list from its first page,
        once; callers drop the items they have already seen by id.
        """
        bookmark: str | None = None
        restarted = False
        seen: set[str] = set()
        pages = 0
        while True:
            params: dict[str, Any] = {"page_size": PAGE_SIZE}
            if bookmark:
                params["bookmark"] = bookmark
            try:
                document = self._get(path, params)
            except _BadBookmark as exc:
                if restarted:
                    raise SourceUnavailable(f"Pinterest rejected the page bookmark of {path} "
                                            f"twice: {exc}") from None
                self.warn(f"Pinterest rejected a page bookmark of {path} ({exc}); "
                          "listing it again from the start")
                restarted, bookmark, seen = True, None, set()
                continue
            items = document.get("items") if isinstance(document, dict) else None
            if not isinstance(items, list):
                raise SourceUnavailable(f"Pinterest's answer for {path} has no 'items' list")
            for item in items:
                if isinstance(item, dict):
                    yield item
            nxt = document.get("bookmark")
            if not isinstance(nxt, str) or not nxt:
                return
            pages += 1
            if nxt in seen or pages >= MAX_PAGES:
                raise SourceUnavailable(f"the pages of {path} loop (bookmark seen before)")
            seen.add(nxt)
            bookmark = nxt

    def verify(self) -> str | None:
        """One cheap call after sign-in: the owner of the first board (there is no account call
        without the user_accounts:read scope, which pixsrc does not ask for)."""
        document = self._get("/boards", {"page_size": 1})
        items = document.get("items") if isinstance(document, dict) else None
        if items and isinstance(items[0], dict) and isinstance(items[0].get("owner"), dict):
            name = items[0]["owner"].get("username")
            return name if isinstance(name, str) else None
        return None

    # -- listing ------------------------------------------------------------------------------------

    def _granted(self) -> set[str] | None:
        token_set = getattr(self.auth, "token_set", None)
        scope = getattr(token_set, "scope", None)
        return set(scope.replace(",", " ").split()) if isinstance(scope, str) else None

    def _boards(self) -> list[dict[str, Any]]:
        boards: dict[str, dict[str, Any]] = {}
        for board in self._items("/boards"):
            if isinstance(board.get("id"), str):
                boards.setdefault(board["id"], board)
        listed = list(boards.values())
        visible = [b for b in listed if self.config.include_secret or b.get("privacy") != "SECRET"]
        wanted = self.config.board.strip()
        if not wanted:
            return visible
        chosen = [b for b in listed if b["id"] == wanted]
        if not chosen:
            chosen = [b for b in listed if b.get("name") == wanted]
        if not chosen:
            folded = wanted.casefold()
            chosen = [b for b in listed if isinstance(b.get("name"), str) and b["name"].casefold() == folded]
        if len(chosen) > 1:
            ids = ", ".join(b["id"] for b in chosen)
            raise SourceUnavailable(f"several boards are named {wanted!r} (ids {ids})",
                                    hint=f"set the board's id: pixsrc edit {self.source_id} --set board=ID")
        if not chosen:
            names = ", ".join(repr(b.get("name")) for b in visible[:10])
            secret_note = ("" if self.config.include_secret else
                           "; a secret board needs include_secret = true (and a new sign-in)")
            raise SourceUnavailable(f"no board {wanted!r} among {len(visible)} boards"
                                    + (f" ({names})" if names else "") + secret_note)
        if chosen[0].get("privacy") == "SECRET" and not self.config.include_secret:
            raise SourceUnavailable(f"board {wanted!r} is secret",
                                    hint=f"pixsrc edit {self.source_id} --set include_secret=true, then "
                                         f"pixsrc auth login {self.source_id}")
        return chosen

    def list_assets(self) -> Iterator[Asset]:
        granted = self._granted()
        if self.config.include_secret and granted is not None and not set(SECRET_SCOPES) <= granted:
            self.warn("include_secret is on, but the sign-in did not grant "
                      f"{' and '.join(SECRET_SCOPES)}: secret boards stay hidden until you sign in again "
                      f"(pixsrc auth login {self.source_id})")
        first_by_url: dict[str, str] = {}  # image URL path -> id of the first asset with it
        yielded: set[str] = set()
        self._unusable = 0
        for board in self._boards():
            yield from self._board_assets(board, first_by_url, yielded)
        if self._unusable:
            self.warn(f"{self._unusable} pin(s) had no image URL in Pinterest's answer; skipped")

    def _board_assets(self, board: dict[str, Any], first_by_url: dict[str, str],
                      yielded: set[str]) -> Iterator[Asset]:
        bid = board["id"]
        folder = _folder(board.get("name"), f"board-{bid}")
        seen: set[str] = set()  # pin ids listed in this board (a section's pins may come back at the top)
        sections: dict[str, str] = {}
        if self.config.include_sections:
            for section in self._items(f"/boards/{bid}/sections"):
                sid = section.get("id")
                if isinstance(sid, str) and sid not in sections:
                    sections[sid] = _folder(section.get("name"), f"section-{sid}")
            for sid, name in sections.items():
                for pin in self._items(f"/boards/{bid}/sections/{sid}/pins"):
                    yield from self._pin_assets(pin, f"{folder}/{name}", bid, seen, first_by_url, yielded)
        for pin in self._items(f"/boards/{bid}/pins"):
            sid = pin.get("board_section_id")
            if isinstance(sid, str) and sid:
                if not self.config.include_sections:
                    continue  # include_sections = false: only the pins outside sections
                where = f"{folder}/{sections[sid]}" if sid in sections else folder
            else:
                where = folder
            yield from self._pin_assets(pin, where, bid, seen, first_by_url, yielded)

    def _pick(self, images: Any) -> str | None:
        if not isinstance(images, dict):
            return None
        for size in self.sizes:
            detail = images.get(size)
            if isinstance(detail, dict) and (url := _url(detail.get("url"))):
                return url
        return None

    def _media_urls(self, media: Any) -> list[tuple[int | None, str | None]]:
        """(item number or None for a single-image pin, chosen URL or None) per downloadable image."""
        if not isinstance(media, dict):
            return [(None, None)]
        kind = media.get("media_type")
        if kind == "image":
            return [(None, self._pick(media.get("images")))]
        if kind == "video":
            if not self.config.video_covers:
                return []
            return [(None, self._pick(media.get("images")) or _url(media.get("cover_image_url")))]
        if kind in ("multiple_images", "multiple_videos", "multiple_mixed"):
            out: list[tuple[int | None, str | None]] = []
            items = media.get("items")
            # numbered over all items, videos included: an item's id does not move with video_covers
            for number, item in enumerate(items if isinstance(items, list) else [], 1):
                if not isinstance(item, dict):
                    continue
                if "images" in item:  # ImageMetadata
                    out.append((number, self._pick(item.get("images"))))
                elif self.config.video_covers:  # VideoMetadataWithItemType
                    out.append((number, _url(item.get("cover_image_url"))))
            return out
        return [(None, None)]

    def _pin_assets(self, pin: dict[str, Any], folder: str, board_id: str, seen: set[str],
                    first_by_url: dict[str, str], yielded: set[str]) -> Iterator[Asset]:
        pid = pin.get("id")
        if not isinstance(pid, str) or not pid or pid in seen:
            return
        seen.add(pid)
        modified = parse_time(pin.get("created_at"))
        for number, url in self._media_urls(pin.get("media")):
            if url is None:
                self._unusable += 1
                continue
            base = pid if number is None else f"{pid}-{number}"
            asset_id = base if base not in yielded else f"{base}@{board_id}"  # the same pin on two boards
            yielded.add(asset_id)
            url_path = urlsplit(url).path
            ext = posixpath.splitext(url_path)[1].lower()
            ext = ext if ext in IMAGE_EXTENSIONS else ".jpg"
            path = f"{folder}/{base}{ext}"
            first = first_by_url.setdefault(url_path, asset_id)
            yield Asset(id=asset_id, path=path, version=f"url:{url_path}", modified=modified,
                        media_type=media_type(path), same_as=first if first != asset_id else None, ref=url)

    # -- content ------------------------------------------------------------------------------------

    def transfer(self, asset: Asset) -> Transfer:
        url = asset.ref
        if not isinstance(url, str) or _url(url) is None:
            raise AssetError(f"{asset.path}: not an asset of this source")
        # the CDN gets no token (auth=None); it serves byte ranges of content-addressed files
        return Transfer(url=url, auth=None, resumable=True, on_error=_media_error, rate_limited=False)

    def close(self) -> None:
        self.api.close()


def _media_error(status: int, headers: Mapping[str, str], body: bytes) -> TransferError | None:
    if status in (403, 404, 410):
        return TransferError(f"HTTP {status} from the image host; the pin's image moved or was removed "
                             "(the next fetch lists its current URL)")
    return None  # the engine's default: 408/429/5xx retried, anything else fails this image


SOURCE_TYPE = SourceType(
    id="pinterest",
    name="Pinterest",
    category="social",
    description="The images of your Pinterest boards (and their sections), one folder per board.",
    config_model=PinterestConfig,
    factory=PinterestController,
    auth=AuthSpec(kind="oauth2", provider="pinterest", scopes=BASE_SCOPES, oauth=PROVIDER,
                  scopes_for=scopes_for),
)
