"""dropbox: the real CLI and controller against the fake Dropbox API v2 (tests/fakes/dropbox.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
from fakes.dropbox import DropboxFake, content_hash
from support.cli import run, run_subprocess

from pixsrc import oauth, tokens
from pixsrc.sources import dropbox
from pixsrc.sources.dropbox import CONTENT_HASH, PROVIDER, SOURCE_TYPE, DropboxContentHasher
from pixsrc.testing import check_controller, context_for
from pixsrc.types import HASHERS, new_hasher

FAKE_BROWSER = Path(__file__).resolve().parent.parent / "support" / "fake_browser.py"
SCOPES = ("files.metadata.read", "files.content.read")

PHOTOS = {
    "/Photos/a.jpg": b"\xff\xd8\xff\xe0 jpeg one",
    "/Photos/b.png": b"\x89PNG\r\n\x1a\n png two" * 40,
    "/Photos/\u00dcml\u00e4ut/gr\u00fcn \U0001f33f #1.jpg": b"\xff\xd8 unicode through Dropbox-API-Arg",
    "/Photos/sub/deeper/c.webp": b"RIFF....WEBP three",
}


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def dbx():
    with DropboxFake() as fake:
        yield fake


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff delays made instant; the retry logic itself still runs."""
    import pixsrc.http
    import pixsrc.sync

    monkeypatch.setattr(pixsrc.sync, "backoff_delay", lambda attempt, *a, **k: 0.0)
    monkeypatch.setattr(pixsrc.http, "backoff_delay", lambda attempt, *a, **k: 0.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def providers_table(dbx: DropboxFake, port: int) -> dict:
    return {"dropbox": {"client_id": dbx.oauth.client_id, "authorize_url": dbx.authorize_url,
                        "token_url": dbx.token_url, "revoke_url": dbx.revoke_url, "api_base_url": dbx.api_url,
                        "content_base_url": dbx.content_url, "redirect_port": port,
                        "requests_per_second": 1000}}


def configure(config_file: Path, dbx: DropboxFake, *sets: str, source_id: str = "dbx") -> int:
    port = free_port()
    table = providers_table(dbx, port)["dropbox"]
    lines = ["version = 1", "", "[providers.dropbox]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("\n".join(lines) + "\n")
    args = ["add", "dropbox", "--id", source_id, "--name", "My Dropbox"]
    for item in sets:
        args += ["--set", item]
    result = run(*args, "--no-input")
    assert result.exit_code == 0, result.stderr
    return port


def sign_in(dbx: DropboxFake, port: int, source_id: str = "dbx") -> oauth.TokenSet:
    """The real loopback + PKCE login, in-process: the 'browser' is urllib on another thread."""
    settings = oauth.settings_for(PROVIDER, providers_table(dbx, port))

    def announce(text: str) -> None:
        for word in text.split():
            if word.startswith("http"):
                threading.Thread(target=urllib.request.urlopen, args=(word,), kwargs={"timeout": 10},
                                 daemon=True).start()

    token_set = oauth.login(settings, SCOPES, "My Dropbox", open_browser=False, timeout=10, announce=announce)
    tokens.put(source_id, token_set.to_json())
    return token_set


def populate(dbx: DropboxFake, files: dict[str, bytes]) -> dict[str, str]:
    return {path: dbx.add_file(path, data) for path, data in files.items()}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fetch(dest: Path, *args: str, source_id: str = "dbx", code: int = 0):
    result = run("fetch", source_id, "--dest", str(dest), "--json", *args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    (report,) = json.loads(result.stdout)["sources"]
    return report, result.stderr


def downloads(dbx: DropboxFake) -> list:
    return dbx.content.requests_to("/2/files/download", "POST")


def download_args(dbx: DropboxFake) -> list[dict]:
    return [json.loads(r.headers["dropbox-api-arg"]) for r in downloads(dbx)]


# -- end to end through the pixsrc command -----------------------------------------------------------


def test_end_to_end_login_list_fetch_refresh_status_logout(dbx: DropboxFake, config_file: Path,
                                                           tmp_path: Path) -> None:
    populate(dbx, {**PHOTOS, "/Photos/notes.txt": b"not media", "/Elsewhere/x.jpg": b"outside the folder"})
    port = configure(config_file, dbx, "path=/photos")  # Dropbox matches paths case-insensitively

    login = run_subprocess("auth", "login", "dbx", env={"BROWSER": str(FAKE_BROWSER)}, timeout=60)
    assert login.returncode == 0, login.stderr
    assert "checked: the credential works" in login.stderr
    (grant,) = dbx.oauth.grants
    assert grant.params["token_access_type"] == "offline" and grant.code_challenge_method == "S256"
    assert grant.redirect_uri == f"http://127.0.0.1:{port}/callback"
    assert grant.scopes == list(SCOPES)
    (exchange,) = dbx.api.requests_to("/oauth2/token")
    form = exchange.form()
    assert "code_verifier" in form and "client_secret" not in form and "authorization" not in exchange.headers
    stored = oauth.TokenSet.parse(tokens.get("dbx").value)
    assert stored.refresh_token == grant.refresh_token and stored.refresh_token
    import keyring

    assert tokens.get("dbx").stored_in.startswith("keyring")
    assert stored.refresh_token in keyring.get_password("pixsrc", "dbx")
    assert stored.refresh_token not in config_file.read_text()
    verify_calls = dbx.api.requests_to("/2/files/list_folder")
    assert [r.json() for r in verify_calls] == [{"path": "/photos", "recursive": False, "limit": 1}]

    listing = run("fetch", "dbx", "--list", "--json")
    assert listing.exit_code == 0, listing.stderr
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(p.removeprefix("/Photos/") for p in PHOTOS)
    assert all(r["version"].startswith("ch:") and r["media_type"] for r in rows)

    dest = tmp_path / "dest"
    report, _ = fetch(dest)
    expected = {p.removeprefix("/Photos/"): data for p, data in PHOTOS.items()}
    assert tree(dest) == expected
    assert (report["status"], report["listed"], report["downloaded"], report["failed"]) == ("ok", 4, 4, 0)
    assert report["bytes"] == sum(len(d) for d in PHOTOS.values())
    # raw header bytes were pure ASCII (the fake rejects anything else), and the Unicode name round-trips
    assert all(r.headers["dropbox-api-arg"].isascii() for r in downloads(dbx))
    assert sorted(a["path"] for a in download_args(dbx)) == sorted(p.lower() for p in PHOTOS)
    assert all("content-type" not in r.headers and r.body == b"" for r in downloads(dbx))
    assert len(dbx.api.requests_to("/2/files/list_folder")) == 3  # verify, --list, fetch: one page each

    # the access token dies at Dropbox: the next run refreshes once and keeps the (non-rotating) refresh token
    dbx.oauth.expire_access_tokens()
    dbx.add_file("/Photos/new.jpg", b"added later")
    before = len(downloads(dbx))
    report, _ = fetch(dest)
    assert (report["downloaded"], report["unchanged"]) == (1, 4)
    assert dbx.oauth.refresh_count == 1
    assert len(downloads(dbx)) == before + 1
    after = oauth.TokenSet.parse(tokens.get("dbx").value)
    assert after.refresh_token == stored.refresh_token and after.access_token != stored.access_token
    assert (dest / "new.jpg").read_bytes() == b"added later"

    status = run("auth", "status", "--json")
    assert status.exit_code == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert (row["source"], row["provider"], row["status"], row["scopes"]) == ("dbx", "dropbox", "ok", list(SCOPES))

    logout = run("auth", "logout", "dbx")
    assert logout.exit_code == 0, logout.stderr
    assert "revoked at Dropbox" in logout.stderr
    (revoke,) = dbx.api.requests_to("/2/auth/token/revoke")
    assert revoke.headers["authorization"] == f"Bearer {after.access_token}" and revoke.body == b""
    assert grant.revoked
    assert tokens.get("dbx") is None
    assert dbx.violations == []


def test_logout_with_an_expired_access_token_refreshes_to_revoke(dbx: DropboxFake, config_file: Path) -> None:
    port = configure(config_file, dbx)
    sign_in(dbx, port)
    dbx.oauth.expire_access_tokens()
    result = run("auth", "logout", "dbx")
    assert result.exit_code == 0, result.stderr
    assert "revoked at Dropbox" in result.stderr
    assert [r.headers["authorization"] != "" for r in dbx.api.requests_to("/2/auth/token/revoke")] == [True, True]
    assert dbx.oauth.refresh_count == 1 and dbx.oauth.grants[-1].revoked


# -- listing ---------------------------------------------------------------------------------------


def test_paging_cursor_reset_and_token_expiring_mid_listing(dbx: DropboxFake, config_file: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"/Photos/p{n:02}.jpg": f"photo {n}".encode() for n in range(7)}
    populate(dbx, files)
    port = configure(config_file, dbx, "path=/Photos")
    sign_in(dbx, port)
    monkeypatch.setattr(dropbox, "PAGE_LIMIT", 2)
    continues = [0]

    def expire_on_second_continue(req) -> bool:
        continues[0] += 1
        if continues[0] == 2:
            dbx.oauth.expire_access_tokens()  # the token dies in the middle of the listing
        return False

    # a fault that never fires: its `when` is only a hook that runs before the route handles the request
    dbx.api.fail_next(200, b"", path="/2/files/list_folder/continue", when=expire_on_second_continue)
    dbx.api.fail_next(409, {"error_summary": "reset/..", "error": {".tag": "reset"}}, times=1,
                      path="/2/files/list_folder/continue", when=lambda req: continues[0] == 4)
    report, stderr = fetch(tmp_path / "dest")
    assert tree(tmp_path / "dest") == {p.removeprefix("/Photos/"): d for p, d in files.items()}
    assert (report["listed"], report["downloaded"]) == (7, 7)
    assert "reset the listing cursor" in stderr
    assert dbx.oauth.refresh_count == 1
    listed = dbx.api.requests_to("/2/files/list_folder")
    assert len(listed) == 2 and all(r.json()["limit"] == 2 for r in listed)  # restarted once after the reset
    # first pass: ok, 401 + resent, reset; second pass: 3 (7 files, 2 a page)
    assert len(dbx.api.requests_to("/2/files/list_folder/continue")) == 7
    assert len(downloads(dbx)) == 7
    assert dbx.violations == []


def test_folder_case_paths_and_case_only_rename(dbx: DropboxFake, config_file: Path, tmp_path: Path) -> None:
    dbx.add_folder("/Photos")
    dbx.add_folder("/Photos/Trip")
    dbx.add_file("/photos/lower.jpg", b"one")  # path_display keeps the case it was written with
    dbx.add_file("/PHOTOS/TRIP/Beach.JPG", b"two")
    dbx.add_file("/Photos/trip/x.PNG", b"three")
    dbx.add_file("/Photos/trip/skip.gif", b"excluded")
    port = configure(config_file, dbx, "path=/pHoToS/", "include=*.jpg,*.png", "exclude=TRIP/SKIP*")
    sign_in(dbx, port)
    dest = tmp_path / "dest"
    fetch(dest)
    # folders take their own entry's case, so one local folder "Trip", whatever case the children show
    assert tree(dest) == {"lower.jpg": b"one", "Trip/Beach.JPG": b"two", "Trip/x.PNG": b"three"}

    # the same file renamed in case only (same bytes, same id): moved locally, not downloaded again
    dbx.add_file("/Photos/Trip/BEACH.jpg", b"two")
    before = len(downloads(dbx))
    report, _ = fetch(dest)
    assert (report["updated"], report["downloaded"]) == (1, 0)
    assert len(downloads(dbx)) == before
    assert tree(dest) == {"lower.jpg": b"one", "Trip/BEACH.jpg": b"two", "Trip/x.PNG": b"three"}
    assert dbx.violations == []


def test_non_downloadable_skipped_deleted_ignored_other_files_opt_in(dbx: DropboxFake, config_file: Path,
                                                                     tmp_path: Path) -> None:
    dbx.add_file("/Docs/plan.jpg", b"an export-only document", is_downloadable=False)
    dbx.add_file("/Docs/real.jpg", b"real")
    dbx.add_file("/Docs/notes.txt", b"text")
    port = configure(config_file, dbx, "path=/Docs", "all_files=true")
    sign_in(dbx, port)
    dest = tmp_path / "dest"
    report, stderr = fetch(dest)
    assert tree(dest) == {"real.jpg": b"real", "notes.txt": b"text"}
    assert "skipped plan.jpg: Dropbox cannot download it" in stderr
    assert sorted(a["path"] for a in download_args(dbx)) == ["/docs/notes.txt", "/docs/real.jpg"]
    # a page with a deleted entry (as include_deleted listings have) changes nothing
    page = {"entries": [{".tag": "deleted", "name": "real.jpg", "path_lower": "/docs/real.jpg",
                         "path_display": "/Docs/real.jpg"}]
            + [e.metadata() for e in dbx.entries.values() if e.path_lower.startswith("/docs/")],
            "cursor": "AAHx", "has_more": False}
    dbx.api.fail_next(200, page, path="/2/files/list_folder")
    report, _ = fetch(dest)
    assert (report["listed"], report["unchanged"], report["deleted"]) == (2, 2, 0)


def test_missing_folder_and_malformed_request_and_missing_scope(dbx: DropboxFake, config_file: Path,
                                                                tmp_path: Path) -> None:
    port = configure(config_file, dbx, "path=/Nope/Gone")
    sign_in(dbx, port)
    report, stderr = fetch(tmp_path / "d", code=4)
    assert report["status"] == "unavailable"
    assert "the Dropbox folder '/Nope/Gone' does not exist" in stderr

    dbx.add_folder("/Nope/Gone")
    dbx.api.fail_next(400, 'Error in call to API function "files/list_folder": request body: oops',
                      {"Content-Type": "text/plain"}, path="/2/files/list_folder")
    _, stderr = fetch(tmp_path / "d", code=4)
    assert "malformed (a pixsrc bug" in stderr and "request body: oops" in stderr

    dbx.api.fail_next(401, {"error_summary": "missing_scope/..",
                            "error": {".tag": "missing_scope", "required_scope": "files.metadata.read"}},
                      times=2, path="/2/files/list_folder")
    report, stderr = fetch(tmp_path / "d", code=3)
    assert report["status"] == "auth" and "Permissions tab" in stderr
    assert dbx.violations == []


# -- faults while downloading --------------------------------------------------------------------


def test_truncated_download_resumes_with_range_and_5xx_and_429_once(
        dbx: DropboxFake, config_file: Path, tmp_path: Path, no_backoff: None) -> None:
    big = hashlib.sha256(b"seed").digest() * 20_000  # 640 KB
    dbx.add_file("/Photos/big.jpg", big)
    dbx.add_file("/Photos/small.jpg", b"small")
    port = configure(config_file, dbx, "path=/Photos")
    sign_in(dbx, port)
    dbx.content.truncate_next(path="/2/files/download",
                              when=lambda req: json.loads(req.headers["dropbox-api-arg"])["path"] == "/photos/big.jpg")
    dbx.api.fail_next(503, "upstream unavailable", path="/2/files/list_folder")
    dbx.content.fail_next(429, {"error_summary": "too_many_requests/..",
                                "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 0}},
                          {"Retry-After": "0"}, path="/2/files/download",
                          when=lambda req: json.loads(req.headers["dropbox-api-arg"])["path"] == "/photos/small.jpg")
    report, stderr = fetch(tmp_path / "dest", "--jobs", "1")
    assert tree(tmp_path / "dest") == {"big.jpg": big, "small.jpg": b"small"}
    assert report["failed"] == 0
    big_requests = [r for r in downloads(dbx) if json.loads(r.headers["dropbox-api-arg"])["path"] == "/photos/big.jpg"]
    ranges = [r.headers.get("range") for r in big_requests]
    assert ranges[-1] == f"bytes={len(big) // 2}-", ranges  # resumed where the cut-off body ended
    assert ranges == [None, f"bytes={len(big) // 2}-"]
    small = [r for r in downloads(dbx) if json.loads(r.headers["dropbox-api-arg"])["path"] == "/photos/small.jpg"]
    assert len(small) == 2  # the 429 with Retry-After: 0 was retried exactly once
    assert len(dbx.api.requests_to("/2/files/list_folder")) == 2  # 503 once, then the listing
    assert "waiting" not in stderr  # a 0 s wait is not announced
    assert dbx.violations == []


def test_long_retry_after_is_shown_and_waited_not_spun(dbx: DropboxFake, config_file: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import pixsrc.http

    waits: list[float] = []
    monkeypatch.setattr(pixsrc.http, "wait", waits.append)
    dbx.add_file("/Photos/a.jpg", b"a")
    port = configure(config_file, dbx, "path=/Photos")
    sign_in(dbx, port)
    dbx.fail_next_rate_limit(retry_after=180, path="/2/files/list_folder")
    report, stderr = fetch(tmp_path / "dest")
    assert report["downloaded"] == 1
    assert [w for w in waits if w >= 1] == [180.0]  # (shorter ones: the provider's request pacing)
    assert "waiting 180 s before retrying" in stderr
    assert len(dbx.api.requests_to("/2/files/list_folder")) == 2


def test_rate_limit_hint_only_in_the_json_body(dbx: DropboxFake, monkeypatch: pytest.MonkeyPatch,
                                               no_backoff: None) -> None:
    """No Retry-After header: HttpClient's own retries run out, then the body's retry_after is waited."""
    import pixsrc.http
    import pixsrc.sources.dropbox as module

    waits: list[float] = []
    monkeypatch.setattr(pixsrc.http, "wait", lambda s: None)
    monkeypatch.setattr(module, "interruptible_wait", waits.append)
    dbx.add_file("/Photos/a.jpg", b"a")
    body = {"error_summary": "too_many_requests/..",
            "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 42}}
    dbx.api.fail_next(429, body, times=5, path="/2/files/list_folder")  # 1 + HttpClient's 4 retries
    warnings: list[str] = []
    controller = make_controller(dbx, {"path": "/Photos"}, warn=warnings.append)
    try:
        assets = list(controller.list_assets())
    finally:
        controller.close()
    assert [a.path for a in assets] == ["a.jpg"]
    assert waits == [42.0]
    assert warnings == ["Dropbox rate limit (HTTP 429); waiting 42 s before retrying"]
    assert len(dbx.api.requests_to("/2/files/list_folder")) == 6


# -- controller level: contract, hasher, config ---------------------------------------------------


class StaticAuth:
    def __init__(self, token: str) -> None:
        self.token = token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def unauthorized(self, sent_headers) -> None:
        pass


def make_controller(dbx: DropboxFake, config: dict, warn=lambda message: None):
    context = context_for(SOURCE_TYPE, config)
    settings = oauth.settings_for(PROVIDER, providers_table(dbx, 1))
    context = dataclasses.replace(context, auth=StaticAuth(dbx.issue_token()), provider=settings, warn=warn)
    return SOURCE_TYPE.factory(context)


def test_controller_contract(dbx: DropboxFake) -> None:
    populate(dbx, PHOTOS)
    dbx.add_file("/Photos/big.png", bytes(range(256)) * 20_000)  # 5 MB: two content-hash blocks

    def mutate() -> None:
        dbx.add_file("/Photos/a.jpg", b"\xff\xd8 rewritten")
        dbx.add_file("/Photos/b.png", PHOTOS["/Photos/b.png"])  # same bytes, new rev: same version

    result = check_controller(lambda: make_controller(dbx, {"path": "/Photos"}), mutate=mutate)
    assert (result.assets, result.mutated) == (5, 1)
    assert dbx.violations == []


@pytest.mark.parametrize("size", [0, 1, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 9 * 1024 * 1024 + 7])
def test_content_hasher_matches_dropbox_in_odd_chunks(size: int) -> None:
    data = (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]
    hasher = new_hasher(CONTENT_HASH)
    assert isinstance(hasher, DropboxContentHasher) and HASHERS[CONTENT_HASH] is DropboxContentHasher
    for start in range(0, size, 1_000_003):
        hasher.update(data[start:start + 1_000_003])
    assert hasher.hexdigest() == content_hash(data)
    assert hasher.hexdigest() == hasher.hexdigest()  # reading the digest does not consume it


@pytest.mark.parametrize(("given", "stored"), [("", ""), ("/", ""), ("Photos/", "/Photos"),
                                                ("/Photos/2024", "/Photos/2024"), (" /A b/ ", "/A b")])
def test_folder_paths_are_normalised(given: str, stored: str) -> None:
    assert SOURCE_TYPE.validate({"path": given}, "x").path == stored


@pytest.mark.parametrize("bad", ["/a//b", "/a/../b", "id:abc", "rev:0123456789"])
def test_bad_folder_paths_are_rejected(bad: str) -> None:
    from pixsrc.errors import ConfigError

    with pytest.raises(ConfigError, match="x.path"):
        SOURCE_TYPE.validate({"path": bad}, "x")


def test_type_facts() -> None:
    p = SOURCE_TYPE.auth.oauth
    assert (SOURCE_TYPE.id, SOURCE_TYPE.category, SOURCE_TYPE.auth.provider) == ("dropbox", "cloud", "dropbox")
    assert " ".join(SOURCE_TYPE.auth.scopes) == "files.metadata.read files.content.read"
    assert (p.secret, p.pkce, p.revoke_style, p.loopback_port, p.rotates_refresh_token) == \
        ("none", True, "bearer", 53682, False)
    assert dict(p.authorize_params) == {"token_access_type": "offline"}
    settings = oauth.settings_for(p, {"dropbox": {"client_id": "k"}})
    assert "http://127.0.0.1:53682/callback" in oauth.setup_steps(settings, "dbx")
