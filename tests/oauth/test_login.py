"""pixsrc's OAuth login (RFC 8252 loopback + PKCE) against a real OpenID Connect server.

The listener-level cases drive `pixsrc.oauth.login` in-process and play the browser with urllib;
the end-to-end cases run the real `pixsrc` executable with headless Chromium as $BROWSER.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from support.cli import pixsrc_exe, run_subprocess
from support.oidc import OidcServer, browser_env, free_port, start_oidc_server

from pixsrc import oauth
from pixsrc.errors import AuthRequired, UsageError

pytest.importorskip("pixsrc_demo_plugin.oauth_types", reason="install tests/plugins/pixsrc-demo-plugin")
from pixsrc_demo_plugin.oauth_types import PUBLIC  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def public_table(server: OidcServer) -> dict[str, object]:
    return {"client_id": server.native_client, "authorize_url": server.authorize_url,
            "token_url": server.token_url, "revoke_url": server.revocation_url,
            "api_base_url": server.issuer, "issuer": server.issuer}


class LoginRun:
    """`oauth.login` on a thread; the test plays the browser (or the person at the terminal)."""

    def __init__(self, settings: oauth.ProviderSettings, *, timeout: float = 20, stdin: io.TextIOBase | None = None,
                 port: int | None = None) -> None:
        self.url: Future[str] = Future()
        self.result: Future[oauth.TokenSet] = Future()

        def announce(text: str) -> None:
            for word in text.split():
                if word.startswith("http") and not self.url.done():
                    self.url.set_result(word)

        def target() -> None:
            try:
                self.result.set_result(oauth.login(settings, ("openid", "offline_access"), "Test Source",
                                                   open_browser=False, timeout=timeout, stdin=stdin, port=port,
                                                   announce=announce))
            except BaseException as exc:  # handed to the test
                self.result.set_exception(exc)

        threading.Thread(target=target, daemon=True).start()

    @property
    def params(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url.result(10)).query))

    @property
    def callback(self) -> str:
        return self.params["redirect_uri"]

    def get(self, url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OidcServer]:
    with start_oidc_server(tmp_path, access_ttl=3) as running:
        yield running


def settings(server: OidcServer, **overrides: object) -> oauth.ProviderSettings:
    return oauth.settings_for(PUBLIC, {"demo-oidc": {**public_table(server), **overrides}})


def token_calls(server: OidcServer) -> list[dict[str, object]]:
    return [r for r in server.requests() if r["path"].startswith("/token") and r["path"] == "/token"]


# -- the listener ----------------------------------------------------------------------------------

def test_authorize_url_has_pkce_state_and_loopback_redirect(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=5)
    params = run.params
    assert params["response_type"] == "code" and params["client_id"] == server.native_client
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 22  # >= 128 bits, URL-safe base64
    assert params["scope"] == "openid offline_access" and params["prompt"] == "consent"
    redirect = urllib.parse.urlsplit(params["redirect_uri"])
    assert redirect.hostname == "127.0.0.1" and redirect.port and redirect.path == "/callback"
    run.get(f"{run.callback}?error=access_denied&state={params['state']}")
    with pytest.raises(AuthRequired, match="access_denied"):
        run.result.result(10)


def test_wrong_or_missing_state_is_rejected_without_a_code_exchange(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=10)
    state = run.params["state"]
    status, page = run.get(f"{run.callback}?code=stolen&state=not-{state}")
    assert status == 400 and "state" in page
    status, _ = run.get(f"{run.callback}?code=stolen")
    assert status == 400
    assert not run.result.done()  # still waiting for the real answer
    run.get(f"{run.callback}?error=access_denied&error_description=User+said+no&state={state}")
    with pytest.raises(AuthRequired, match="access_denied: User said no"):
        run.result.result(10)
    assert token_calls(server) == []


def test_only_the_callback_path_answers_and_the_listener_stops_after_an_answer(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=10)
    origin = run.callback.rsplit("/", 1)[0]
    assert run.get(f"{origin}/favicon.ico")[0] == 404
    assert run.get(f"{origin}/")[0] == 404
    status, page = run.get(f"{run.callback}?error=access_denied&state={run.params['state']}")
    assert status == 200 and "access_denied" in page
    with pytest.raises(AuthRequired):
        run.result.result(10)
    with pytest.raises(urllib.error.URLError):  # a second callback finds nobody listening
        urllib.request.urlopen(f"{run.callback}?code=again&state={run.params['state']}", timeout=5)


def test_issuer_mismatch_is_rejected(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=10)
    state = run.params["state"]
    assert run.get(f"{run.callback}?code=x&state={state}&iss=http%3A%2F%2Fevil.example")[0] == 400
    run.get(f"{run.callback}?error=access_denied&state={state}&iss={urllib.parse.quote(server.issuer)}")
    with pytest.raises(AuthRequired, match="access_denied"):
        run.result.result(10)


def test_timeout(server: OidcServer) -> None:
    started = time.monotonic()
    with pytest.raises(AuthRequired, match="no sign-in within 1 s"):
        LoginRun(settings(server), timeout=1).result.result(20)
    assert time.monotonic() - started < 10


def test_busy_fixed_port_is_a_clear_error(server: OidcServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            LoginRun(settings(server, redirect_port=port), timeout=5).result.result(10)


def test_listener_binds_loopback_only(server: OidcServer) -> None:
    run = LoginRun(settings(server), timeout=10)
    port = urllib.parse.urlsplit(run.callback).port
    with socket.socket() as probe:  # any non-loopback address of this host must not answer
        probe.settimeout(2)
        hostname_ip = socket.gethostbyname(socket.gethostname())
        if not hostname_ip.startswith("127."):
            assert probe.connect_ex((hostname_ip, port)) != 0
    run.get(f"{run.callback}?error=access_denied&state={run.params['state']}")
    with pytest.raises(AuthRequired):
        run.result.result(10)


@pytest.mark.parametrize("form", ["url", "bare-code"])
def test_pasted_redirect_url_or_bare_code_is_exchanged(server: OidcServer, form: str) -> None:
    read_end, write_end = os.pipe()
    stdin = os.fdopen(read_end, "r")
    run = LoginRun(settings(server), timeout=15, stdin=stdin)
    state = run.params["state"]
    with os.fdopen(write_end, "w") as terminal:
        if form == "url":
            terminal.write(f"{run.callback}?code=wrong&state=nope\n")  # a wrong state is refused: paste again
            terminal.write(f"{run.callback}?code=pasted-code&state={state}&iss={urllib.parse.quote(server.issuer)}\n")
        else:
            terminal.write("pasted-code\n")
    # the code is not one the server issued: the exchange happens and is refused with invalid_grant
    with pytest.raises(AuthRequired, match="invalid_grant"):
        run.result.result(15)
    calls = token_calls(server)
    assert len(calls) == 1 and calls[0]["grant_type"] == "authorization_code"


def test_network_error_at_the_token_endpoint(server: OidcServer) -> None:
    run = LoginRun(settings(server, token_url=f"http://127.0.0.1:{free_port()}/token"), timeout=10)
    run.get(f"{run.callback}?code=abc&state={run.params['state']}")
    with pytest.raises(AuthRequired, match="cannot reach the Demo OIDC token endpoint"):
        run.result.result(30)


def test_missing_client_setup_names_the_steps(tmp_path: Path) -> None:
    config = tmp_path / "config" / "sources.toml"
    config.parent.mkdir(parents=True)
    config.write_text('version = 1\n[sources.me]\nname = "Me"\ntype = "demo-oauth-secret"\n')
    result = run_subprocess("auth", "login", "me", "--no-browser", "--timeout", "1")
    assert result.returncode == 2
    assert "no OAuth client is set up for Demo Confidential" in result.stderr
    assert "http://127.0.0.1:53682/callback" in result.stderr
    assert "pixsrc auth client demo-confidential" in result.stderr


# -- end to end through the pixsrc executable, with Chromium as the browser -------------------------

def write_config(path: Path, server: OidcServer, *, confidential: bool = False) -> str:
    table = public_table(server)
    type_id, provider = "demo-oauth", "demo-oidc"
    if confidential:
        type_id, provider = "demo-oauth-secret", "demo-confidential"
        table = {**table, "client_id": server.confidential_client, "redirect_port": server.confidential_port}
    lines = ["version = 1", f"[providers.{provider}]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    lines.append("sends_iss = true")  # oidc-provider puts iss in every redirect (RFC 9207): require it
    lines += ["[sources.me]", 'name = "My Profile"', f'type = "{type_id}"']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return "me"


def stored_blob(source_id: str = "me") -> dict[str, object] | None:
    import keyring
    import keyring.core

    keyring.core._keyring_backend = None
    value = keyring.get_password("pixsrc", source_id)
    return json.loads(value) if value else None


def wait_until(condition, timeout: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def login_with_chromium(tmp_path: Path, name: str, extra_env: dict[str, str] | None = None,
                        deny: bool = False) -> subprocess.CompletedProcess[str]:
    shot = ARTIFACTS / f"{name}.png"
    env = browser_env(tmp_path / f"{name}.json", screenshot=shot, deny=deny)
    return run_subprocess("auth", "login", "me", "--timeout", "60", env={**env, **(extra_env or {})})


def test_login_status_refresh_logout_end_to_end(tmp_path: Path, config_file: Path, server: OidcServer) -> None:
    write_config(config_file, server)
    result = login_with_chromium(tmp_path, "oauth-login-success")
    assert result.returncode == 0, result.stderr
    page = json.loads((tmp_path / "oauth-login-success.json").read_text())
    assert "Signed in to My Profile." in page["text"] and "You can close this tab." in page["text"]
    assert (ARTIFACTS / "oauth-login-success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "checked: the credential works" in result.stderr
    blob = stored_blob()
    assert blob and blob["provider"] == "demo-oidc" and blob["refresh_token"] and blob["access_token"]
    first_access, refresh = str(blob["access_token"]), str(blob["refresh_token"])
    assert first_access not in config_file.read_text() and refresh not in config_file.read_text()
    assert len(json.dumps(blob)) < 2048

    status = run_subprocess("auth", "status", "me", "--json")
    row = json.loads(status.stdout)[0]
    assert row["status"] == "ok" and row["kind"] == "oauth2" and row["stored_in"].startswith("keyring")
    assert row["scopes"] and "openid" in row["scopes"] and row["access_expires_at"]

    def refreshes() -> int:
        return len([r for r in server.requests() if r.get("grant_type") == "refresh_token"])

    # dead server-side while the stored expiry still looks fine (clock skew): a 401 makes pixsrc refresh once
    wait_until(lambda: not server.introspect(first_access))
    import keyring

    keyring.set_password("pixsrc", "me", json.dumps({**blob, "expires_at": time.time() + 3600}))
    fetched = run_subprocess("fetch", "me", "--dest", str(tmp_path / "out"), "--json")
    assert fetched.returncode == 0, fetched.stderr
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert profile["sub"]
    assert refreshes() == 1
    new_blob = stored_blob()
    assert new_blob and new_blob["access_token"] != first_access
    # expired by the clock: refreshed before use, no 401 needed
    wait_until(lambda: not server.introspect(str(new_blob["access_token"])))
    assert run_subprocess("fetch", "me", "--list").returncode == 0
    assert refreshes() == 2
    assert len([r for r in server.requests() if r["path"] == "/me" and r["status"] == 401]) == 1
    outputs = result.stderr + result.stdout + status.stdout + fetched.stdout + fetched.stderr
    for secret in (first_access, refresh, str(new_blob["access_token"])):
        assert secret not in outputs

    logout = run_subprocess("auth", "logout", "me")
    assert logout.returncode == 0, logout.stderr
    assert "revoked at Demo OIDC" in logout.stderr
    assert not server.introspect(refresh)
    assert stored_blob() is None
    assert json.loads(run_subprocess("auth", "status", "me", "--json").stdout)[0]["status"] == "missing"


def test_denied_login_shows_the_reason(tmp_path: Path, config_file: Path, server: OidcServer) -> None:
    write_config(config_file, server)
    result = login_with_chromium(tmp_path, "oauth-login-denied", deny=True)
    assert result.returncode == 3
    assert "access_denied" in result.stderr
    page = json.loads((tmp_path / "oauth-login-denied.json").read_text())
    assert "Sign-in failed" in page["text"] and "access_denied" in page["text"]
    assert stored_blob() is None


def test_ci_bundle_export_and_rotation_warning(tmp_path: Path, config_file: Path, server: OidcServer) -> None:
    write_config(config_file, server, confidential=True)
    secret_env = {"PIXSRC_DEMO_CONFIDENTIAL_CLIENT_SECRET": server.confidential_secret}
    result = login_with_chromium(tmp_path, "oauth-login-confidential", secret_env)
    assert result.returncode == 0, result.stderr
    basic_calls = [r for r in server.requests() if r["path"] == "/token"]
    assert basic_calls and all(r["auth_scheme"] == "Basic" for r in basic_calls)
    exported = run_subprocess("auth", "export", "me")
    assert exported.returncode == 0 and "treat" not in exported.stdout and "CI secret" in exported.stderr
    bundle = exported.stdout.strip()
    env = {**secret_env, "PIXSRC_AUTH_ME": bundle, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    listed = run_subprocess("fetch", "me", "--list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "rotated the refresh token" in listed.stderr and "re-export" in listed.stderr
    imported = run_subprocess("auth", "import", "me", input=bundle, env=secret_env)
    assert imported.returncode == 0, imported.stderr


def test_two_processes_refreshing_a_rotating_token_both_succeed(tmp_path: Path, config_file: Path,
                                                                server: OidcServer) -> None:
    write_config(config_file, server, confidential=True)
    env = {"PIXSRC_DEMO_CONFIDENTIAL_CLIENT_SECRET": server.confidential_secret}
    assert login_with_chromium(tmp_path, "oauth-login-rotating", env).returncode == 0
    blob = stored_blob()
    assert blob
    wait_until(lambda: not server.introspect(str(blob["access_token"])))
    command = [*pixsrc_exe(), "fetch", "me", "--list", "--json"]
    procs = [subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    newest = stored_blob()
    assert newest and newest["refresh_token"] != blob["refresh_token"]
    # the stored refresh token is the live one: a third refresh with it still works
    assert server.token({"grant_type": "refresh_token", "refresh_token": str(newest["refresh_token"])},
                        basic=(server.confidential_client, server.confidential_secret)).status == 200


def test_after_the_browser_answers_terminal_input_is_left_for_the_next_prompt(server: OidcServer) -> None:
    read_end, write_end = os.pipe()
    stdin = os.fdopen(read_end, "r")
    run = LoginRun(settings(server), timeout=10, stdin=stdin)
    run.get(f"{run.callback}?error=access_denied&state={run.params['state']}")
    with pytest.raises(AuthRequired):
        run.result.result(10)
    with os.fdopen(write_end, "w") as terminal:  # the wizard's next question: "Name for this source"
        terminal.write("My Drive\n")
    assert stdin.readline() == "My Drive\n"
