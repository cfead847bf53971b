"""Credentials: the real keyrings.alt backend, env overrides, logout, no keyring, the opt-in file
store, and a keyring that hangs."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.cli import run, run_subprocess

TESTS = Path(__file__).resolve().parents[1]
SECRET = "kr-9f8e7d6c5b4a-SECRET"
FAIL_BACKEND = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


class Gallery:
    """A JSON-index gallery that wants ``Authorization: Bearer <token>``; records what it was sent."""

    PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10

    def __init__(self) -> None:
        self.token = SECRET
        self.seen: list[str | None] = []
        gallery = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                auth = self.headers.get("Authorization")
                gallery.seen.append(auth)
                if auth != f"Bearer {gallery.token}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/":
                    body = json.dumps([{"path": "a.png", "size": len(Gallery.PNG)}]).encode()
                    kind = "application/json"
                else:
                    body, kind = Gallery.PNG, "image/png"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gallery() -> Iterator[Gallery]:
    server = Gallery()
    yield server
    server.close()


@pytest.fixture
def source(gallery: Gallery, config_file: Path) -> str:
    result = run(
        "add", "remote-gallery", "--name", "Gallery", "--set", f"url={gallery.url}", "--set", "index=json"
    )
    assert result.exit_code == 0, result.stderr
    return "gallery"


def no_secret_in(*outputs: str) -> None:
    for output in outputs:
        assert SECRET not in output


def login(source_id: str, secret: str = SECRET, *extra: str, env: dict[str, str] | None = None):
    return run_subprocess("auth", "login", source_id, "--api-key-stdin", *extra, input=secret + "\n", env=env)


def keyring_file(isolated: Path) -> Path:
    return isolated / "home" / ".local" / "share" / "python_keyring" / "keyring_pass.cfg"


# -- the real keyring backend ---------------------------------------------------------------------


def test_login_stores_in_the_keyring_and_status_never_shows_it(
    source: str, isolated: Path, config_file: Path
) -> None:
    result = login(source)
    assert result.returncode == 0, result.stderr
    assert "stored the credential of 'gallery' in keyring keyrings.alt.file.PlaintextKeyring" in result.stderr
    assert keyring_file(isolated).is_file()
    import keyring

    assert keyring.get_password("pixsrc", "gallery") == SECRET

    status = run_subprocess("auth", "status", "--json")
    assert status.returncode == 0
    (row,) = json.loads(status.stdout)
    stored_at = row.pop("stored_at")
    assert row == {
        "source": "gallery",
        "kind": "api-key",
        "status": "ok",
        "stored_in": "keyring keyrings.alt.file.PlaintextKeyring",
        "detail": None,
        "age_days": 0.0,
    }
    assert abs(datetime.strptime(stored_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() - time.time()) < 60
    text = run_subprocess("auth", "status", "gallery")
    assert text.stdout == (f"gallery: api-key: ok (keyring keyrings.alt.file.PlaintextKeyring)\n"
                           f"    key age: 0.0 days (stored {stored_at})\n")
    show = run_subprocess("show", "gallery", "--json")
    no_secret_in(
        result.stdout,
        result.stderr,
        status.stdout,
        status.stderr,
        text.stdout,
        text.stderr,
        show.stdout,
        show.stderr,
        config_file.read_text(),
    )


def test_fetch_sends_the_stored_key(source: str, gallery: Gallery, tmp_path: Path) -> None:
    unauth = run_subprocess("fetch", source, "--dest", str(tmp_path / "out"))
    assert unauth.returncode == 3
    assert "pixsrc auth login gallery" in unauth.stderr
    assert login(source).returncode == 0
    result = run_subprocess("fetch", source, "--dest", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a.png").read_bytes() == Gallery.PNG
    assert gallery.seen[-1] == f"Bearer {SECRET}"
    no_secret_in(result.stdout, result.stderr, unauth.stderr)


def test_env_var_overrides_the_keyring(source: str, gallery: Gallery, tmp_path: Path) -> None:
    assert login(source).returncode == 0
    env = {"PIXSRC_AUTH_GALLERY": "from-the-environment"}
    status = run_subprocess("auth", "status", source, "--json", env=env)
    assert json.loads(status.stdout)[0]["stored_in"] == "env PIXSRC_AUTH_GALLERY"
    assert "from-the-environment" not in status.stdout + status.stderr
    gallery.token = "from-the-environment"
    result = run_subprocess("fetch", source, "--dest", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    assert set(gallery.seen) == {"Bearer from-the-environment"}


def test_env_var_name_for_dashed_ids(config_file: Path) -> None:
    assert (
        run("add", "remote-gallery", "--name", "Client Assets", "--set", "url=https://g.example/").exit_code
        == 0
    )
    status = run_subprocess(
        "auth", "status", "client-assets", "--json", env={"PIXSRC_AUTH_CLIENT_ASSETS": "x"}
    )
    assert json.loads(status.stdout)[0]["stored_in"] == "env PIXSRC_AUTH_CLIENT_ASSETS"


def test_logout_deletes(source: str) -> None:
    assert login(source).returncode == 0
    result = run_subprocess("auth", "logout", source)
    assert result.returncode == 0
    assert "deleted the credential of 'gallery' from keyring" in result.stderr
    import keyring

    assert keyring.get_password("pixsrc", "gallery") is None
    status = json.loads(run_subprocess("auth", "status", source, "--json").stdout)[0]
    assert status["status"] == "missing" and status["stored_in"] is None
    again = run_subprocess("auth", "logout", source)
    assert again.returncode == 0 and "no stored credential for 'gallery'" in again.stderr


def test_logout_mentions_a_remaining_env_var(source: str) -> None:
    result = run_subprocess("auth", "logout", source, env={"PIXSRC_AUTH_GALLERY": "x"})
    assert result.returncode == 0
    assert "PIXSRC_AUTH_GALLERY is still set" in result.stderr


def test_login_rejections(source: str, config_file: Path) -> None:
    assert run("add", "local-fs", "--name", "Local", "--set", "path=/tmp").exit_code == 0
    none = login("local")
    assert none.returncode == 2 and "needs no credential" in none.stderr
    empty = run_subprocess("auth", "login", source, "--api-key-stdin", input="\n")
    assert empty.returncode == 2 and "the key is empty" in empty.stderr
    no_tty = run_subprocess("auth", "login", source)
    assert no_tty.returncode == 2 and "--api-key-stdin" in no_tty.stderr
    bad_store = login(source, SECRET, "--store", "vault")
    assert bad_store.returncode == 2 and "--store 'vault'" in bad_store.stderr
    import keyring

    assert keyring.get_password("pixsrc", "gallery") is None


# -- no keyring -----------------------------------------------------------------------------------


def test_no_keyring_exits_3_naming_both_ways_out(source: str, state_path: Path) -> None:
    result = login(source, env=FAIL_BACKEND)
    assert result.returncode == 3
    assert "error: no usable OS keyring" in result.stderr
    assert "PIXSRC_AUTH_GALLERY" in result.stderr
    assert "pixsrc auth login gallery --store file" in result.stderr
    assert not (state_path / "credentials.json").exists()  # never a silent plaintext fallback
    no_secret_in(result.stdout, result.stderr)


def test_file_store_is_mode_0600_and_works(
    source: str, gallery: Gallery, state_path: Path, tmp_path: Path
) -> None:
    result = login(source, SECRET, "--store", "file", env=FAIL_BACKEND)
    assert result.returncode == 0, result.stderr
    store = state_path / "credentials.json"
    assert f"in file {store}" in result.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert json.loads(store.read_text()) == {"gallery": SECRET}

    status = run_subprocess("auth", "status", source, "--json", env=FAIL_BACKEND)
    assert json.loads(status.stdout)[0]["stored_in"] == f"file {store}"
    fetched = run_subprocess("fetch", source, "--dest", str(tmp_path / "out"), env=FAIL_BACKEND)
    assert fetched.returncode == 0, fetched.stderr
    assert gallery.seen[-1] == f"Bearer {SECRET}"
    no_secret_in(status.stdout, fetched.stdout, fetched.stderr)

    out = run_subprocess("auth", "logout", source, env=FAIL_BACKEND)
    assert out.returncode == 0, out.stderr
    assert f"deleted the credential of 'gallery' from file {store}" in out.stderr
    assert json.loads(store.read_text()) == {}


def test_token_store_env_selects_the_file(source: str, state_path: Path) -> None:
    result = login(source, env={**FAIL_BACKEND, "PIXSRC_TOKEN_STORE": "file"})
    assert result.returncode == 0, result.stderr
    assert json.loads((state_path / "credentials.json").read_text()) == {"gallery": SECRET}


def test_keyring_login_clears_a_shadowing_file_entry(source: str, state_path: Path) -> None:
    assert login(source, "old-file-secret", "--store", "file").returncode == 0
    assert login(source).returncode == 0
    assert json.loads((state_path / "credentials.json").read_text()) == {}
    import keyring

    assert keyring.get_password("pixsrc", "gallery") == SECRET


# -- a keyring that hangs -------------------------------------------------------------------------


def hanging_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PYTHON_KEYRING_BACKEND": "support.keyring_hang.HangingKeyring",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "PIXSRC_KEYRING_TIMEOUT": "1",
        "KEYRING_HANG_CALLS": str(tmp_path / "hang-calls.txt"),
    }


@pytest.mark.parametrize(
    "command",
    [
        ["auth", "login", "gallery", "--api-key-stdin"],
        ["fetch", "gallery", "--dest", "{tmp}/out"],
    ],
)
def test_hanging_keyring_times_out_with_exit_3(source: str, tmp_path: Path, state_path: Path,
                                              command: list[str]) -> None:
    # as if the key had been stored in this keyring earlier (pixsrc only asks the keyring then)
    state_path.mkdir(parents=True, exist_ok=True)
    (state_path / "credentials-index.json").write_text('["gallery"]')
    started = time.monotonic()
    args = [arg.format(tmp=tmp_path) for arg in command]
    result = run_subprocess(*args, input=SECRET + "\n", env=hanging_env(tmp_path), timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert "the keyring did not answer within 1 s" in result.stderr
    assert "PIXSRC_AUTH_GALLERY" in result.stderr and "--store file" in result.stderr
    assert elapsed < 15  # the timeout is 1 s; the rest is interpreter start-up
    calls = (tmp_path / "hang-calls.txt").read_text().splitlines()
    assert calls and calls[0].split()[1:] == ["pixsrc", "gallery"]  # the backend was really reached
    no_secret_in(result.stdout, result.stderr)


def test_hanging_keyring_status_reports_an_error(source: str, tmp_path: Path, state_path: Path) -> None:
    state_path.mkdir(parents=True, exist_ok=True)
    (state_path / "credentials-index.json").write_text('["gallery"]')  # a key pixsrc stored there
    result = run_subprocess("auth", "status", "--json", env=hanging_env(tmp_path), timeout=60)
    assert result.returncode == 0
    row = json.loads(result.stdout)[0]
    assert row["status"] == "error" and "did not answer within 1 s" in row["detail"]


# -- sources that need no credential never wait for a keyring -----------------------------------


@pytest.mark.parametrize("backend", ["fail", "hang"])
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["auth", "status"], "local: needs no credential"),
        (["auth", "status", "gallery", "--json"], "optional: none needed unless the source asks for one"),
        (["auth", "logout", "gallery"], "no stored credential for 'gallery'"),
        (["auth", "logout", "local"], "source 'local' (local-fs) needs no credential"),
        (["auth", "check"], "local: ok: needs no credential"),
        (["show", "gallery"], "api-key: missing (optional: none needed"),
        (["remove", "gallery", "--yes"], "removed 'gallery'"),
        (["remove", "local", "--yes"], "removed 'local'"),
    ],
)
def test_no_credential_sources_never_ask_the_keyring(
    source: str, tmp_path: Path, backend: str, command: list[str], expected: str
) -> None:
    """local-fs needs no credential; the public gallery's optional key was never stored. Neither may
    wait for (or fail on) a keyring that hangs or does not exist."""
    assert run("add", "local-fs", "--name", "Local", "--set", f"path={tmp_path}").exit_code == 0
    env = hanging_env(tmp_path) if backend == "hang" else dict(FAIL_BACKEND)
    started = time.monotonic()
    result = run_subprocess(*command, env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout + result.stderr
    assert "keyring" not in result.stdout + result.stderr
    assert not (tmp_path / "hang-calls.txt").exists()  # the hanging backend was never reached
    assert elapsed < 10  # a keyring call would have waited for its 1 s timeout, then failed


def test_status_of_sources_without_a_credential(source: str, tmp_path: Path) -> None:
    assert run("add", "local-fs", "--name", "Local", "--set", f"path={tmp_path}").exit_code == 0
    result = run_subprocess("auth", "status", env=FAIL_BACKEND)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "gallery: api-key: missing (optional: none needed unless the source asks for one)\n"
        "local: needs no credential\n"
    )
    logout = run_subprocess("auth", "logout", "local", env=FAIL_BACKEND)
    assert logout.returncode == 0
    assert logout.stderr == "source 'local' (local-fs) needs no credential; nothing to delete\n"


@pytest.mark.parametrize(("value", "expected"), [("3s", 10.0), ("", 10.0), ("-1", 10.0), ("nan", 10.0), ("2.5", 2.5)])
def test_a_bad_keyring_timeout_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch, value: str,
                                                          expected: float) -> None:
    """PIXSRC_KEYRING_TIMEOUT=3s ended every command that asks the keyring in "internal error"."""
    from pixsrc import tokens

    monkeypatch.setenv("PIXSRC_KEYRING_TIMEOUT", value)
    assert tokens.keyring_timeout() == expected
    assert run("auth", "status").exit_code == 0


def test_after_a_hung_keyring_call_others_fail_at_once_until_it_returns() -> None:
    """A keyring that hangs leaves its worker thread stuck: later calls must not each wait the full
    timeout again (nor pile up threads), and once the stuck call returns the keyring is used again."""
    from pixsrc import tokens

    release = threading.Event()
    calls: list[str] = []

    def hang() -> str:
        calls.append("hang")
        release.wait()
        return "late"

    with pytest.raises(tokens.KeyringUnavailable, match="did not answer within 0.05 s"):
        tokens._keyring_call("src", hang, timeout=0.05)
    with pytest.raises(tokens.KeyringUnavailable, match="earlier keyring call has not returned"):
        tokens._keyring_call("src", lambda: calls.append("second") or "x", timeout=30)
    assert calls == ["hang"]  # the second call never reached the keyring
    release.set()
    for thread in threading.enumerate():
        if thread.name == "pixsrc-keyring-hung":
            thread.join(10)
    assert tokens._keyring_call("src", lambda: "answer", timeout=30) == "answer"


def test_keyring_calls_in_progress_on_other_threads_do_not_count_as_hung() -> None:
    """watch asks the keyring from its waiter threads while a fetch asks it on the main thread."""
    from pixsrc import tokens

    inside, release = threading.Event(), threading.Event()
    answers: list[str] = []

    def slow() -> str:
        inside.set()
        release.wait(10)
        return "slow"

    other = threading.Thread(target=lambda: answers.append(tokens._keyring_call("a", slow, timeout=30)))
    other.start()
    assert inside.wait(10)  # a call is in progress on the other thread now
    try:
        assert tokens._keyring_call("b", lambda: "quick", timeout=30) == "quick"
    finally:
        release.set()
        other.join(10)
    assert answers == ["slow"]
