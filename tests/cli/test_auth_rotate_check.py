"""`auth rotate` (an API key is checked against the source before it replaces the stored one), key
ages in `auth status`, and the CI gate `auth check`: real keyring (keyrings.alt), real HTTP servers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keyring
import pytest
from fakes.pinterest import PinterestFake
from support.cli import run, run_subprocess
from support.gallery_server import GalleryServer

from pixsrc import oauth, tokens

OLD = "old-key-3c1f9e2a7b"
NEW = "new-key-8d4b6a0f5e"
WRONG = "wrong-key-1a2b3c4d"
FAIL_BACKEND = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
DAY = 86400.0


@pytest.fixture
def gallery(tmp_path: Path, config_file: Path) -> Iterator[GalleryServer]:
    """A JSON-index gallery that wants the OLD key, configured as source "gallery"."""
    with GalleryServer(tmp_path / "served") as server:
        server.write("a.png", b"\x89PNG one")
        server.require_bearer(OLD)
        added = run("add", "remote-gallery", "--name", "Gallery", "--set", f"url={server.index_url}",
                    "--set", "index=json")
        assert added.exit_code == 0, added.stderr
        yield server


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Ran:  # noqa: A002
    """The real entry point: in-process (fast), or as a subprocess when the test sets its environment."""
    if env is not None:
        done = run_subprocess(*args, input=input, env=env)
        return Ran(done.returncode, done.stdout, done.stderr)
    result = run(*args, input=input)
    return Ran(result.exit_code, result.stdout, result.stderr)


def login(key: str, *extra: str, env: dict[str, str] | None = None) -> Ran:
    result = cli("auth", "login", "gallery", "--api-key-stdin", *extra, input=key + "\n", env=env)
    assert result.returncode == 0, result.stderr
    return result


def rotate(key: str, *extra: str, env: dict[str, str] | None = None) -> Ran:
    return cli("auth", "rotate", "gallery", "--api-key-stdin", *extra, input=key + "\n", env=env)


def bearers(server: GalleryServer) -> list[str | None]:
    return [r.headers.get("authorization") for r in server.requests]


def no_key_in(*outputs: str) -> None:
    for output in outputs:
        for key in (OLD, NEW, WRONG):
            assert key not in output


def fetches(tmp_path: Path, name: str, env: dict[str, str] | None = None) -> None:
    result = cli("fetch", "gallery", "--dest", str(tmp_path / name), env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / name / "a.png").read_bytes() == b"\x89PNG one"


# -- rotate ------------------------------------------------------------------------------------------


def test_rotate_checks_the_new_key_first_then_replaces_the_old_one(gallery: GalleryServer, tmp_path: Path) -> None:
    login(OLD)
    gallery.require_bearer(NEW)  # the provider issued NEW (and will stop taking OLD)
    gallery.clear_requests()
    result = rotate(NEW)
    assert result.returncode == 0, result.stderr
    assert "checked: the source answered a listing with it" in result.stderr
    assert "replaced the key of 'gallery' in keyring keyrings.alt.file.PlaintextKeyring" in result.stderr
    assert bearers(gallery) == [f"Bearer {NEW}"]  # the check used the new key, not the stored one
    assert keyring.get_password("pixsrc", "gallery") == NEW
    fetches(tmp_path, "out")
    no_key_in(result.stdout, result.stderr)


def test_a_refused_key_keeps_the_old_one(gallery: GalleryServer, tmp_path: Path, state_path: Path) -> None:
    login(OLD)
    before = json.loads((state_path / "credentials-meta.json").read_text())
    gallery.clear_requests()
    result = rotate(WRONG)
    assert result.returncode == 3, result.stderr
    assert "the new key was refused" in result.stderr and "the stored key is unchanged" in result.stderr
    assert bearers(gallery) == [f"Bearer {WRONG}"]
    assert keyring.get_password("pixsrc", "gallery") == OLD
    assert json.loads((state_path / "credentials-meta.json").read_text()) == before  # its age too
    fetches(tmp_path, "out")  # the old key still works
    no_key_in(result.stdout, result.stderr)


def test_an_unreachable_source_keeps_the_old_key(gallery: GalleryServer) -> None:
    login(OLD)
    gallery.stop()
    result = rotate(NEW)
    assert result.returncode == 4, result.stderr
    assert "could not check the new key" in result.stderr and "the stored key is unchanged" in result.stderr
    assert keyring.get_password("pixsrc", "gallery") == OLD


def test_rotate_keeps_the_store_of_the_old_key(gallery: GalleryServer, state_path: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring.core

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_BACKEND["PYTHON_KEYRING_BACKEND"])
    keyring.core._keyring_backend = None  # no keyring at all: the file store is where the key lives
    login(OLD, "--store", "file")
    gallery.require_bearer(NEW)
    result = rotate(NEW)
    assert result.returncode == 0, result.stderr
    assert f"in file {state_path / 'credentials.json'}" in result.stderr
    assert json.loads((state_path / "credentials.json").read_text()) == {"gallery": NEW}
    fetches(tmp_path, "out")


@pytest.mark.parametrize(("first", "move_to"), [("file", "keyring"), ("keyring", "file")])
def test_rotate_store_moves_the_key_and_leaves_no_copy(
    gallery: GalleryServer, state_path: Path, first: str, move_to: str
) -> None:
    login(OLD, "--store", first)
    gallery.require_bearer(NEW)
    result = rotate(NEW, "--store", move_to)
    assert result.returncode == 0, result.stderr
    in_file = json.loads((state_path / "credentials.json").read_text()).get("gallery")
    in_keyring = keyring.get_password("pixsrc", "gallery")
    assert (in_file, in_keyring) == ((None, NEW) if move_to == "keyring" else (NEW, None))


def test_rotate_refusals(gallery: GalleryServer, tmp_path: Path, config_file: Path) -> None:
    nothing = rotate(NEW)
    assert nothing.returncode == 2 and "has no stored key to rotate" in nothing.stderr
    assert "pixsrc auth login gallery" in nothing.stderr
    env_only = rotate(NEW, env={"PIXSRC_AUTH_GALLERY": OLD})
    assert env_only.returncode == 2 and "comes from PIXSRC_AUTH_GALLERY; change it there" in env_only.stderr
    assert run("add", "local-fs", "--name", "Local", "--set", f"path={tmp_path}").exit_code == 0
    local = cli("auth", "rotate", "local", "--api-key-stdin", input=NEW)
    assert local.returncode == 2 and "needs no credential" in local.stderr
    assert run("add", "pinterest", "--id", "pins", "--name", "Pins", "--no-input").exit_code == 0
    pins = cli("auth", "rotate", "pins")  # refused before any key is asked for
    assert pins.returncode == 2 and "signs in with OAuth" in pins.stderr and "pixsrc auth login pins" in pins.stderr
    login(OLD)
    empty = rotate("")
    assert empty.returncode == 2 and "the key is empty" in empty.stderr
    no_tty = cli("auth", "rotate", "gallery")
    assert no_tty.returncode == 2 and "--api-key-stdin" in no_tty.stderr
    assert keyring.get_password("pixsrc", "gallery") == OLD
    assert gallery.requests == []  # none of these asked the source anything


def test_rotate_warns_when_the_environment_still_overrides(gallery: GalleryServer) -> None:
    login(OLD)
    gallery.require_bearer(NEW)
    result = rotate(NEW, env={"PIXSRC_AUTH_GALLERY": OLD})
    assert result.returncode == 0, result.stderr
    assert "PIXSRC_AUTH_GALLERY is set in this environment and overrides the stored key" in result.stderr
    assert keyring.get_password("pixsrc", "gallery") == NEW


def test_rotate_asks_with_a_hidden_prompt_on_a_terminal(gallery: GalleryServer) -> None:
    import os

    pexpect = pytest.importorskip("pexpect")
    from support.cli import pixsrc_exe

    login(OLD)
    gallery.require_bearer(NEW)
    exe, *pre = pixsrc_exe()
    child = pexpect.spawn(exe, [*pre, "auth", "rotate", "gallery"], encoding="utf-8", timeout=30,
                          env={**os.environ, "TERM": "dumb", "NO_COLOR": "1"})
    child.expect_exact("New API key (sent as a Bearer token):")
    child.sendline(NEW)
    child.expect(pexpect.EOF)
    shown = child.before
    child.close()
    assert child.exitstatus == 0, shown
    assert "replaced the key of 'gallery'" in shown
    assert NEW not in shown  # not echoed
    assert keyring.get_password("pixsrc", "gallery") == NEW


# -- key age ---------------------------------------------------------------------------------------


def status_row(source: str = "gallery") -> dict[str, Any]:
    result = run("auth", "status", source, "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    return dict(row)


def test_key_age_is_recorded_at_store_time(gallery: GalleryServer, state_path: Path) -> None:
    login(OLD)
    meta = state_path / "credentials-meta.json"
    # as if it had been stored ten days ago
    meta.write_text(json.dumps({"gallery": {"stored_at": time.time() - 10 * DAY}}))
    row = status_row()
    assert row["age_days"] == 10.0 and row["stored_at"].endswith("Z")
    assert "    key age: 10.0 days (stored " in run("auth", "status", "gallery").stdout
    gallery.require_bearer(NEW)
    assert rotate(NEW).returncode == 0
    assert status_row()["age_days"] == 0.0  # the new key is new
    assert OLD not in meta.read_text() and NEW not in meta.read_text()  # names and times only
    out = cli("auth", "logout", "gallery")
    assert out.returncode == 0
    assert json.loads(meta.read_text()) == {}


def test_keys_stored_before_ages_were_recorded_show_unknown(gallery: GalleryServer, state_path: Path) -> None:
    # what an earlier pixsrc left: the keyring entry and the index, no metadata
    keyring.set_password("pixsrc", "gallery", OLD)
    state_path.mkdir(parents=True, exist_ok=True)
    (state_path / "credentials-index.json").write_text('["gallery"]')
    row = status_row()
    assert (row["status"], row["stored_at"], row["age_days"]) == ("ok", None, None)
    assert run("auth", "status", "gallery").stdout.endswith("\n    key age: unknown\n")
    assert keyring.get_password("pixsrc", "gallery") == OLD  # the stored secret's format is untouched


def test_a_key_from_the_environment_has_no_age(gallery: GalleryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    login(OLD)
    monkeypatch.setenv("PIXSRC_AUTH_GALLERY", NEW)
    row = status_row()
    assert (row["stored_in"], row["age_days"]) == ("env PIXSRC_AUTH_GALLERY", None)


# -- check ---------------------------------------------------------------------------------------------


def add_oauth_sources(config_file: Path, extra_config: str = "") -> None:
    if extra_config:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(extra_config)
    assert run("add", "pinterest", "--id", "pins", "--name", "Pins", "--no-input").exit_code == 0
    assert run("add", "google-drive", "--id", "gd", "--name", "Drive", "--no-input").exit_code == 0


def store(source: str, provider: str, *, refresh: bool = True, access_expires_in: float | None = 3600,
          refresh_age: float | None = 0.0, refresh_expires_in: float | None = None) -> None:
    now = time.time()
    token_set = oauth.TokenSet(
        provider, f"at-{source}-secret", f"rt-{source}-secret" if refresh else None,
        now + access_expires_in if access_expires_in is not None else None, "scope", obtained_at=now - 60,
        refresh_obtained_at=now - refresh_age if refresh and refresh_age is not None else None,
        refresh_expires_at=now + refresh_expires_in if refresh_expires_in is not None else None)
    tokens.put(source, token_set.to_json())


def check(*args: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    result = run("auth", "check", *args, "--json")
    document = json.loads(result.stdout)
    assert document["schema"] == 1 and document["exit_code"] == result.exit_code
    assert document["ok"] == (result.exit_code == 0)
    assert "secret" not in result.stdout + result.stderr
    return result.exit_code, {row["source"]: row for row in document["sources"]}, result.stderr


def test_check_passes_when_every_credential_lasts_the_window(config_file: Path, tmp_path: Path) -> None:
    add_oauth_sources(config_file)
    assert run("add", "local-fs", "--name", "Local", "--set", f"path={tmp_path}").exit_code == 0
    store("pins", "pinterest", refresh_age=10 * DAY)  # 60-day refresh tokens: 50 days left
    store("gd", "google", access_expires_in=-DAY)  # access token long expired: a refresh fixes that
    code, rows, _ = check()
    assert code == 0
    assert {sid: row["status"] for sid, row in rows.items()} == {"pins": "ok", "gd": "ok", "local": "ok"}
    assert rows["pins"]["detail"].startswith("refresh token valid until ") and "(7w" in rows["pins"]["detail"]
    assert rows["pins"]["expires_at"] is not None
    assert rows["gd"]["detail"] == "refresh token without a known end" and rows["gd"]["expires_at"] is None
    assert rows["local"]["detail"] == "needs no credential"
    text = run("auth", "check")
    assert text.exit_code == 0
    assert "local: ok: needs no credential\n" in text.stdout


def test_check_fails_within_the_window(config_file: Path) -> None:
    add_oauth_sources(config_file)
    store("pins", "pinterest", refresh_age=10 * DAY)
    store("gd", "google")
    code, rows, _ = check("--min-validity", "51d")
    assert code == 3
    assert rows["pins"]["status"] == "expiring" and "run: pixsrc auth login pins" in rows["pins"]["detail"]
    assert rows["gd"]["status"] == "ok"
    assert check("pins", "--min-validity", "7w")[0] == 0


def test_the_providers_word_on_the_refresh_token_wins(config_file: Path) -> None:
    add_oauth_sources(config_file)
    store("pins", "pinterest", refresh_age=1 * DAY, refresh_expires_in=2 * DAY)
    code, rows, _ = check("pins")  # 72h by default
    assert (code, rows["pins"]["status"]) == (3, "expiring")
    assert check("pins", "--min-validity", "1d")[0] == 0
    store("pins", "pinterest", refresh_expires_in=-60)
    code, rows, _ = check("pins")
    assert (code, rows["pins"]["status"]) == (3, "expired")
    assert run("auth", "status", "pins", "--json").stdout.count('"status": "expired"') == 1


@pytest.mark.parametrize("field, value", [("refresh_expires_at", "2027-01-01"), ("refresh_obtained_at", "x"),
                                          ("expires_at", 1e300), ("refresh_token", 42), ("obtained_at", True)])
def test_a_hand_edited_credential_with_wrong_types_is_unreadable_not_an_internal_error(
        config_file: Path, field: str, value: Any) -> None:
    add_oauth_sources(config_file)
    stored = {"provider": "pinterest", "access_token": "at-7f3e9c1d", "refresh_token": "rt-7f3e9c1d",
              "expires_at": time.time() + 3600, "scope": "s", "obtained_at": time.time(), field: value}
    env = {"PIXSRC_AUTH_PINS": json.dumps(stored)}
    for args in (["auth", "check", "pins"], ["auth", "status", "pins"]):  # doctor shares the parse (no network here)
        result = run_subprocess(*args, env=env)
        assert "internal error" not in result.stderr + result.stdout, (args, result.stderr)
        assert re.search(r"unreadable|: invalid", result.stdout + result.stderr), (args, result.stdout)
        assert "7f3e9c1d" not in result.stdout + result.stderr


def test_a_testing_google_app_sets_its_refresh_token_lifetime(config_file: Path) -> None:
    add_oauth_sources(config_file, "[providers.google]\nrefresh_token_days = 7\n")
    store("gd", "google", refresh_age=6 * DAY)
    store("pins", "pinterest", refresh_age=0)
    code, rows, _ = check()
    assert (code, rows["gd"]["status"], rows["pins"]["status"]) == (3, "expiring", "ok")
    status = status_row("gd")
    assert status["refresh_expires_at"] is not None and status["status"] == "ok"
    store("gd", "google", refresh_age=8 * DAY)
    assert status_row("gd")["status"] == "expired"
    config_file.write_text(config_file.read_text().replace("refresh_token_days = 7", "refresh_token_days = 0"))
    bad = run("auth", "check")
    assert bad.exit_code == 2
    assert "gd: unavailable: providers.google.refresh_token_days: must be a positive number" in bad.stdout


def test_check_failures(config_file: Path, gallery: GalleryServer) -> None:
    add_oauth_sources(config_file)
    tokens.put("pins", "{not json")
    store("gd", "google", refresh=False)  # an access token for an hour, nothing to renew it with
    code, rows, stderr = check()
    assert code == 3
    assert rows["pins"]["status"] == "invalid" and "unreadable" in rows["pins"]["detail"]
    assert rows["gd"]["status"] == "expiring"
    assert rows["gd"]["detail"].startswith("no refresh token: the access token expires ")
    assert rows["gallery"]["status"] == "ok" and rows["gallery"]["detail"] == "no key stored (optional)"
    assert "2 of 3 credentials need attention" in stderr
    store("gd", "google", refresh=False, access_expires_in=None)  # a token without an end
    store("pins", "google")
    code, rows, _ = check()
    assert rows["gd"]["status"] == "ok"
    assert rows["pins"]["status"] == "invalid" and "is for 'google'" in rows["pins"]["detail"]
    tokens.delete("pins")
    code, rows, _ = check()
    assert (code, rows["pins"]["status"]) == (3, "missing")


def test_check_skips_disabled_sources_unless_named(config_file: Path) -> None:
    add_oauth_sources(config_file)
    store("gd", "google")
    assert run("disable", "pins").exit_code == 0
    code, rows, _ = check()
    assert (code, list(rows)) == (0, ["gd"])
    code, rows, _ = check("pins", "gd", "Drive")  # named: checked, once each
    assert (code, list(rows)) == (3, ["pins", "gd"])


def test_check_without_a_keyring(config_file: Path, gallery: GalleryServer, tmp_path: Path) -> None:
    add_oauth_sources(config_file)
    result = run_subprocess("auth", "check", "gallery", "pins", env=FAIL_BACKEND)
    assert result.returncode == 3
    assert result.stdout.startswith("gallery: ok: no key stored (optional)\npins: error: no usable OS keyring")


def test_check_usage_errors(config_file: Path) -> None:
    add_oauth_sources(config_file)
    bad = run("auth", "check", "--min-validity", "soon")
    assert bad.exit_code == 2 and "--min-validity 'soon': not a duration" in bad.stderr
    unknown = run("auth", "check", "nope")
    assert unknown.exit_code == 2


def test_check_online_asks_the_source(gallery: GalleryServer) -> None:
    login(OLD)
    gallery.clear_requests()
    code, rows, _ = check()
    assert (code, rows["gallery"]["status"]) == (0, "ok") and gallery.requests == []  # offline by default
    code, rows, _ = check("--online")
    assert (code, rows["gallery"]["status"]) == (0, "ok")
    assert rows["gallery"]["detail"].endswith("; the source answered a listing with it")
    assert bearers(gallery) == [f"Bearer {OLD}"]
    gallery.require_bearer(NEW)  # the key was revoked at the provider
    code, rows, _ = check("--online")
    assert (code, rows["gallery"]["status"]) == (3, "rejected")
    assert check()[0] == 0  # offline, nothing tells
    gallery.stop()
    code, rows, _ = check("--online")
    assert (code, rows["gallery"]["status"]) == (4, "unreachable")


@pytest.fixture
def pin(config_file: Path) -> Iterator[PinterestFake]:
    with PinterestFake() as fake:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(
            f'[providers.pinterest]\nclient_id = "{fake.oauth.client_id}"\ntoken_url = "{fake.token_url}"\n'
            f'api_base_url = "{fake.base_url}"\n')
        assert run("add", "pinterest", "--id", "pins", "--name", "Pins", "--no-input").exit_code == 0
        yield fake


def test_check_online_with_oauth(pin: PinterestFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXSRC_PINTEREST_CLIENT_SECRET", pin.oauth.client_secret or "")
    pin.add_board("Cats")
    answer = pin.oauth.issue_tokens(["boards:read", "pins:read"])
    tokens.put("pins", oauth._token_set("pinterest", answer).to_json())
    code, rows, _ = check("--online")
    assert (code, rows["pins"]["status"]) == (0, "ok")
    # the provider's own end of the refresh token (60 days), recorded at sign-in
    assert " (8w 3d left); the credential works (fakeuser)" in rows["pins"]["detail"]
    assert status_row("pins")["refresh_expires_at"] == rows["pins"]["expires_at"]
    pin.oauth.revoke(answer["refresh_token"])  # the user disconnected the app
    code, rows, _ = check("--online")
    assert (code, rows["pins"]["status"]) == (3, "rejected")
    assert "pixsrc auth login pins" in rows["pins"]["detail"]
    assert pin.violations == []
