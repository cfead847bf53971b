"""Fake Pinterest API v5 + Pinterest OAuth on one 127.0.0.1 server (test code only).

Paths mirror the real hosts (providers.md §3.1, §3.2; ``specs/pinterest/openapi.json``):

* ``/oauth/`` (www.pinterest.com authorize), ``/v5/oauth/token``, ``/v5/oauth/token/revoke``
* ``/v5/boards``, ``/v5/boards/{board_id}/pins``, ``/v5/boards/{board_id}/sections``,
  ``/v5/boards/{board_id}/sections/{section_id}/pins`` (api.pinterest.com)
* ``/media/{size}/{key}.jpg``: the image bytes the pins' ``media`` URLs point to (i.pinimg.com)

Every ``/v5`` request is validated against the official OpenAPI file with openapi-core; problems land
in ``violations``.

    with PinterestFake() as pin:
        board = pin.add_board("Cats")
        pin.add_pin(board, image=b"...jpeg...")
        token = pin.issue_token()
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

SIZES = {
    "150x150": (150, 150),
    "400x300": (400, 300),
    "600x": (600, None),
    "1200x": (1200, None),
}  # ImageSize
REFRESH_TTL = 60 * 24 * 3600  # "continuous refresh token (60-day expiration ...)" (/oauth/token description)
READ_SCOPES = ["boards:read", "pins:read", "user_accounts:read"]


def pinterest_error(status: int, message: str, code: int | None = None) -> Response:
    """``Error``: {"code": <int>, "message": "<str>"} (providers.md §3.2). No Retry-After on 429 (§3.3)."""
    return json_response(status, {"code": status if code is None else code, "message": message})


def _ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _digits() -> str:
    return str(secrets.randbelow(9 * 10**17) + 10**17)  # ids are digit strings, pattern ^\d+$


@dataclass
class Board:
    id: str
    name: str
    privacy: str = "PUBLIC"  # BoardPrivacy: PUBLIC | PROTECTED | SECRET
    description: str | None = None
    created_at: str = field(default_factory=_ts)
    sections: dict[str, str] = field(default_factory=dict)  # section id -> name


@dataclass
class Pin:
    id: str
    board_id: str
    media: dict[str, Any]
    section_id: str | None = None
    title: str | None = None
    description: str | None = None
    link: str | None = None
    alt_text: str | None = None
    created_at: str = field(default_factory=_ts)
    creative_type: str = "REGULAR"


class PinterestOAuth(OAuthServer):
    """providers.md §3.1: HTTP Basic client auth required, comma-separated scopes, refresh tokens rotate
    on every refresh (continuous, 60 days), ~30 d access tokens. PKCE is not documented by Pinterest;
    if a client sends a code_challenge anyway, the base class still checks the verifier."""

    token_prefix = "pina"

    def __init__(self) -> None:
        super().__init__(
            client_id="1234567",
            client_secret="fake-pinterest-secret",
            client_auth="basic",
            access_token_ttl=2592000,
            rotate_refresh_tokens=True,
            scope_separator=",",
        )
        self.revoke_user_tokens = False  # /oauth/token/revoke: "Only tokens issued for system users ..."

    def token_extra(self, grant: Grant, grant_type: str, payload: dict[str, Any]) -> None:
        payload["token_type"] = "bearer"
        payload["response_type"] = grant_type  # OauthAccessTokenResponse discriminator
        if "refresh_token" in payload:  # OauthAccessTokenResponseRefresh requires these three
            payload["refresh_token_expires_in"] = REFRESH_TTL
            payload["refresh_token_expires_at"] = int(self.now()) + REFRESH_TTL

    def error(self, status: int, error: str, description: str) -> Response:
        # the spec's default response for /oauth/token is Error; the exact codes are not documented
        return pinterest_error(status, f"{error}: {description}", code=2 if status == 401 else 1)

    def bad_redirect(self, redirect_uri: str | None) -> Response:  # pinterest-api-demo#15
        return json_response(
            400,
            {
                "status": "failure",
                "code": 7,
                "message": "You are not permitted to access that resource.",
                "data": f"The provided redirect_uri {redirect_uri} does not match any of the "
                "registered redirect URIs.",
            },
        )

    def unauthorized(self, kind: str, required_scopes: list[str]) -> Response:
        if kind == "scope":  # 403 example in the spec
            return pinterest_error(403, "You are not permitted to access that resource.", code=29)
        return pinterest_error(401, "Authentication failed.", code=2)  # 401 example in the spec


class PinterestFake(OneServerFake):
    """Attributes: ``server`` (FakeServer), ``oauth`` (PinterestOAuth), ``boards`` (id -> Board),
    ``pins`` (list of Pin, newest first as Pinterest lists them), ``media`` (url path -> bytes),
    ``violations``, ``requests``, ``username``."""

    def __init__(self, *, validate: bool = True):
        validator = (
            SpecValidator.load(spec_path("pinterest", "openapi.json"), "https://api.pinterest.com")
            if validate
            else None
        )
        self.server = FakeServer("pinterest", validator)
        self.oauth = PinterestOAuth()
        self.boards: dict[str, Board] = {}
        self.pins: list[Pin] = []
        self.media: dict[str, bytes] = {}
        self.username = "fakeuser"
        s = self.server
        s.not_found = lambda req: pinterest_error(404, "Not found.")  # type: ignore[method-assign]
        s.route("GET", r"/oauth/?", self.oauth.authorize, validate=False)
        s.route("POST", r"/v5/oauth/token", self.oauth.token)
        s.route("POST", r"/v5/oauth/token/revoke", self._revoke)
        s.route("GET", r"/v5/boards", self._boards)
        s.route("GET", r"/v5/boards/(?P<bid>[^/]+)/pins", self._board_pins)
        s.route("GET", r"/v5/boards/(?P<bid>[^/]+)/sections", self._sections)
        s.route("GET", r"/v5/boards/(?P<bid>[^/]+)/sections/(?P<sid>[^/]+)/pins", self._section_pins)
        s.route("GET", r"/media/(?P<key>.+)", self._media, validate=False)
        s.route("HEAD", r"/media/(?P<key>.+)", self._media, validate=False)

    # -- lifecycle / delegation ----------------------------------------------------------------------

    def __enter__(self) -> PinterestFake:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    start = __enter__

    def stop(self) -> None:
        self.server.stop()

    base_url = property(lambda self: self.server.base_url)
    api_url = property(lambda self: self.server.base_url + "/v5")  # https://api.pinterest.com/v5
    authorize_url = property(lambda self: self.server.base_url + "/oauth/")
    token_url = property(lambda self: self.server.base_url + "/v5/oauth/token")
    revoke_url = property(lambda self: self.server.base_url + "/v5/oauth/token/revoke")

    def fail_next_error(
        self,
        status: int,
        message: str = "Error",
        code: int | None = None,
        *,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """One-shot ``{"code", "message"}`` error; for 429 there is deliberately no Retry-After (§3.3)."""
        r = pinterest_error(status, message, code)
        self.server.fail_next(status, r.body, r.headers, times=times, path=path)

    def fail_next_rate_limit(self, *, times: int = 1, path: str | None = None) -> None:
        self.fail_next_error(
            429, "Rate limit exceeded. Please wait a minute and try again.", 8, times=times, path=path
        )

    def issue_token(self, scopes: list[str] | None = None) -> str:
        return self.oauth.issue_tokens(scopes or READ_SCOPES)["access_token"]

    # -- builder -------------------------------------------------------------------------------------

    def add_board(self, name: str, privacy: str = "PUBLIC", description: str | None = None) -> str:
        b = Board(_digits(), name, privacy, description)
        self.boards[b.id] = b
        return b.id

    def add_section(self, board_id: str, name: str) -> str:
        sid = _digits()
        self.boards[board_id].sections[sid] = name
        return sid

    def _image_set(self, data: bytes, width: int, height: int, sizes: list[str] | None) -> dict[str, Any]:
        """An ``ImageSize`` dict; each listed size is served (same bytes) at /media/<size>/<md5>.jpg."""
        key = hashlib.md5(data).hexdigest()
        out = {}
        for size in sizes or list(SIZES):
            w, h = SIZES[size]
            h = h if h is not None else round(height * w / width)
            path = f"/media/{size}/{key[:2]}/{key[2:4]}/{key}.jpg"  # i.pinimg.com/<size>/ab/cd/<hash>.jpg
            self.media[path] = data
            out[size] = {"url": self.base_url + path, "width": w, "height": h}
        return out

    def add_pin(
        self,
        board_id: str,
        *,
        image: bytes | None = None,
        images: list[bytes] | None = None,
        video_cover: bytes | None = None,
        section_id: str | None = None,
        width: int = 1200,
        height: int = 900,
        sizes: list[str] | None = None,
        **fields: Any,
    ) -> str:
        """Add a pin (start the server first: media URLs embed its address). Exactly one of
        ``image`` (media_type ``image``), ``images`` (``multiple_images``), ``video_cover`` (``video``).
        ``sizes`` limits the ImageSize keys; ``fields``: title, description, link, alt_text."""
        assert sum(x is not None for x in (image, images, video_cover)) == 1
        media: dict[str, Any]
        creative = "REGULAR"
        if image is not None:  # PinMediaWithImage
            media = {"media_type": "image", "images": self._image_set(image, width, height, sizes)}
        elif images is not None:  # PinMediaWithImages: items[] of ImageMetadata
            creative = "CAROUSEL"
            media = {
                "media_type": "multiple_images",
                "items": [
                    {
                        "item_type": "image",
                        "images": self._image_set(d, width, height, sizes),
                        "title": None,
                        "description": None,
                        "link": None,
                    }
                    for d in images
                ],
            }
        else:  # PinMediaWithVideo
            assert video_cover is not None
            creative = "VIDEO"
            imgs = self._image_set(video_cover, width, height, sizes)
            media = {
                "media_type": "video",
                "cover_image_url": imgs[next(iter(imgs))]["url"],
                "images": imgs,
                "video_url": None,
                "duration": 12000.0,
                "width": width,
                "height": height,
            }
        pin = Pin(_digits(), board_id, media, section_id, creative_type=creative, **fields)
        self.pins.insert(0, pin)
        return pin.id

    # -- helpers -------------------------------------------------------------------------------------

    def _board_json(self, b: Board) -> dict[str, Any]:
        pins = [p for p in self.pins if p.board_id == b.id]
        return {
            "id": b.id,
            "name": b.name,
            "description": b.description,
            "privacy": b.privacy,
            "owner": {"username": self.username},
            "created_at": b.created_at,
            "board_pins_modified_at": pins[0].created_at if pins else b.created_at,
            "pin_count": len(pins),
            "follower_count": 0,
            "collaborator_count": 0,
            "media": {"image_cover_url": None, "pin_thumbnail_urls": []},
        }

    def _pin_json(self, p: Pin) -> dict[str, Any]:
        """Pin schema (components.schemas.Pin)."""
        return {
            "id": p.id,
            "created_at": p.created_at,
            "link": p.link,
            "title": p.title,
            "description": p.description,
            "dominant_color": "#6E7874",
            "alt_text": p.alt_text,
            "creative_type": p.creative_type,
            "board_id": p.board_id,
            "board_section_id": p.section_id,
            "board_owner": {"username": self.username},
            "is_owner": True,
            "media": p.media,
            "parent_pin_id": None,
            "is_standard": True,
            "has_been_promoted": False,
            "note": "",
            "pin_metrics": None,
        }

    def _paginate(self, req: Request, items: list[dict[str, Any]]) -> Response:
        """``bookmark`` paging, page_size 1..250 default 25 (Paginated schema)."""
        raw = req.arg("page_size", "25") or "25"
        if not raw.isdigit() or not 1 <= int(raw) <= 250:
            return pinterest_error(
                400, f"Invalid parameter: page_size must be between 1 and 250, got {raw}", 1
            )
        size = int(raw)
        sig = hashlib.sha1(req.path.encode()).hexdigest()[:8]
        start = 0
        if req.arg("bookmark"):
            try:
                off, got_sig = base64.urlsafe_b64decode(req.arg("bookmark") + "==").decode().split(":")
                start = int(off)
                assert got_sig == sig
            except (ValueError, AssertionError, UnicodeDecodeError):
                return pinterest_error(400, "Invalid bookmark.", 1)  # unverified wording
        page = items[start : start + size]
        more = start + size < len(items)
        bookmark = (
            base64.urlsafe_b64encode(f"{start + size}:{sig}".encode()).decode().rstrip("=") if more else None
        )
        return json_response(200, {"items": page, "bookmark": bookmark})

    def _board(self, req: Request, bid: str, pins: bool) -> Board:
        tok = self.oauth.check_bearer(req, ["boards:read", "pins:read"] if pins else ["boards:read"])
        b = self.boards.get(bid)
        secret_ok = "boards:read_secret" in tok.grant.scopes and (
            not pins or "pins:read_secret" in tok.grant.scopes
        )
        if b is None or (b.privacy == "SECRET" and not secret_ok):  # §3.1: secret needs the *_secret scopes
            raise Abort(pinterest_error(404, "Board not found."))
        return b

    # -- endpoints -----------------------------------------------------------------------------------

    def _revoke(self, req: Request) -> Response:
        bad = self.oauth._check_client(req, req.form(), pkce=False)
        if bad:
            return bad
        if not self.revoke_user_tokens:  # 403 example of /oauth/token/revoke
            return pinterest_error(403, "You are not permitted to access that resource.", 29)
        self.oauth.revoke(req.form().get("token", ""))
        return json_response(200, {})

    def _boards(self, req: Request) -> Response:
        """boards/list: ``privacy`` filter; SECRET boards only with boards:read_secret."""
        tok = self.oauth.check_bearer(req, ["boards:read"])
        secret_ok = "boards:read_secret" in tok.grant.scopes
        privacy = req.arg("privacy")
        allowed = {
            None: {"PUBLIC", "PROTECTED", "SECRET"},
            "ALL": {"PUBLIC", "PROTECTED", "SECRET"},
            "PUBLIC": {"PUBLIC"},
            "PROTECTED": {"PROTECTED"},
            "SECRET": {"SECRET"},
            "PUBLIC_AND_SECRET": {"PUBLIC", "SECRET"},
        }.get(privacy)
        if allowed is None:
            return pinterest_error(400, f"Invalid parameter: privacy {privacy!r}", 1)
        if not secret_ok:
            allowed = allowed - {"SECRET"}
        return self._paginate(
            req, [self._board_json(b) for b in self.boards.values() if b.privacy in allowed]
        )

    def _board_pins(self, req: Request, bid: str) -> Response:
        self._board(req, bid, pins=True)
        return self._paginate(req, [self._pin_json(p) for p in self.pins if p.board_id == bid])

    def _sections(self, req: Request, bid: str) -> Response:
        b = self._board(req, bid, pins=False)
        return self._paginate(req, [{"id": sid, "name": name} for sid, name in b.sections.items()])

    def _section_pins(self, req: Request, bid: str, sid: str) -> Response:
        try:
            b = self._board(req, bid, pins=True)
        except Abort as exc:
            if exc.response.status == 404:
                return pinterest_error(404, "Board or section not found.")
            raise
        if sid not in b.sections:
            return pinterest_error(404, "Board or section not found.")
        return self._paginate(
            req, [self._pin_json(p) for p in self.pins if p.board_id == bid and p.section_id == sid]
        )

    def _media(self, req: Request, key: str) -> Response:
        """Image bytes (CDN: no auth)."""
        data = self.media.get(req.path)
        if data is None:
            return Response(404, b"", {"Content-Type": "text/html"})
        return serve_bytes(
            req,
            data,
            {
                "Content-Type": "image/jpeg",
                "Cache-Control": "max-age=31536000",
                "ETag": f'"{hashlib.md5(data).hexdigest()}"',
                "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
            },
        )
