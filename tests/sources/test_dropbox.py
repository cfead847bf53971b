"""dropbox: the real CLI and controller against the fake Dropbox API v2 (tests/fakes/dropbox.py).

Controller-level tests use an Api that backs off in milliseconds and check each ``Transfer`` by
sending what it describes once (``attempt``); the end-to-end tests run the real `pixsrc` command,
whose engine moves the bytes.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fakes.dropbox import DropboxFake, content_hash
from support.cli import run, run_subprocess
from support.controllers import FAST, FakeBearer, FastContext

from pixsrc import oauth, tokens
from pixsrc.api import Cancelled, RetryPolicy
from pixsrc.errors import AuthRequired, SourceUnavailable
from pixsrc.sources import dropbox
from pixsrc.sources.dropbox import CONTENT_HASH, PROVIDER, SOURCE_TYPE, DropboxContentHasher, DropboxController
from pixsrc.testing import check_controller, context_for, fetch_transfer
from pixsrc.types import HASHERS, Asset, Transfer, TransferError, new_hasher

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
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's retry policy backs off in milliseconds (PIXSRC_RETRY_BASE, read once by pixsrc.api)."""
    monkeypatch.setenv("PIXSRC_RETRY_BASE", "0.001")


def attempt(transfer: Transfer, offset: int = 0) -> tuple[int, bytes, TransferError | None]:
    """Perform ``transfer`` once as the engine would (pixsrc.testing.fetch_transfer: libcurl, its auth,
    one refresh after a 401), without the engine's retries and resume logic (tested end to end): the
    answer's status and body, and what ``on_error`` makes of a refusal."""
    answer = fetch_transfer(transfer, headers={"Range": f"bytes={offset}-"} if offset else None)
    error = None
    if answer.status >= 400 and transfer.on_error is not None:
        error = transfer.on_error(answer.status, answer.headers, answer.body[:65536])
    return answer.status, answer.body, error


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
        dbx: DropboxFake, config_file: Path, tmp_path: Path, fast_retries: None) -> None:
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


@pytest.mark.parametrize("start", [0, 1])
def test_a_206_with_the_wrong_content_range_restarts_cleanly(dbx: DropboxFake, config_file: Path, tmp_path: Path,
                                                             fast_retries: None, start: int) -> None:
    big = hashlib.sha256(b"dropbox").digest() * 2000  # 64 KB
    dbx.add_file("/Photos/big.jpg", big)
    dbx.add_file("/Photos/small.jpg", b"small")
    port = configure(config_file, dbx, "path=/Photos")
    sign_in(dbx, port)

    def is_big(req: Any) -> bool:
        return json.loads(req.headers["dropbox-api-arg"])["path"] == "/photos/big.jpg"

    dbx.truncate_next(path="/2/files/download", when=is_big)  # cut off half way: resumed with Range...
    dbx.wrong_range_next(start=start, path="/2/files/download", when=is_big)  # ...answered for another range
    dest = tmp_path / "dest"
    report, _ = fetch(dest, "--jobs", "1")
    assert (report["status"], report["downloaded"], report["failed"]) == ("ok", 2, 0)
    assert tree(dest) == {"big.jpg": big, "small.jpg": b"small"}
    assert not [p for p in dest.rglob("*") if p.name.startswith(".pixsrc-")]  # no .part left behind
    ranges = [r.headers.get("range") for r in downloads(dbx) if is_big(r)]
    assert ranges[:2] == [None, f"bytes={len(big) // 2}-"], ranges
    # not appended: fetched again from the start (or that 206, when it carried the file from byte 0)
    assert ranges[2:] in ([None], ["bytes=0-"]) or (start == 0 and ranges[2:] == []), ranges
    assert dbx.content.pending_faults() == 0
    assert all("content-type" not in r.headers and r.body == b"" for r in downloads(dbx))


@pytest.mark.parametrize(("status", "body", "code", "expected"), [
    (200, b"<html><body>Sign in to the Wi-Fi</body></html>", 4, "files/list_folder with invalid JSON"),
    (200, {"entries": [{".tag": "file", "id": 7}], "cursor": "c", "has_more": False}, 4,
     "files/list_folder with a document of an unexpected shape (entries.0.id:"),
    (200, b'{"entries": [{".tag": "file", "name": "a.jpg"', 4, "files/list_folder with invalid JSON"),
    (418, b"<html>I'm a teapot</html>", 4, "files/list_folder: HTTP 418: <html>I'm a teapot</html>"),
    (401, {"error_summary": "invalid_access_token/..", "error": {".tag": "invalid_access_token"}}, 3,
     "refused the credential for files/list_folder (HTTP 401 invalid_access_token)"),
])
def test_garbage_listing_ends_with_exit_4_or_3(dbx: DropboxFake, config_file: Path, tmp_path: Path,
                                              fast_retries: None, status: int, body: Any, code: int,
                                              expected: str) -> None:
    dbx.add_file("/Photos/a.jpg", b"a")
    port = configure(config_file, dbx, "path=/Photos")
    sign_in(dbx, port)
    dbx.api.fail_next(status, body, {"Content-Type": "application/json"}, times=99, path="/2/files/list_folder")
    report, stderr = fetch(tmp_path / "dest", code=code)
    assert report["status"] == ("auth" if code == 3 else "unavailable")
    assert expected in stderr and "Traceback" not in stderr


def test_garbage_download_errors_fail_the_asset_not_the_program(dbx: DropboxFake, config_file: Path,
                                                                 tmp_path: Path, fast_retries: None) -> None:
    dbx.add_file("/Photos/bad.jpg", b"bad")
    dbx.add_file("/Photos/good.jpg", b"good")
    port = configure(config_file, dbx, "path=/Photos")
    sign_in(dbx, port)
    dbx.content.fail_next(409, b"\x00\xff{not json", {"Content-Type": "application/json"}, times=99,
                          path="/2/files/download",
                          when=lambda req: json.loads(req.headers["dropbox-api-arg"])["path"] == "/photos/bad.jpg")
    report, stderr = fetch(tmp_path / "dest", code=5)  # partial: the other file is there
    assert (report["downloaded"], report["failed"]) == (1, 1)
    assert "Dropbox: " in stderr and "Traceback" not in stderr
    assert tree(tmp_path / "dest") == {"good.jpg": b"good"}


# -- controller level: listing, rate limits, transfers, garbage -------------------------------------


def make_controller(dbx: DropboxFake, config: dict, warn=lambda message: None,  # noqa: ANN001
                    policy: RetryPolicy = FAST, auth: FakeBearer | None = None) -> DropboxController:
    base = context_for(SOURCE_TYPE, config)
    settings = oauth.settings_for(PROVIDER, providers_table(dbx, 1))
    context = FastContext(base.source_id, base.source_name, base.config, auth=auth or FakeBearer(dbx.issue_token),
                          provider=settings, warn=warn, policy=policy)
    controller = SOURCE_TYPE.factory(context)
    assert isinstance(controller, DropboxController)
    return controller


def listing(dbx: DropboxFake, config: dict, **options: Any) -> list[Asset]:
    controller = make_controller(dbx, config, **options)
    try:
        return list(controller.list_assets())
    finally:
        controller.close()


def test_listing_pages_resets_and_refreshes(dbx: DropboxFake, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"/Photos/p{n:02}.jpg": f"photo {n}".encode() for n in range(7)}
    populate(dbx, files)
    dbx.add_file("/Photos/notes.txt", b"not media")
    monkeypatch.setattr(dropbox, "PAGE_LIMIT", 2)
    continues = [0]

    def expire_on_second_continue(req: Any) -> bool:
        continues[0] += 1
        if continues[0] == 2:
            dbx.oauth.expire_access_tokens()  # the token dies in the middle of the listing
        return False

    dbx.api.fail_next(200, b"", path="/2/files/list_folder/continue", when=expire_on_second_continue)
    dbx.api.fail_next(409, {"error_summary": "reset/..", "error": {".tag": "reset"}},
                      path="/2/files/list_folder/continue", when=lambda req: continues[0] == 4)
    dbx.api.fail_next(503, "upstream unavailable", path="/2/files/list_folder")  # an idempotent POST: resent
    warnings: list[str] = []
    auth = FakeBearer(dbx.issue_token)
    assets = listing(dbx, {"path": "/photos"}, warn=warnings.append, auth=auth)
    assert sorted(a.path for a in assets) == sorted(p.removeprefix("/Photos/") for p in files)
    assert all(a.checksum is not None and a.checksum.algorithm == CONTENT_HASH for a in assets)
    assert all(a.version.startswith("ch:") and a.size and a.modified for a in assets)
    assert warnings == ["Dropbox reset the listing cursor; listing the folder again from the start"]
    assert auth.refreshes == 1
    listed = dbx.api.requests_to("/2/files/list_folder")
    assert len(listed) == 3 and all(r.json() == {"path": "/photos", "recursive": True, "limit": 2,
                                                 "include_non_downloadable_files": True} for r in listed)
    # first pass: ok, 401 + resent, reset; second pass: 3 (8 files, 2 a page, the first from list_folder)
    assert len(dbx.api.requests_to("/2/files/list_folder/continue")) == 4 + 3
    assert all(r.headers["content-type"] == "application/json" for r in dbx.api.requests_to("/2/files/*"))
    assert dbx.violations == []


def test_resets_without_end_are_unavailable(dbx: DropboxFake, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(dbx, {f"/P/{n}.jpg": b"x" for n in range(3)})
    monkeypatch.setattr(dropbox, "PAGE_LIMIT", 1)
    dbx.api.fail_next(409, {"error_summary": "reset/..", "error": {".tag": "reset"}}, times=99,
                      path="/2/files/list_folder/continue")
    with pytest.raises(SourceUnavailable, match="reset the listing cursor 4 times in a row"):
        listing(dbx, {"path": "/P"})


def test_a_long_retry_after_is_announced_and_waited_not_spun(dbx: DropboxFake) -> None:
    dbx.add_file("/Photos/a.jpg", b"a")
    dbx.fail_next_rate_limit(retry_after=180, path="/2/files/list_folder")
    warnings: list[str] = []
    controller = make_controller(dbx, {"path": "/Photos"}, policy=RetryPolicy(base=0.001, cap=0.01))
    # the user is told; then the run is interrupted during the wait (Ctrl-C): it ends at once, nothing resent
    controller.context.warn = lambda text: (warnings.append(text), controller.context.cancel.set())
    with pytest.raises(Cancelled):
        list(controller.list_assets())
    controller.close()
    assert warnings == [f"HTTP 429 from 127.0.0.1:{dbx.api.port}; waiting 180 s before retrying"]
    assert len(dbx.api.requests_to("/2/files/list_folder")) == 1


@pytest.mark.parametrize("retry_after", [42, 1, 0])
def test_a_retry_after_only_in_the_json_body_is_honoured(dbx: DropboxFake, retry_after: int) -> None:
    """No Retry-After header: the body's retry_after (auth.stone RateLimitError) is the wait, not the backoff
    policy's (here 30 s or more, which would be announced and then interrupted)."""
    dbx.add_file("/Photos/a.jpg", b"a")
    body = {"error_summary": "too_many_requests/..",
            "error": {"reason": {".tag": "too_many_requests"}, "retry_after": retry_after}}
    dbx.api.fail_next(429, body, path="/2/files/list_folder")
    waits: list[str] = []
    controller = make_controller(dbx, {"path": "/Photos"}, policy=RetryPolicy(base=60, cap=64))
    controller.http.on_wait = lambda seconds, reason: (waits.append(f"{seconds:.0f}"),
                                                       controller.context.cancel.set())
    started = time.monotonic()
    try:
        if retry_after >= 2:  # announced (then interrupted, so the test does not wait 42 s)
            with pytest.raises(Cancelled):
                list(controller.list_assets())
        else:
            assert [a.path for a in controller.list_assets()] == ["a.jpg"]
    finally:
        controller.close()
    assert waits == ([str(retry_after)] if retry_after >= 2 else [])
    assert len(dbx.api.requests_to("/2/files/list_folder")) == (1 if retry_after >= 2 else 2)
    if retry_after == 1:
        assert time.monotonic() - started >= 1.0  # waited as asked, not resent at once


def test_transfer_is_the_download_post_with_an_ascii_header(dbx: DropboxFake) -> None:
    populate(dbx, PHOTOS)
    auth = FakeBearer(dbx.issue_token)
    controller = make_controller(dbx, {"path": "/Photos"}, auth=auth)
    assets = {a.path: a for a in controller.list_assets()}
    unicode_path = "\u00dcml\u00e4ut/gr\u00fcn \U0001f33f #1.jpg"
    transfer = controller.transfer(assets[unicode_path])
    assert (transfer.method, transfer.url, transfer.body) == ("POST", f"{dbx.content_url}/2/files/download", b"")
    assert transfer.auth is auth and transfer.resumable and "Content-Type" not in transfer.headers
    arg = transfer.headers["Dropbox-API-Arg"]
    assert arg.isascii() and "\\ud83c\\udf3f" in arg  # providers.md 2.4: \\uXXXX escapes, surrogate pairs
    assert json.loads(arg) == {"path": "/photos/\u00fcml\u00e4ut/gr\u00fcn \U0001f33f #1.jpg"}
    for path, asset in assets.items():
        status, data, error = attempt(controller.transfer(asset))
        assert (status, data, error) == (200, PHOTOS["/Photos/" + path], None)
        hasher = new_hasher(CONTENT_HASH)
        hasher.update(data)
        assert asset.checksum is not None and hasher.hexdigest() == asset.checksum.value  # what the engine checks
    b_png = PHOTOS["/Photos/b.png"]
    assert attempt(controller.transfer(assets["b.png"]), 100)[:2] == (206, b_png[100:])  # Range is honoured
    controller.close()
    assert dbx.violations == []


def test_download_errors_become_transfer_errors(dbx: DropboxFake) -> None:
    dbx.add_file("/Photos/a.jpg", b"a")
    dbx.add_file("/Photos/doc.jpg", b"doc")
    controller = make_controller(dbx, {"path": "/Photos"})
    assets = {a.path: a for a in controller.list_assets()}
    transfer = controller.transfer(assets["a.jpg"])

    def refused(status: int, body: Any, headers: dict[str, str] | None = None, times: int = 1) -> TransferError | None:
        dbx.content.fail_next(status, body, headers, times=times, path="/2/files/download")
        code, _, error = attempt(transfer)
        assert code == status
        return error

    rate = {"error_summary": "too_many_requests/..",
            "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 42}}
    error = refused(429, rate)
    assert error is not None and error.retry and error.retry_after == 42.0  # only in the body
    error = refused(429, "slow down", {"Retry-After": "3", "Content-Type": "text/plain"})
    assert error is not None and error.retry and error.retry_after == 3.0
    error = refused(429, "slow down", {"Content-Type": "text/plain"})
    assert error is not None and error.retry and error.retry_after is None  # the engine's backoff then
    for status in (500, 503, 408):
        error = refused(status, "upstream")
        assert error is not None and error.retry
    expired = {"error_summary": "expired_access_token/..", "error": {".tag": "expired_access_token"}}
    assert refused(401, expired, times=2) is None  # after one refresh (fetch_transfer's, as the engine's)
    error = refused(401, {"error_summary": "missing_scope/..",
                          "error": {".tag": "missing_scope", "required_scope": "files.content.read"}}, times=2)
    assert error is not None and error.auth and "Permissions tab" in error.message
    error = refused(400, 'Error in call to API function "files/download": oops', {"Content-Type": "text/plain"})
    assert error is not None and not error.retry and "malformed" in error.message and "oops" in error.message
    error = refused(403, {"error_summary": "no_permission/..", "error": {".tag": "no_permission"}})
    assert error is not None and not error.retry and error.message == "Dropbox answered HTTP 403: no_permission/.."

    dbx.delete("/Photos/a.jpg")  # moved or deleted since the listing: that file fails, with Dropbox's summary
    code, _, error = attempt(transfer)
    assert code == 409 and error is not None and not error.retry
    assert error.message == "Dropbox: path/not_found/.. (moved or deleted since the listing)"
    dbx.add_file("/Photos/doc.jpg", b"doc", is_downloadable=False)
    code, _, error = attempt(controller.transfer(assets["doc.jpg"]))
    assert code == 409 and error is not None and "export only" in error.message
    controller.close()


GARBAGE_PAGES = [
    (b"<html>502</html>", "invalid JSON"),
    (b'{"entries": [], "cursor": "c"', "invalid JSON"),  # cut short, Content-Length and all
    (b"[]", "unexpected shape (the document:"),
    (b'{"entries": [], "cursor": "c"}', "unexpected shape (has_more:"),
    (b'{"entries": {}, "cursor": "c", "has_more": false}', "unexpected shape (entries:"),
    (b'{"entries": [7], "cursor": "c", "has_more": false}', "unexpected shape (entries.0:"),
    (b'{"entries": [{"name": "a.jpg"}], "cursor": "c", "has_more": false}', "unexpected shape (entries.0..tag:"),
    (b'{"entries": [{".tag": "file", "size": "12"}], "cursor": "c", "has_more": false}', "entries.0.size:"),
    (b'{"entries": [{".tag": "file", "size": -1}], "cursor": "c", "has_more": false}', "entries.0.size:"),
    (b'{"entries": [{".tag": "file", "path_lower": 5}], "cursor": "c", "has_more": false}', "path_lower:"),
    (b'{"entries": [], "cursor": "c", "has_more": "yes"}', "unexpected shape (has_more:"),
]


@pytest.mark.parametrize(("body", "expected"), GARBAGE_PAGES)
def test_a_garbage_page_is_source_unavailable_naming_the_route(dbx: DropboxFake, body: bytes,
                                                               expected: str) -> None:
    dbx.add_file("/Photos/a.jpg", b"a")
    dbx.api.fail_next(200, body, {"Content-Type": "application/json"}, path="/2/files/list_folder")
    with pytest.raises(SourceUnavailable) as caught:
        listing(dbx, {"path": "/Photos"})
    message = str(caught.value)
    assert message.startswith("contract: Dropbox answered files/list_folder with ") and expected in message


def test_a_garbage_continue_page_and_a_page_loop(dbx: DropboxFake, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(dbx, {f"/P/{n}.jpg": b"x" for n in range(3)})
    monkeypatch.setattr(dropbox, "PAGE_LIMIT", 1)
    dbx.api.fail_next(200, b'{"entries": [], "cursor": 1, "has_more": true}', path="/2/files/list_folder/continue")
    with pytest.raises(SourceUnavailable, match="files/list_folder/continue with .*cursor:"):
        listing(dbx, {"path": "/P"})
    looping = {"entries": [], "cursor": "same", "has_more": True}
    dbx.api.fail_next(200, looping, times=2, path="/2/files/list_folder/continue")
    with pytest.raises(SourceUnavailable, match="pages loop or lack a cursor"):
        listing(dbx, {"path": "/P"})


@pytest.mark.parametrize(("status", "body", "expected"), [
    (403, {"error_summary": "no_permission/..", "error": {".tag": "no_permission"}},
     "denied access for files/list_folder: HTTP 403: no_permission/.."),
    (422, {"error_summary": "invalid_root/..", "error": {".tag": "invalid_root"}},
     "files/list_folder: HTTP 422: invalid_root/.."),
    (418, b"<html>\n<b>teapot</b>\x1b[31m</html>", "files/list_folder: HTTP 418: <html> <b>teapot</b> [31m</html>"),
    (409, {"error_summary": "path/restricted_content/..", "error": {".tag": "path", "path": {".tag": "x"}}},
     "failed for '/Photos': HTTP 409 path/restricted_content/.."),
    (409, b"not json", "failed for '/Photos': HTTP 409 not json"),
    (400, b"Error in call to API function: bad", "malformed (a pixsrc bug; please report it): Error in call"),
    (500, b"", "files/list_folder: HTTP 500"),
    (429, b"", "HTTP 429 (still rate-limited after retrying)"),
])
def test_unexpected_statuses_are_source_unavailable_naming_route_status_and_reason(
        dbx: DropboxFake, status: int, body: Any, expected: str) -> None:
    dbx.add_file("/Photos/a.jpg", b"a")
    dbx.api.fail_next(status, body, times=99, path="/2/files/list_folder")
    with pytest.raises(SourceUnavailable, match="^contract: ") as caught:
        listing(dbx, {"path": "/Photos"})
    assert expected in str(caught.value) and "\x1b" not in str(caught.value)
    retried = status in (429, 500)
    assert len(dbx.api.requests_to("/2/files/list_folder")) == (FAST.retries + 1 if retried else 1)


def test_asked_to_wait_too_long_is_unavailable(dbx: DropboxFake) -> None:
    dbx.add_file("/Photos/a.jpg", b"a")
    dbx.fail_next_rate_limit(retry_after=86400, path="/2/files/list_folder")
    with pytest.raises(SourceUnavailable, match="files/list_folder: POST .*asked to retry after 86400 s"):
        listing(dbx, {"path": "/Photos"})


def test_credential_refused_for_good_is_auth_required(dbx: DropboxFake) -> None:
    dbx.add_file("/Photos/a.jpg", b"a")
    dbx.api.fail_next(401, {"error_summary": "missing_scope/..",
                            "error": {".tag": "missing_scope", "required_scope": "files.metadata.read"}},
                      times=2, path="/2/files/list_folder")
    with pytest.raises(AuthRequired, match="lacks a permission for files/list_folder") as caught:
        listing(dbx, {"path": "/Photos"})
    assert caught.value.hint is not None and "Permissions tab" in caught.value.hint
    assert len(dbx.api.requests_to("/2/files/list_folder")) == 2  # one refresh, then it is the user's turn


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
