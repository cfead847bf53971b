"""pinterest end to end: the real CLI (and the controller) against the Pinterest fake on 127.0.0.1.

The fake (tests/fakes/pinterest.py) validates every /v5 request against the official OpenAPI file;
each test asserts that ``violations`` stays empty.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from fakes.pinterest import PinterestFake
from support.cli import run, run_subprocess
from support.controllers import FastContext

from pixsrc import oauth, tokens
from pixsrc.api import RetryPolicy
from pixsrc.errors import AssetError, SourceUnavailable
from pixsrc.sources import pinterest
from pixsrc.state import State
from pixsrc.sync import Options, SyncRun
from pixsrc.testing import check_controller
from pixsrc.types import Asset, Transfer

FAKE_BROWSER = Path(__file__).resolve().parents[1] / "support" / "fake_browser.py"
SID = "pins"


def jpeg(tag: str, size: int = 3000) -> bytes:
    body = (tag.encode() * (size // max(1, len(tag)) + 1))[:size]
    return b"\xff\xd8\xff\xe0" + body + b"\xff\xd9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(folder: Path) -> dict[str, bytes]:
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


@pytest.fixture
def pin() -> Iterator[PinterestFake]:
    with PinterestFake() as fake:
        yield fake


@dataclasses.dataclass(frozen=True)
class RecordingPolicy(RetryPolicy):
    """The Api's retry policy with instant waits; ``attempts`` records each backoff's attempt number."""

    attempts: list[int] = dataclasses.field(default_factory=list)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        self.attempts.append(attempt)
        return 0.0


def write_config(config_file: Path, fake: PinterestFake, port: int | None = None) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "[providers.pinterest]",
        f'client_id = "{fake.oauth.client_id}"',
        f'authorize_url = "{fake.authorize_url}"',
        f'token_url = "{fake.token_url}"',
        f'revoke_url = "{fake.revoke_url}"',
        f'api_base_url = "{fake.base_url}"',
    ]
    if port is not None:
        lines.append(f"redirect_port = {port}")
    config_file.write_text("\n".join(lines) + "\n")


def add_source(*sets: str) -> None:
    args = ["add", "pinterest", "--id", SID, "--name", "My pins"]
    for item in sets:
        args += ["--set", item]
    result = run(*args, "--no-input")
    assert result.exit_code == 0, result.stderr


def sign_in_directly(fake: PinterestFake, scopes: list[str] | None = None) -> dict[str, Any]:
    """Skip the browser: a grant from the fake, stored the way `pixsrc auth login` stores it."""
    answer = fake.oauth.issue_tokens(scopes or ["boards:read", "pins:read"])
    tokens.put(SID, oauth._token_set("pinterest", answer).to_json())
    return answer


def stored() -> oauth.TokenSet:
    credential = tokens.get(SID)
    assert credential is not None
    return oauth.TokenSet.parse(credential.value)


def fetch(dest: Path, *args: str, code: int = 0) -> dict[str, Any]:
    result = run("fetch", SID, "--dest", str(dest), "--json", *args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    (report,) = json.loads(result.stdout)["sources"]
    return report


def listing(code: int = 0) -> list[dict[str, Any]]:
    result = run("fetch", SID, "--list", "--json")
    assert result.exit_code == code, (result.stdout, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()]


def api_requests(fake: PinterestFake) -> list[Any]:
    return [r for r in fake.requests if r.path.startswith("/v5/") and not r.path.startswith("/v5/oauth/")]


def media_gets(fake: PinterestFake) -> list[Any]:
    return fake.server.requests_to("/media/*", "GET")


def basic_user(request: Any) -> str:
    return base64.b64decode(request.headers["authorization"].split()[1]).decode().partition(":")[0]


class Library:
    """A small Pinterest account: what the local tree must look like after a fetch."""

    def __init__(self, fake: PinterestFake) -> None:
        self.cats = fake.add_board("Cats")
        self.dogs = fake.add_board("Dogs / Puppies")  # a '/' in a name must not make a folder
        self.secret = fake.add_board("Hidden", privacy="SECRET")
        self.kittens = fake.add_section(self.cats, "Kittens")
        self.tabby, self.shared = jpeg("tabby"), jpeg("shared by two boards", 5000)
        self.one, self.two = jpeg("carousel one"), jpeg("carousel two")
        self.cover, self.kit = jpeg("cover"), jpeg("kit")
        self.p_tabby = fake.add_pin(self.cats, image=self.tabby, title="tabby")
        self.p_shared = fake.add_pin(self.cats, image=self.shared)
        self.p_carousel = fake.add_pin(self.cats, images=[self.one, self.two])
        self.p_video = fake.add_pin(self.cats, video_cover=self.cover)
        self.p_kitten = fake.add_pin(self.cats, image=self.kit, section_id=self.kittens)
        self.p_repin = fake.add_pin(self.dogs, image=self.shared)  # the same image, saved on another board
        self.p_hidden = fake.add_pin(self.secret, image=jpeg("secret"))
        # a pin with only the small renditions: the preferred 1200x falls back to 600x
        self.small = jpeg("small only")
        self.p_small = fake.add_pin(self.dogs, image=self.small, sizes=["600x", "150x150"])

    def expected(self) -> dict[str, bytes]:
        return {
            f"Cats/{self.p_tabby}.jpg": self.tabby,
            f"Cats/{self.p_shared}.jpg": self.shared,
            f"Cats/{self.p_carousel}-1.jpg": self.one,
            f"Cats/{self.p_carousel}-2.jpg": self.two,
            f"Cats/{self.p_video}.jpg": self.cover,
            f"Cats/Kittens/{self.p_kitten}.jpg": self.kit,
            f"Dogs _ Puppies/{self.p_repin}.jpg": self.shared,
            f"Dogs _ Puppies/{self.p_small}.jpg": self.small,
        }


# -- the whole flow through the pixsrc command ------------------------------------------------------


def test_end_to_end_login_list_fetch_refresh_status_logout(
        pin: PinterestFake, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = Library(pin)
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/callback"
    pin.oauth.redirect_uris = [redirect]  # registered exactly, port included (providers.md 3.1)
    write_config(config_file, pin, port)
    add_source()

    # sign in: a real subprocess, whose "browser" follows the fake's redirect to the loopback listener
    monkeypatch.setenv("PIXSRC_PINTEREST_CLIENT_SECRET", pin.oauth.client_secret)
    login = run_subprocess("auth", "login", SID, "--timeout", "30", env={"BROWSER": str(FAKE_BROWSER)})
    assert login.returncode == 0, login.stderr
    assert "checked: the credential works (fakeuser)" in login.stderr + login.stdout
    (authorize,) = [r for r in pin.requests if r.path == "/oauth/"]
    q = {k: v[0] for k, v in authorize.query.items()}
    assert q["scope"] == "boards:read,pins:read" and q["redirect_uri"] == redirect
    assert "code_challenge" not in q and q["response_type"] == "code"
    (exchange,) = pin.server.requests_to("/v5/oauth/token", "POST")
    form = parse_qs(exchange.body.decode())
    assert basic_user(exchange) == pin.oauth.client_id
    assert "client_secret" not in form and "code_verifier" not in form and form["redirect_uri"] == [redirect]
    first = stored()
    assert first.refresh_token == pin.oauth.grants[-1].refresh_token
    assert first.scope == "boards:read,pins:read"
    text = config_file.read_text()
    assert first.access_token not in text and first.refresh_token not in text
    assert pin.oauth.client_secret not in text

    rows = listing()
    assert {r["path"]: r["id"] for r in rows} == {
        path: path.rsplit("/", 1)[1].removesuffix(".jpg") for path in lib.expected()
    }
    assert all(r["size"] is None and r["media_type"] == "image/jpeg" for r in rows)
    assert all(r["version"].startswith("url:/media/") for r in rows)
    small = next(r for r in rows if r["id"] == lib.p_small)
    assert small["version"].startswith("url:/media/600x/")  # fell back from 1200x
    assert all("/media/1200x/" in r["version"] for r in rows if r["id"] != lib.p_small)

    dest = tmp_path / "dest"
    pin.server.requests.clear()
    report = fetch(dest)
    assert tree(dest) == lib.expected()
    assert (report["status"], report["listed"], report["downloaded"], report["failed"]) == ("ok", 8, 8, 0)
    # the image shared by two boards came over the wire once; the second file is a local copy
    gets = media_gets(pin)
    assert len(gets) == 7 and len({g.path for g in gets}) == 7
    assert report["bytes"] == sum(len(v) for v in lib.expected().values()) - len(lib.shared)
    # the CDN never sees the token; the API always does
    assert all("authorization" not in g.headers for g in gets)
    assert all(r.headers["authorization"].startswith("Bearer pina-") for r in api_requests(pin))
    assert {r.path for r in api_requests(pin)} == {
        "/v5/boards", f"/v5/boards/{lib.cats}/sections", f"/v5/boards/{lib.dogs}/sections",
        f"/v5/boards/{lib.cats}/sections/{lib.kittens}/pins", f"/v5/boards/{lib.cats}/pins",
        f"/v5/boards/{lib.dogs}/pins"}
    assert all(r.query["page_size"] == ["250"] for r in api_requests(pin))
    assert len(api_requests(pin)) == 6

    # access token expired at the fake: 401, refresh (rotating), retry; twice in a row
    old_refresh = [first.refresh_token]
    for n in (1, 2):
        pin.oauth.expire_access_tokens()
        pin.server.requests.clear()
        again = fetch(dest)
        assert (again["unchanged"], again["downloaded"], again["bytes"]) == (8, 0, 0)
        assert media_gets(pin) == []
        assert pin.oauth.refresh_count == n
        now = stored()
        assert now.refresh_token == pin.oauth.grants[-1].refresh_token  # always the newest
        assert now.refresh_token not in old_refresh
        (refresh,) = pin.server.requests_to("/v5/oauth/token", "POST")
        assert basic_user(refresh) == pin.oauth.client_id
        assert parse_qs(refresh.body.decode())["continuous_refresh"] == ["true"]
        for old in old_refresh:  # every earlier refresh token is dead at the fake
            replay = httpx.post(pin.token_url, data={"grant_type": "refresh_token", "refresh_token": old},
                                auth=(pin.oauth.client_id, pin.oauth.client_secret))
            assert replay.status_code == 400
        old_refresh.append(now.refresh_token)

    status = run("auth", "status", SID, "--json")
    assert status.exit_code == 0
    (row,) = json.loads(status.stdout)
    assert row["status"] == "ok" and row["scopes"] == ["boards:read", "pins:read"]
    assert row["limit"] == "continuous refresh token: 60 days, renewed on every refresh"
    assert row["stored_in"].startswith("keyring")

    pin.server.requests.clear()
    out = run("auth", "logout", SID)
    assert out.exit_code == 0
    assert "Pinterest offers no revocation for user tokens" in out.stderr + out.stdout
    assert pin.server.requests_to("/v5/oauth/token/revoke") == []
    assert tokens.get(SID) is None
    assert pin.violations == []


def test_secret_boards_need_the_secret_scopes_at_login(pin: PinterestFake, config_file: Path) -> None:
    lib = Library(pin)
    write_config(config_file, pin, free_port())
    add_source("include_secret=true", f"board={lib.secret}")
    secret_env = {"PIXSRC_PINTEREST_CLIENT_SECRET": pin.oauth.client_secret, "BROWSER": str(FAKE_BROWSER)}
    login = run_subprocess("auth", "login", SID, "--timeout", "30", env=secret_env)
    assert login.returncode == 0, login.stderr
    (authorize,) = [r for r in pin.requests if r.path == "/oauth/"]
    assert authorize.query["scope"] == ["boards:read,pins:read,boards:read_secret,pins:read_secret"]
    rows = listing()
    assert [r["path"] for r in rows] == [f"Hidden/{lib.p_hidden}.jpg"]
    assert pin.violations == []


# -- listing details, against the controller ---------------------------------------------------------


class StaticAuth:
    def __init__(self, token: str, scope: str = "boards:read,pins:read") -> None:
        self.token = token
        self.token_set = oauth.TokenSet("pinterest", token, None, None, scope)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def unauthorized(self, sent: Any) -> None:
        pass


def controller(fake: PinterestFake, scopes: list[str] | None = None, warnings: list[str] | None = None,
               policy: RetryPolicy | None = None, **config: Any) -> pinterest.PinterestController:
    scopes = scopes or ["boards:read", "pins:read"]
    settings = oauth.settings_for(pinterest.PROVIDER, {"pinterest": {"api_base_url": fake.base_url}})
    model = pinterest.SOURCE_TYPE.validate(config, "sources.t.config")
    context = FastContext("t", "t", model, auth=StaticAuth(fake.issue_token(scopes), ",".join(scopes)),
                          provider=settings, warn=(warnings.append if warnings is not None else lambda m: None),
                          policy=policy or RecordingPolicy(), api_limit=None)
    return pinterest.PinterestController(context)


def test_controller_contract(pin: PinterestFake) -> None:
    lib = Library(pin)

    def mutate() -> None:  # the tabby pin's image is replaced: new bytes, new URL
        target = next(p for p in pin.pins if p.id == lib.p_tabby)
        target.media = {"media_type": "image", "images": pin._image_set(jpeg("new tabby"), 1200, 900, None)}

    report = check_controller(lambda: controller(pin), mutate=mutate, min_assets=8)
    assert (report.assets, report.mutated) == (8, 1)
    assert pin.violations == []


def test_options_board_by_name_sections_off_sizes_and_video_covers(pin: PinterestFake) -> None:
    lib = Library(pin)
    c = controller(pin, board="cats", include_sections=False, image_size="400x300", video_covers=False)
    assets = list(c.list_assets())
    assert {a.path for a in assets} == {
        f"Cats/{lib.p_tabby}.jpg", f"Cats/{lib.p_shared}.jpg", f"Cats/{lib.p_carousel}-1.jpg",
        f"Cats/{lib.p_carousel}-2.jpg"}  # no section pin, no video cover, no other board
    assert all("/media/400x300/" in a.ref for a in assets)
    assert not [r for r in pin.requests if "/sections" in r.path]
    assert [r.path for r in api_requests(pin)] == ["/v5/boards", f"/v5/boards/{lib.cats}/pins"]
    # by id; 150x150 preferred
    by_id = controller(pin, board=lib.dogs, image_size="150x150")
    assert {a.ref.split("/")[4] for a in by_id.list_assets()} == {"150x150"}
    # a pin without the preferred size: the next smaller, then the next larger
    mid = controller(pin, board="Dogs / Puppies", image_size="400x300")
    small = next(a for a in mid.list_assets() if a.id == lib.p_small)
    assert "/media/150x150/" in small.ref
    assert pin.violations == []


def test_one_pin_id_on_two_boards_is_listed_in_both_folders(pin: PinterestFake) -> None:
    """Pin.board_id is a single board, so this should not happen; if the API ever does it, the second
    listing gets its own id (the engine keeps one asset per id) and reuses the first one's bytes."""
    import dataclasses

    a, b = pin.add_board("A"), pin.add_board("B")
    pid = pin.add_pin(a, image=jpeg("both"))
    pin.pins.append(dataclasses.replace(pin.pins[0], board_id=b))
    assets = {x.id: x for x in controller(pin).list_assets()}
    assert set(assets) == {pid, f"{pid}@{b}"}
    assert (assets[pid].path, assets[f"{pid}@{b}"].path) == (f"A/{pid}.jpg", f"B/{pid}.jpg")
    assert (assets[pid].same_as, assets[f"{pid}@{b}"].same_as) == (None, pid)
    assert pin.violations == []


def test_unknown_and_secret_board_names_fail_clearly(pin: PinterestFake) -> None:
    Library(pin)
    from pixsrc.errors import SourceUnavailable

    with pytest.raises(SourceUnavailable, match="no board 'Birds' among 2 boards"):
        list(controller(pin, board="Birds").list_assets())
    # the token has the secret scopes, the config does not opt in: the board stays out
    scopes = ["boards:read", "pins:read", "boards:read_secret", "pins:read_secret"]
    with pytest.raises(SourceUnavailable, match="board 'Hidden' is secret"):
        list(controller(pin, scopes, board="Hidden").list_assets())
    assert all(not a.path.startswith("Hidden/") for a in controller(pin, scopes).list_assets())
    warnings: list[str] = []
    listed = list(controller(pin, warnings=warnings, include_secret=True).list_assets())
    assert all(not a.path.startswith("Hidden/") for a in listed)
    assert any("did not grant boards:read_secret and pins:read_secret" in w for w in warnings)


def test_paging_and_a_bookmark_that_became_invalid(pin: PinterestFake) -> None:
    board = pin.add_board("Many")
    ids = [pin.add_pin(board, image=jpeg(f"img {i}", 50), sizes=["1200x"]) for i in range(520)]
    pin.server.fail_next(400, {"code": 1, "message": "Invalid bookmark."}, path=f"/v5/boards/{board}/pins",
                         when=lambda r: "bookmark" in r.query and r.arg("bookmark") != "")
    warnings: list[str] = []
    assets = list(controller(pin, warnings=warnings).list_assets())
    assert sorted(a.id for a in assets) == sorted(ids)  # 520 pins, none twice after the restart
    calls = pin.server.requests_to(f"/v5/boards/{board}/pins")
    # page 1, page 2 refused, then pages 1-3 again
    assert [("bookmark" in r.query) for r in calls] == [False, True, False, True, True]
    assert any("rejected a page bookmark" in w for w in warnings)
    assert pin.violations == []


def test_five_hundred_and_rate_limit_are_retried_with_backoff(pin: PinterestFake) -> None:
    lib = Library(pin)
    pin.fail_next_error(503, "Service unavailable", path="/v5/boards")
    pin.fail_next_rate_limit(times=2, path=f"/v5/boards/{lib.cats}/pins")
    policy = RecordingPolicy()
    assets = list(controller(pin, policy=policy).list_assets())
    assert len(assets) == 8
    assert len(pin.server.requests_to("/v5/boards")) == 2
    assert len(pin.server.requests_to(f"/v5/boards/{lib.cats}/pins")) == 3
    assert policy.attempts == [0, 0, 1]  # no Retry-After: exponential backoff, attempt 0 then 1 for the 429s
    assert pin.violations == []


def test_a_rate_limit_that_does_not_end_is_unavailable(pin: PinterestFake) -> None:
    Library(pin)
    pin.fail_next_rate_limit(times=5, path="/v5/boards")
    policy = RecordingPolicy(retries=4)
    with pytest.raises(SourceUnavailable) as failed:
        list(controller(pin, policy=policy).list_assets())
    assert "Pinterest's rate limit: Rate limit exceeded" in failed.value.message
    assert "(code 8)" in failed.value.message and "1,000 requests a day" in (failed.value.hint or "")
    assert len(pin.server.requests_to("/v5/boards")) == 5  # 1 + 4 retries
    assert policy.attempts[:4] == [0, 1, 2, 3]  # (tenacity asks for a 5th wait before it gives up)
    assert pin.violations == []


def test_a_dead_grant_is_exit_3(pin: PinterestFake, config_file: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    Library(pin)
    write_config(config_file, pin)
    monkeypatch.setenv("PIXSRC_PINTEREST_CLIENT_SECRET", pin.oauth.client_secret)
    add_source()
    answer = sign_in_directly(pin)
    # the user disconnected the app: the refresh is refused -> exit 3 with the way out
    pin.oauth.revoke(answer["refresh_token"])
    pin.oauth.expire_access_tokens()
    result = run("fetch", SID, "--dest", str(tmp_path / "d"))
    assert result.exit_code == 3, result.stderr
    assert f"pixsrc auth login {SID}" in result.stderr
    assert "Traceback" not in result.stderr
    assert pin.violations == []


def test_token_expiring_mid_listing_refreshes_and_stores_the_rotated_token(
        pin: PinterestFake, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = pin.add_board("Many")
    for i in range(260):
        pin.add_pin(board, image=jpeg(f"p{i}", 40), sizes=["1200x"])
    write_config(config_file, pin)
    monkeypatch.setenv("PIXSRC_PINTEREST_CLIENT_SECRET", pin.oauth.client_secret)
    add_source()
    answer = sign_in_directly(pin)

    expired: list[str] = []

    def expire_on_page_two(request: Any) -> bool:
        if "bookmark" in request.query and not expired:
            expired.append(request.headers["authorization"])
            pin.oauth.expire_access_tokens()
        return False  # never answers itself: the real route sees the expired token

    pin.server.fail_next(500, when=expire_on_page_two)
    rows = listing()
    assert len(rows) == 260 and pin.oauth.refresh_count == 1
    page_two = [r for r in pin.server.requests_to(f"/v5/boards/{board}/pins") if "bookmark" in r.query]
    assert len(page_two) == 2 and page_two[0].headers["authorization"] != page_two[1].headers["authorization"]
    assert stored().refresh_token == pin.oauth.grants[-1].refresh_token != answer["refresh_token"]
    assert pin.violations == []


def _signed_in_with_a_big_pin(pin: PinterestFake, config_file: Path,
                              monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes]:
    """A source signed in to a fake with one board holding one 400 KB pin: (pin id, its image)."""
    board = pin.add_board("Big")
    data = jpeg("large image", 400_000)
    pid = pin.add_pin(board, image=data)
    write_config(config_file, pin)
    monkeypatch.setenv("PIXSRC_PINTEREST_CLIENT_SECRET", pin.oauth.client_secret)
    add_source()
    sign_in_directly(pin)
    return pid, data


def test_truncated_image_resumes_with_a_range_request(pin: PinterestFake, config_file: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pid, data = _signed_in_with_a_big_pin(pin, config_file, monkeypatch)
    pin.truncate_next(path="/media/1200x/*")
    pin.fail_next(502, b"bad gateway", path="/media/1200x/*", when=lambda r: "range" in r.headers)
    report = fetch(tmp_path / "d")
    assert tree(tmp_path / "d") == {f"Big/{pid}.jpg": data}
    assert (report["downloaded"], report["failed"]) == (1, 0)
    gets = media_gets(pin)
    half = len(data) // 2
    assert [g.headers.get("range") for g in gets] == [None, f"bytes={half}-", f"bytes={half}-"]
    assert report["bytes"] == half + (len(data) - half)  # nothing fetched twice
    assert all("authorization" not in g.headers for g in gets)
    assert pin.violations == []


def test_a_206_with_the_wrong_content_range_restarts_cleanly(pin: PinterestFake, config_file: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid, data = _signed_in_with_a_big_pin(pin, config_file, monkeypatch)
    pin.truncate_next(path="/media/1200x/*")  # the first GET is cut at half: the engine resumes...
    pin.wrong_range_next(start=7, path="/media/1200x/*")  # ...and gets bytes 7- instead of what it asked
    report = fetch(tmp_path / "d")
    assert (report["downloaded"], report["failed"]) == (1, 0)
    assert tree(tmp_path / "d") == {f"Big/{pid}.jpg": data}  # nothing glued at the wrong offset
    gets = media_gets(pin)
    half = len(data) // 2
    assert [g.headers.get("range") for g in gets] == [None, f"bytes={half}-", None]
    assert not list((tmp_path / "d").rglob("*.part"))
    assert pin.violations == []


@pytest.mark.parametrize(("where", "body", "expected"), [
    ("/v5/boards", b"<html>Service temporarily unavailable</html>", "invalid JSON for /boards"),
    ("/v5/boards", b'{"items": [{"id": "1", "name": "Cats"', "invalid JSON for /boards"),
    ("/v5/boards", b"[" * 100_000, "invalid JSON for /boards"),
    ("/v5/boards", b'{"items": {"id": "1"}}', "has no 'items' list"),
    ("/v5/boards", b'["not", "a", "page"]', "has no 'items' list"),
    ("pins", b'{"items": "none"}', "has no 'items' list"),
])
def test_a_garbage_answer_is_exit_4_never_a_crash(pin: PinterestFake, config_file: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, where: str, body: bytes,
                                                  expected: str) -> None:
    lib = Library(pin)
    write_config(config_file, pin)
    monkeypatch.setenv("PIXSRC_PINTEREST_CLIENT_SECRET", pin.oauth.client_secret)
    add_source()
    sign_in_directly(pin)
    path = f"/v5/boards/{lib.cats}/pins" if where == "pins" else where
    pin.server.fail_next(200, body, {"Content-Type": "application/json"}, path=path)
    result = run("fetch", SID, "--dest", str(tmp_path / "d"), "--json")
    assert result.exit_code == 4, (result.exit_code, result.stderr)
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_wrongly_typed_fields_are_skipped_not_a_crash(pin: PinterestFake) -> None:
    """Fields of the wrong type inside well-formed pages: that pin (or board) is left out, the rest is listed."""
    board = pin.add_board("Odd")
    good = pin.add_pin(board, image=jpeg("fine"))
    page = {"items": [
        {"id": 12, "media": {"media_type": "image"}},  # id not a string
        {"id": "13", "board_section_id": ["x"], "media": "image"},  # a list as section id, a string as media
        {"id": "14", "media": {"media_type": "multiple_images", "items": {"a": 1}}},
        {"id": "15", "media": {"media_type": "image", "images": {"1200x": {"url": 7}}}},
        {"id": "16", "created_at": 5, "media": {"media_type": "video", "cover_image_url": ["u"]}},
        "a string, not a pin",
        None,
    ], "bookmark": 17}  # a bookmark that is not a string ends the list
    pin.server.fail_next(200, page, {"Content-Type": "application/json"}, path=f"/v5/boards/{board}/pins")
    boards = {"items": [{"id": board, "name": ["Odd"], "privacy": 3}, {"id": None}, {"name": "no id"}],
              "bookmark": None}
    pin.server.fail_next(200, boards, {"Content-Type": "application/json"}, path="/v5/boards")
    warnings: list[str] = []
    assets = list(controller(pin, warnings=warnings).list_assets())
    assert assets == []  # the one good pin was not on the (replaced) page
    assert any("had no image URL" in w for w in warnings)
    assert [a.id for a in controller(pin).list_assets()] == [good]  # the real pages list it


def test_an_image_gone_from_the_cdn_fails_alone(pin: PinterestFake, config_file: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    lib = Library(pin)
    write_config(config_file, pin)
    monkeypatch.setenv("PIXSRC_PINTEREST_CLIENT_SECRET", pin.oauth.client_secret)
    add_source()
    sign_in_directly(pin)
    gone = next(p for p in pin.pins if p.id == lib.p_tabby).media["images"]["1200x"]["url"]
    del pin.media[gone.split(pin.base_url, 1)[1]]
    report = fetch(tmp_path / "d", code=5)
    assert (report["status"], report["downloaded"], report["failed"]) == ("partial", 7, 1)
    assert "image moved or was removed" in report["errors"][0]["error"]
    assert len(pin.server.requests_to(gone.split(pin.base_url, 1)[1])) == 1  # a 404 is not retried
    assert pin.violations == []


# -- the engine's same_as reuse ------------------------------------------------------------------------


class Twins:
    """Two assets with one content; a transfer of the second is a test failure unless allowed."""

    def __init__(self, folder: Path, fail_first: bool = False) -> None:
        self.data = b"\xff\xd8 twin bytes" * 100
        self.source = folder / "twin.jpg"
        folder.mkdir(parents=True, exist_ok=True)
        self.source.write_bytes(self.data)
        self.fail_first = fail_first
        self.opened: list[str] = []

    def list_assets(self) -> Iterator[Asset]:
        yield Asset("a", "one/a.jpg", "v1", size=len(self.data))
        yield Asset("b", "two/b.jpg", "v1", size=len(self.data), same_as="a")

    def transfer(self, asset: Asset) -> Transfer:
        self.opened.append(asset.id)
        if asset.id == "a" and self.fail_first:
            raise AssetError("gone")
        return Transfer(local_path=str(self.source))

    def close(self) -> None:
        pass


def test_engine_copies_same_as_assets_and_falls_back_to_downloading(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    dest = tmp_path / "d"
    twins = Twins(tmp_path / "source")
    outcomes = list(SyncRun("s", twins, state, Options(dest=dest)))
    assert sorted((o.asset_id, o.action, o.bytes) for o in outcomes) == [
        ("a", "downloaded", len(twins.data)), ("b", "downloaded", 0)]
    assert twins.opened == ["a"] and tree(dest) == {"one/a.jpg": twins.data, "two/b.jpg": twins.data}
    # the copy is lost locally: restored from a's file, still without a download
    (dest / "two/b.jpg").unlink()
    twins.opened.clear()
    actions = sorted(o.action for o in SyncRun("s", twins, state, Options(dest=dest)))
    assert actions == ["downloaded", "unchanged"]
    assert twins.opened == [] and (dest / "two/b.jpg").read_bytes() == twins.data
    # a's file was changed by the user: b is downloaded itself rather than copied from it
    (dest / "two/b.jpg").unlink()
    (dest / "one/a.jpg").write_bytes(b"edited")
    list(SyncRun("s", twins, state, Options(dest=dest)))
    assert twins.opened == ["b"] and (dest / "two/b.jpg").read_bytes() == twins.data
    # the first cannot be fetched at all: the second still is
    other = Twins(tmp_path / "source2", fail_first=True)
    outcomes = list(SyncRun("s2", other, state, Options(dest=tmp_path / "e", retries=0)))
    assert sorted((o.asset_id, o.action) for o in outcomes) == [("a", "failed"), ("b", "downloaded")]
    assert other.opened == ["a", "b"]


def test_image_transfers_carry_no_credential(pin: PinterestFake) -> None:
    Library(pin)
    c = controller(pin)
    transfers = [c.transfer(a) for a in c.list_assets()]
    c.close()
    assert transfers and all(t.auth is None and not t.headers and t.resumable for t in transfers)
    assert all(t.url.startswith(pin.base_url + "/media/") for t in transfers)
    verdicts = {status: transfers[0].on_error(status, {}, b"") for status in (403, 404, 410, 500)}  # type: ignore[misc]
    assert all(v is not None and "image moved or was removed" in v.message and not v.retry
               for s, v in verdicts.items() if s != 500)
    assert verdicts[500] is None  # the engine's default: retried


def test_type_facts() -> None:
    p = pinterest.PROVIDER
    assert (p.scope_separator, p.pkce, p.secret, p.client_auth, p.revoke_style) == (
        ",", False, "required", "basic", "none")
    assert (p.loopback_port, p.redirect_path, p.rotates_refresh_token, p.refresh_token_days) == (
        8085, "/callback", True, 60)
    assert (p.authorize_url, p.token_url, p.api_base_url) == (
        "https://www.pinterest.com/oauth/", "https://api.pinterest.com/v5/oauth/token", "https://api.pinterest.com")
    spec = pinterest.SOURCE_TYPE.auth
    base = pinterest.SOURCE_TYPE.validate({}, "x")
    assert spec.scopes_of(None) == spec.scopes_of(base) == ("boards:read", "pins:read")
    with_secret = pinterest.SOURCE_TYPE.validate({"include_secret": True}, "x")
    assert spec.scopes_of(with_secret) == (
        "boards:read", "pins:read", "boards:read_secret", "pins:read_secret")
    assert "pinterest" in run("types").stdout
    assert sys.modules["pixsrc.sources.pinterest"] is pinterest
