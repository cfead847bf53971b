"""Issue 8, sign-in: a stuck local client, login CSRF by a pasted code, RFC 9207 `iss`, the Host
header, no keyring, and the secrets a $BROWSER child would inherit.

In-process cases drive `pixsrc.oauth.login` on a thread (tests/oauth/test_login.py's LoginRun) and
talk to its listener over real sockets; end-to-end cases run the real `pixsrc` executable against
oidc-provider, with headless Chromium (or a small script) as $BROWSER.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run_subprocess
from support.oidc import OidcServer, browser_env, run_browser, start_oidc_server
from test_login import LoginRun, public_table, settings, token_calls, write_config

from pixsrc import oauth
from pixsrc.errors import AuthRequired

pytest.importorskip("pixsrc_demo_plugin.oauth_types", reason="install tests/plugins/pixsrc-demo-plugin")
from pixsrc_demo_plugin.oauth_types import CONFIDENTIAL  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FAIL_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OidcServer]:
    with start_oidc_server(tmp_path) as running:
        yield running


def port_of(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port
    return port


def raw_request(port: int, request: bytes) -> bytes:
    """Send ``request`` as is and read the whole answer (the listener closes after one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- a slow local client ---------------------------------------------------------------------------

def slow_client(port: int) -> socket.socket:
    """A connection that sends half a request line and then nothing, and stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /callback")
    return sock


def test_a_stuck_connection_does_not_hold_the_timeout(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=1)
    with slow_client(port_of(run.callback)):
        started = time.monotonic()
        with pytest.raises(AuthRequired, match="no sign-in within 1 s"):
            run.result.result(15)  # before: shutdown() waited for the stuck handler, forever
        assert time.monotonic() - started < 8


def test_a_stuck_connection_does_not_block_the_browser_or_a_paste(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=20)
    with slow_client(port_of(run.callback)), slow_client(port_of(run.callback)):
        # the browser's redirect is answered at once, beside the stuck connections
        status, page = run.get(f"{run.callback}?error=access_denied&state={run.params['state']}")
        assert status == 200 and "access_denied" in page
        with pytest.raises(AuthRequired, match="access_denied"):
            run.result.result(10)

    read_end, write_end = os.pipe()
    run = LoginRun(settings(server), timeout=20, stdin=os.fdopen(read_end, "r"))
    state = run.params["state"]
    with slow_client(port_of(run.callback)):
        with os.fdopen(write_end, "w") as terminal:
            terminal.write(f"{run.callback}?error=access_denied&state={state}\n")
        started = time.monotonic()
        with pytest.raises(AuthRequired, match="access_denied"):
            run.result.result(15)
        assert time.monotonic() - started < 8


def test_a_stuck_connection_is_dropped_after_a_short_read_timeout(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=30)
    with slow_client(port_of(run.callback)) as sock:
        sock.settimeout(20)
        started = time.monotonic()
        assert sock.recv(1024) == b""  # the listener hung up on it (it did not wait forever)
        assert time.monotonic() - started < 15
    run.get(f"{run.callback}?error=access_denied&state={run.params['state']}")
    with pytest.raises(AuthRequired):
        run.result.result(10)


# -- a pasted bare code without PKCE (login CSRF) -------------------------------------------------

def confidential_settings(server: OidcServer) -> oauth.ProviderSettings:
    table = {**public_table(server), "client_id": server.confidential_client,
             "redirect_port": server.confidential_port}
    return oauth.settings_for(CONFIDENTIAL, {"demo-confidential": table})


def test_a_bare_code_is_refused_where_no_pkce_binds_it(server: OidcServer, monkeypatch: pytest.MonkeyPatch,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PIXSRC_DEMO_CONFIDENTIAL_CLIENT_SECRET", server.confidential_secret)
    read_end, write_end = os.pipe()
    run = LoginRun(confidential_settings(server), timeout=20, stdin=os.fdopen(read_end, "r"))
    state = run.params["state"]
    assert "code_challenge" not in run.params  # this provider has no PKCE
    with os.fdopen(write_end, "w") as terminal:
        terminal.write("attacker-code-1234\n")  # before: exchanged as is ("signed in ... as attacker")
        terminal.write(f"{run.callback}?error=access_denied&state={state}\n")
    with pytest.raises(AuthRequired, match="access_denied"):
        run.result.result(15)
    assert token_calls(server) == []
    err = capfd.readouterr().err
    assert "paste the whole address" in err and "attacker-code-1234" not in err


def test_a_bare_code_is_still_accepted_with_pkce(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=15, stdin=io.StringIO("some-code\n"))
    with pytest.raises(AuthRequired, match="invalid_grant"):  # exchanged (PKCE binds it), refused
        run.result.result(15)
    assert len(token_calls(server)) == 1


# -- RFC 9207: a missing iss -----------------------------------------------------------------------

def test_a_missing_iss_is_rejected_when_the_provider_sends_one(server: OidcServer) -> None:
    run = LoginRun(settings(server, sends_iss=True), timeout=15)
    state = run.params["state"]
    status, page = run.get(f"{run.callback}?code=stolen&state={state}")  # before: accepted, exchanged
    assert status == 400 and "iss" in page
    assert not run.result.done()
    run.get(f"{run.callback}?error=access_denied&state={state}&iss={urllib.parse.quote(server.issuer)}")
    with pytest.raises(AuthRequired, match="access_denied"):
        run.result.result(10)
    assert token_calls(server) == []


def test_a_missing_iss_in_a_pasted_address_is_rejected_too(server: OidcServer) -> None:
    read_end, write_end = os.pipe()
    run = LoginRun(settings(server, sends_iss=True), timeout=15, stdin=os.fdopen(read_end, "r"))
    state = run.params["state"]
    with os.fdopen(write_end, "w") as terminal:
        terminal.write(f"{run.callback}?code=stolen&state={state}\n")
        terminal.write(f"{run.callback}?error=access_denied&state={state}&iss={urllib.parse.quote(server.issuer)}\n")
    with pytest.raises(AuthRequired, match="access_denied"):
        run.result.result(15)
    assert token_calls(server) == []


def test_sends_iss_must_be_a_boolean(server: OidcServer) -> None:
    from pixsrc.errors import ConfigError

    with pytest.raises(ConfigError, match="sends_iss: must be true or false"):
        settings(server, sends_iss="yes")


def test_built_in_providers_do_not_require_iss_they_may_omit() -> None:
    from pixsrc.sources import dropbox, google_drive, pinterest

    # providers.md documents no iss for any of them; Google adds one for some accounts only
    assert not any(p.sends_iss for p in (google_drive.PROVIDER, dropbox.PROVIDER, pinterest.PROVIDER))
    assert google_drive.PROVIDER.issuer == "https://accounts.google.com"  # a wrong iss is still refused


# -- the Host header ---------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "", None])
def test_a_foreign_host_header_is_refused(server: OidcServer, host: str | None) -> None:
    run = LoginRun(settings(server), timeout=15)
    state, port = run.params["state"], port_of(run.callback)
    header = b"" if host is None else f"Host: {host.format(port=port)}\r\n".encode()
    answer = raw_request(port, f"GET /callback?error=access_denied&state={state} HTTP/1.1\r\n".encode()
                         + header + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 421") or answer.startswith(b"HTTP/1.1 421"), answer[:200]
    assert not run.result.done()  # before: the answer was taken (the DNS-rebinding shape)
    for name in (f"127.0.0.1:{port}", f"localhost:{port}"):
        ok = raw_request(port, f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        assert b" 404 " in ok.split(b"\r\n", 1)[0]
    run.get(f"{run.callback}?error=access_denied&state={state}")
    with pytest.raises(AuthRequired, match="access_denied"):
        run.result.result(10)


# -- no keyring ----------------------------------------------------------------------------------------

def login_with_chromium(tmp_path: Path, name: str, *args: str,
                        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    shot = ARTIFACTS / f"{name}.png"
    browser = browser_env(tmp_path / f"{name}.json", screenshot=shot)
    return run_subprocess("auth", "login", "me", "--timeout", "60", *args, env={**browser, **(env or {})})


def test_no_keyring_stores_in_the_file_and_prints_no_credential(tmp_path: Path, config_file: Path,
                                                               state_path: Path, server: OidcServer) -> None:
    write_config(config_file, server)
    result = login_with_chromium(tmp_path, "oauth-login-no-keyring-file", env=FAIL_KEYRING)
    assert result.returncode == 0, result.stderr
    store = state_path / "credentials.json"
    assert "warning: no usable OS keyring" in result.stderr and str(store) in result.stderr
    assert "pixsrc auth export me | pixsrc auth import me --store keyring" in result.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    blob = json.loads(json.loads(store.read_text())["me"])
    assert blob["refresh_token"] and blob["access_token"]
    for secret in (blob["refresh_token"], blob["access_token"]):
        assert secret not in result.stderr + result.stdout
    assert "PIXSRC_AUTH_ME=" not in result.stderr  # before: the live bundle was printed here
    # the stored credential works with no keyring at all
    listed = run_subprocess("fetch", "me", "--list", "--json", env=FAIL_KEYRING)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout.splitlines()[0])["path"] == "profile.json"


def test_store_keyring_without_a_keyring_fails_and_revokes_the_grant(tmp_path: Path, config_file: Path,
                                                                    state_path: Path, server: OidcServer) -> None:
    write_config(config_file, server)
    result = login_with_chromium(tmp_path, "oauth-login-no-keyring-strict", "--store", "keyring", env=FAIL_KEYRING)
    assert result.returncode == 3, result.stderr
    assert "no usable OS keyring" in result.stderr and "revoked at Demo OIDC" in result.stderr
    assert "PIXSRC_AUTH_ME=" not in result.stderr
    assert not (state_path / "credentials.json").exists()
    revocations = [r for r in server.requests() if r["path"] == "/token/revocation"]
    assert [r["status"] for r in revocations] == [200]


def test_the_revoked_grant_is_dead(server: OidcServer, state_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same, in-process, so the test holds the tokens and can ask the server about them."""
    configured = settings(server)
    run = LoginRun(configured, timeout=60)
    run_browser(run.url.result(10))
    token_set = run.result.result(60)
    assert token_set.refresh_token and server.introspect(token_set.refresh_token)
    import keyring.core

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING["PYTHON_KEYRING_BACKEND"])
    keyring.core._keyring_backend = None
    with pytest.raises(AuthRequired, match="no usable OS keyring") as caught:
        oauth.store_new_tokens("me", token_set, "keyring", configured)
    assert "revoked at Demo OIDC" in caught.value.message
    assert not server.introspect(token_set.refresh_token)
    assert not (state_path / "credentials.json").exists()  # nothing kept on this side either


# -- the $BROWSER child's environment ----------------------------------------------------------------

ENV_DUMPING_BROWSER = """#!{python}
# a $BROWSER: dump the environment, then answer the callback with access_denied (ends the login)
import json, os, sys, urllib.parse, urllib.request
with open(os.environ["DUMP_ENV_TO"], "w") as handle:
    json.dump(dict(os.environ), handle)
authorize = urllib.parse.urlsplit(sys.argv[1])
params = dict(urllib.parse.parse_qsl(authorize.query))
issuer = f"{{authorize.scheme}}://{{authorize.netloc}}"  # the test server's issuer is its origin
query = urllib.parse.urlencode({{"error": "access_denied", "state": params["state"], "iss": issuer}})
try:
    urllib.request.urlopen(params["redirect_uri"] + "?" + query, timeout=30).read()
except Exception:
    pass
"""


def test_the_browser_child_gets_no_secrets(tmp_path: Path, config_file: Path, server: OidcServer) -> None:
    write_config(config_file, server)
    browser = tmp_path / "dump-env-browser"
    browser.write_text(ENV_DUMPING_BROWSER.format(python=sys.executable))
    browser.chmod(0o755)
    dump = tmp_path / "browser-env.json"
    secrets_env = {"PIXSRC_AUTH_OTHER_SOURCE": "bundle-secret-111111",
                   "PIXSRC_DEMO_OIDC_CLIENT_SECRET": "client-secret-222222",
                   "PIXSRC_PINTEREST_CLIENT_SECRET": "client-secret-333333"}
    result = run_subprocess("auth", "login", "me", "--timeout", "30",
                            env={"BROWSER": str(browser), "DUMP_ENV_TO": str(dump), **secrets_env})
    assert result.returncode == 3 and "access_denied" in result.stderr, result.stderr
    seen = json.loads(dump.read_text())
    assert not set(secrets_env) & set(seen)  # before: inherited, all three
    assert not set(seen.values()) & set(secrets_env.values())
    assert seen["DUMP_ENV_TO"] == str(dump) and seen.get("PATH") == os.environ.get("PATH")
