"""The OAuth test infrastructure itself: oidc-provider + headless Chromium + a loopback listener.

These tests use no pixsrc code: they prove that tests/oauth/oidc_server.mjs, browser.mjs,
browser.sh and tests/support/oidc.py behave as the pixsrc login tests will rely on.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.oidc import (
    ARTIFACTS,
    OidcServer,
    browser_env,
    http_request,
    pkce_pair,
    require_chromium,
    run_browser,
    start_oidc_server,
    wait_for_browser_result,
)

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Listener:
    port: int
    hits: list[dict[str, str]] = field(default_factory=list)  # query of each /callback request

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"


@contextmanager
def loopback_listener(port: int = 0) -> Iterator[Listener]:
    """A stand-in for the program under test: answers GET /callback with a small HTML page."""
    listener = Listener(port)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urllib.parse.urlsplit(self.path)
            if parts.path != "/callback":
                self.send_error(404)
                return
            query = dict(urllib.parse.parse_qsl(parts.query))
            listener.hits.append(query)
            msg = (
                "Login failed: " + query["error"]
                if "error" in query
                else "pixsrc is signed in. You can close this tab."
            )
            body = (
                f"<!DOCTYPE html><html><head><title>pixsrc</title></head><body><h1>{msg}</h1></body></html>"
            )
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    listener.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        httpd.shutdown()
        httpd.server_close()


def login(
    server: OidcServer,
    client_id: str,
    listener: Listener,
    *,
    screenshot: Path | None = None,
    scope: str = "openid files.read",
) -> tuple[dict[str, str], str, str]:
    """Browser login with PKCE S256 + state; returns (callback query, code_verifier, state)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    url = server.authorization_request(
        client_id,
        listener.redirect_uri,
        scope=scope,
        state=state,
        code_challenge=challenge,
    )
    result = run_browser(url, screenshot=screenshot)
    assert result.ok, result
    assert result.status == 200
    assert len(listener.hits) == 1
    return listener.hits[0], verifier, state


def exchange(
    server: OidcServer,
    query: dict[str, str],
    verifier: str,
    redirect_uri: str,
    client_id: str,
    basic: tuple[str, str] | None = None,
) -> dict[str, object]:
    data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    if basic is None:
        data["client_id"] = client_id
    res = server.token(data, basic=basic)
    assert res.status == 200, res
    return res.body


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_chromium()


def test_native_login_refresh_revoke(tmp_path: Path) -> None:
    shot = ARTIFACTS / "oauth-native-login.png"
    shot.unlink(missing_ok=True)
    with start_oidc_server(tmp_path) as server, loopback_listener() as listener:
        query, verifier, state = login(server, server.native_client, listener, screenshot=shot)

        assert set(query) == {"code", "state", "iss"}
        assert query["state"] == state
        assert query["iss"] == server.issuer  # RFC 9207

        # the right verifier, no secret (a wrong one: test_pkce_is_required_and_checked)
        tokens = exchange(server, query, verifier, listener.redirect_uri, server.native_client)
        assert tokens["token_type"] == "Bearer"
        assert tokens["expires_in"] == server.access_ttl
        assert set(tokens["scope"].split()) == {"openid", "files.read"}
        access, refresh = tokens["access_token"], tokens["refresh_token"]
        assert http_request(server.userinfo_url, headers={"Authorization": f"Bearer {access}"}).status == 200

        # refresh, public client, no secret: the refresh token is NOT rotated
        res = server.token(
            {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": server.native_client}
        )
        assert res.status == 200, res
        assert res.body["refresh_token"] == refresh
        assert res.body["access_token"] != access
        res2 = server.token(
            {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": server.native_client}
        )
        assert res2.status == 200, res2
        assert server.introspect(refresh)
        assert server.token_state(refresh)["kind"] == "RefreshToken"

        # revocation (RFC 7009) -> introspection says inactive, refresh fails
        revoked = server.revoke(refresh, client_id=server.native_client, hint="refresh_token")
        assert revoked.status == 200, revoked
        assert not server.introspect(refresh)
        assert server.token_state(refresh)["active"] is False
        res3 = server.token(
            {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": server.native_client}
        )
        assert (res3.status, res3.error) == (400, "invalid_grant")

        log = server.requests()
        token_calls = [r for r in log if r["path"] == "/token"]
        assert [r["grant_type"] for r in token_calls] == [
            "authorization_code",
            "refresh_token",
            "refresh_token",
            "refresh_token",
        ]
        assert all(r["auth_scheme"] is None for r in token_calls)

    assert shot.read_bytes()[:8] == PNG_MAGIC


def test_pkce_is_required_and_checked(tmp_path: Path) -> None:
    with start_oidc_server(tmp_path) as server, loopback_listener() as listener:
        # no code_challenge: the server redirects back with invalid_request (no browser needed)
        url = server.authorization_request(server.native_client, listener.redirect_uri, state="s")
        res = http_request(url, follow_redirects=False)
        assert res.status in (302, 303)
        back = urllib.parse.urlsplit(res.headers["location"])
        assert back.netloc == f"127.0.0.1:{listener.port}"
        assert dict(urllib.parse.parse_qsl(back.query))["error"] == "invalid_request"

        # a wrong code_verifier is refused
        query, _verifier, _state = login(server, server.native_client, listener)
        wrong, _ = pkce_pair()
        res = server.token(
            {
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": listener.redirect_uri,
                "code_verifier": wrong,
                "client_id": server.native_client,
            }
        )
        assert (res.status, res.error) == (400, "invalid_grant")
        right = server.token(
            {
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": listener.redirect_uri,
                "code_verifier": _verifier,
                "client_id": server.native_client,
            }
        )
        assert right.status == 200, right  # a failed PKCE check does not burn the code (oidc-provider)


def test_code_is_single_use_and_replay_revokes_its_tokens(tmp_path: Path) -> None:
    with start_oidc_server(tmp_path) as server, loopback_listener() as listener:
        query, verifier, _ = login(server, server.native_client, listener)
        tokens = exchange(server, query, verifier, listener.redirect_uri, server.native_client)
        assert server.introspect(tokens["refresh_token"])
        again = server.token(
            {
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": listener.redirect_uri,
                "code_verifier": verifier,
                "client_id": server.native_client,
            }
        )
        assert (again.status, again.error) == (400, "invalid_grant")
        # RFC 6749 4.1.2: the tokens issued from a replayed code are revoked
        assert not server.introspect(tokens["refresh_token"])
        assert not server.introspect(tokens["access_token"])


def test_access_token_expires(tmp_path: Path) -> None:
    with start_oidc_server(tmp_path, access_ttl=1) as server, loopback_listener() as listener:
        query, verifier, _ = login(server, server.native_client, listener)
        tokens = exchange(server, query, verifier, listener.redirect_uri, server.native_client)
        assert tokens["expires_in"] == 1
        access = tokens["access_token"]
        deadline = time.monotonic() + 5
        while server.introspect(access):
            assert time.monotonic() < deadline, "access token never expired"
            time.sleep(0.2)
        res = http_request(server.userinfo_url, headers={"Authorization": f"Bearer {access}"})
        assert res.status == 401
        assert "invalid_token" in res.headers.get("www-authenticate", "")
        # ... and the refresh token still gets a new one
        res = server.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": server.native_client,
            }
        )
        assert res.status == 200, res
        assert server.introspect(res.body["access_token"])


def test_rotating_refresh_replay_revokes_grant(tmp_path: Path) -> None:
    with start_oidc_server(tmp_path) as server, loopback_listener() as listener:
        query, verifier, _ = login(server, server.rotating_client, listener)
        tokens = exchange(server, query, verifier, listener.redirect_uri, server.rotating_client)
        old = tokens["refresh_token"]

        res = server.token(
            {"grant_type": "refresh_token", "refresh_token": old, "client_id": server.rotating_client}
        )
        assert res.status == 200, res
        new = res.body["refresh_token"]
        assert new != old
        assert not server.introspect(old)
        assert server.token_state(old)["consumed"] is True
        assert server.introspect(new)

        replay = server.token(
            {"grant_type": "refresh_token", "refresh_token": old, "client_id": server.rotating_client}
        )
        assert (replay.status, replay.error) == (400, "invalid_grant")
        # the replay revoked the whole grant: the new refresh token and the access token died too
        assert not server.introspect(new)
        assert not server.introspect(res.body["access_token"])
        dead = server.token(
            {"grant_type": "refresh_token", "refresh_token": new, "client_id": server.rotating_client}
        )
        assert (dead.status, dead.error) == (400, "invalid_grant")


def test_confidential_client_needs_basic_auth(tmp_path: Path) -> None:
    with (
        loopback_listener() as listener,
        start_oidc_server(tmp_path, confidential_port=listener.port) as server,
    ):
        assert server.confidential_redirect_uri == listener.redirect_uri
        client, secret = server.confidential_client, server.confidential_secret

        # its redirect URI is exact: another port is refused by the server itself (no redirect)
        other = server.authorization_request(
            client, f"http://127.0.0.1:{listener.port + 1}/callback", state="s"
        )
        res = http_request(other, follow_redirects=False)
        assert res.status == 400
        assert "redirect_uri" in str(res.body)

        query, verifier, state = login(server, client, listener)
        assert query["state"] == state and query["iss"] == server.issuer
        data = {
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": listener.redirect_uri,
            "code_verifier": verifier,
        }

        no_auth = server.token({**data, "client_id": client})
        assert (no_auth.status, no_auth.error) == (401, "invalid_client")
        in_body = server.token({**data, "client_id": client, "client_secret": secret})  # client_secret_post
        assert (in_body.status, in_body.error) == (401, "invalid_client")
        bad = server.token(data, basic=(client, "wrong"))
        assert (bad.status, bad.error) == (401, "invalid_client")

        ok = server.token(data, basic=(client, secret))
        assert ok.status == 200, ok
        refresh = ok.body["refresh_token"]

        public_refresh = server.token(
            {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client}
        )
        assert (public_refresh.status, public_refresh.error) == (401, "invalid_client")
        rotated = server.token(
            {"grant_type": "refresh_token", "refresh_token": refresh}, basic=(client, secret)
        )
        assert rotated.status == 200, rotated
        assert rotated.body["refresh_token"] != refresh  # rotated

        assert server.revoke(rotated.body["refresh_token"], client_id=client, secret=secret).status == 200
        assert not server.introspect(rotated.body["refresh_token"])
        schemes = {
            r["auth_scheme"] for r in server.requests() if r["path"] == "/token" and r["status"] == 200
        }
        assert schemes == {"Basic"}


def test_deny_yields_access_denied(tmp_path: Path) -> None:
    shot = ARTIFACTS / "oauth-denied.png"
    with start_oidc_server(tmp_path) as server, loopback_listener() as listener:
        _verifier, challenge = pkce_pair()
        url = server.authorization_request(
            server.native_client, listener.redirect_uri, state="st-deny", code_challenge=challenge
        )
        result = run_browser(url, screenshot=shot, deny=True)
        assert result.ok
        assert result.query["error"] == "access_denied"
        assert result.query["state"] == "st-deny"
        assert result.query["iss"] == server.issuer
        assert listener.hits == [result.query]
        assert "Login failed: access_denied" in result.text
    assert shot.read_bytes()[:8] == PNG_MAGIC


def test_bad_redirect_stops_on_server_error_page(tmp_path: Path) -> None:
    with start_oidc_server(tmp_path) as server:
        _verifier, challenge = pkce_pair()
        url = server.authorization_request(
            server.native_client, "http://127.0.0.1:9/elsewhere", state="s", code_challenge=challenge
        )
        result = run_browser(url)
        assert not result.ok and result.returncode == 2
        assert result.url.startswith(server.issuer)
        assert "redirect_uri" in result.text


WEBBROWSER_PROGRAM = """
import sys, threading, urllib.parse, webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
got = {}
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        got.update(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        body = b"<h1>done</h1>"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
httpd = HTTPServer(("127.0.0.1", 0), H)
redirect = "http://127.0.0.1:%d/callback" % httpd.server_address[1]
t = threading.Thread(target=httpd.handle_request)   # serve from another thread: open() may block
t.start()
url = sys.argv[1] + "&" + urllib.parse.urlencode({"redirect_uri": redirect})
print("opened", webbrowser.open(url), flush=True)
t.join(60)
print("state", got.get("state"), "code", bool(got.get("code")), flush=True)
"""


@pytest.mark.parametrize("background", [False, True], ids=["blocking", "background"])
def test_browser_sh_as_webbrowser_BROWSER(tmp_path: Path, background: bool) -> None:  # noqa: N802
    with start_oidc_server(tmp_path) as server:
        _verifier, challenge = pkce_pair()
        url = server.authorization_request(server.native_client, "x", state="st-wb", code_challenge=challenge)
        url = url.replace("&redirect_uri=x", "")
        result_path = tmp_path / "browser-result.json"
        env = browser_env(result_path, background=background)
        proc = subprocess.run(
            [sys.executable, "-c", WEBBROWSER_PROGRAM, url],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == ["opened True", "state st-wb code True"], proc
        result = wait_for_browser_result(result_path)
        assert result.ok and result.query["state"] == "st-wb"
