"""A real OAuth 2.0 / OpenID Connect server and a real headless browser for the login tests.

* :func:`start_oidc_server` runs ``node tests/oauth/oidc_server.mjs`` (oidc-provider 9.x) on
  127.0.0.1 and yields an :class:`OidcServer` with its URLs, client ids and secrets.
* :func:`run_browser` runs ``node tests/oauth/browser.mjs`` (playwright-core driving the system
  ``/usr/bin/chromium``): it logs in on the server's development login page, consents (or
  cancels, with ``deny=True``) and follows the redirect to the loopback callback.
* :func:`browser_env` gives the environment that makes Python's ``webbrowser`` (so pixsrc) use
  ``tests/oauth/browser.sh`` as its browser; :func:`wait_for_browser_result` reads its result.
* :func:`require_node` / :func:`require_chromium` skip a test when the tool is really missing,
  and fail it instead when $CI (or $PIXSRC_REQUIRE_OAUTH_TOOLS) is set, where a skip would hide
  a missing install step; $PIXSRC_ALLOW_OAUTH_SKIP=1 turns that back into a skip.

Needs ``npm ci`` at the repository root (``node_modules/`` with oidc-provider and
playwright-core) and, for the browser, ``apt-get install -y chromium``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OAUTH_DIR = ROOT / "tests" / "oauth"
SERVER_SCRIPT = OAUTH_DIR / "oidc_server.mjs"
BROWSER_SCRIPT = OAUTH_DIR / "browser.mjs"
BROWSER_SH = OAUTH_DIR / "browser.sh"
NODE_MODULES = ROOT / "node_modules"
ARTIFACTS = ROOT / "test-artifacts"  # gitignored; screenshots go here

NATIVE_CLIENT = "pixsrc-native"  # public, native, any loopback port, refresh tokens kept
ROTATING_CLIENT = "pixsrc-rotating"  # public, native, refresh tokens rotated (replay revokes grant)
CONFIDENTIAL_CLIENT = "pixsrc-confidential"  # client_secret_basic, one fixed redirect port, rotated
INTROSPECTOR_CLIENT = "pixsrc-introspector"
INTROSPECTOR_SECRET = "pixsrc-introspector-secret"
DEFAULT_CONFIDENTIAL_SECRET = "pixsrc-test-secret"
# Scopes the server knows (tests/oauth/oidc_server.mjs); others are silently dropped from grants
# unless passed in start_oidc_server(extra_scopes=...).
KNOWN_SCOPES = (
    "openid",
    "offline_access",
    "profile",
    "email",
    "files.read",
    "files.write",
    "drive.readonly",
    "drive.file",
    "photos.read",
    "media.read",
    "boards:read",
    "pins:read",
    "user_accounts:read",
)


# --------------------------------------------------------------------------- availability


def _chromium_path() -> str:
    return os.environ.get("PIXSRC_CHROMIUM", "/usr/bin/chromium")


def node_missing_reason() -> str | None:
    """Why the Node side cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH (CI: apt-get install -y nodejs, or use a Node 20+ image)"
    for package in ("oidc-provider", "playwright-core"):
        if not (NODE_MODULES / package / "package.json").is_file():
            return f"node_modules/{package} missing: run `npm ci` in {ROOT}"
    return None


def chromium_missing_reason() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    reason = node_missing_reason()
    if reason:
        return reason
    path = _chromium_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return f"{path} not found (CI: apt-get install -y chromium)"
    return None


def node_available() -> bool:
    return node_missing_reason() is None


def chromium_available() -> bool:
    return chromium_missing_reason() is None


def _skip_or_fail(reason: str | None) -> None:
    if reason is None:
        return
    if (os.environ.get("CI") or os.environ.get("PIXSRC_REQUIRE_OAUTH_TOOLS")) and not os.environ.get(
        "PIXSRC_ALLOW_OAUTH_SKIP"
    ):
        pytest.fail(f"OAuth test tools missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_node() -> None:
    """Skip the calling test if node/node_modules are missing (fail instead when $CI is set)."""
    _skip_or_fail(node_missing_reason())


def require_chromium() -> None:
    """Skip the calling test if node/node_modules/chromium are missing (fail instead under $CI)."""
    _skip_or_fail(chromium_missing_reason())


# --------------------------------------------------------------------------- HTTP helpers


@dataclass
class HttpResult:
    status: int
    body: Any  # parsed JSON when the answer is JSON, else the text
    headers: Mapping[str, str]

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


def basic_auth(client_id: str, secret: str) -> str:
    """The ``Authorization`` value for client_secret_basic (RFC 6749 2.3.1: form-encode, then base64)."""
    raw = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_request(
    url: str,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool = True,
    timeout: float = 10,
) -> HttpResult:
    """GET (or form POST when ``data`` is given) without raising on 4xx/5xx."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    opener = urllib.request.build_opener() if follow_redirects else urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, raw, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        status, raw, hdrs = err.code, err.read(), err.headers
    text = raw.decode("utf-8", "replace")
    parsed: Any = text
    if "json" in (hdrs.get("content-type") or ""):
        with contextlib.suppress(ValueError):
            parsed = json.loads(text)
    return HttpResult(status, parsed, {k.lower(): v for k, v in hdrs.items()})


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)  # 64 chars, within RFC 7636's 43..128
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the server


@dataclass
class OidcServer:
    issuer: str  # e.g. http://127.0.0.1:40123 (no trailing slash); the `iss` of every redirect
    port: int
    pid: int
    access_ttl: int  # seconds
    refresh_ttl: int
    confidential_port: int
    confidential_secret: str
    log_path: Path  # oidc-provider's stderr
    native_client: str = NATIVE_CLIENT
    rotating_client: str = ROTATING_CLIENT
    confidential_client: str = CONFIDENTIAL_CLIENT
    introspector_client: str = INTROSPECTOR_CLIENT
    introspector_secret: str = INTROSPECTOR_SECRET
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorize_url(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def revocation_url(self) -> str:
        return f"{self.issuer}/token/revocation"

    @property
    def introspection_url(self) -> str:
        return f"{self.issuer}/token/introspection"

    @property
    def userinfo_url(self) -> str:
        """A protected resource: 200 with a live access token, 401 with an expired/revoked one."""
        return f"{self.issuer}/me"

    @property
    def confidential_redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.confidential_port}/callback"

    def authorization_request(
        self,
        client_id: str,
        redirect_uri: str,
        *,
        scope: str = "openid offline_access files.read",
        state: str | None = None,
        code_challenge: str | None = None,
        **extra: str,
    ) -> str:
        """A full authorization URL (response_type=code; S256 when a challenge is given)."""
        params = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
        }
        if state is not None:
            params["state"] = state
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        params.update(extra)
        return f"{self.authorize_url}?{urllib.parse.urlencode(params)}"

    def token(self, data: Mapping[str, str], *, basic: tuple[str, str] | None = None) -> HttpResult:
        """POST to the token endpoint; ``basic=(client_id, secret)`` adds HTTP Basic auth."""
        headers = {"Authorization": basic_auth(*basic)} if basic else {}
        return http_request(self.token_url, data, headers)

    def revoke(
        self, token: str, *, client_id: str, secret: str | None = None, hint: str | None = None
    ) -> HttpResult:
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        if secret is None:
            data["client_id"] = client_id
            return http_request(self.revocation_url, data)
        return http_request(self.revocation_url, data, {"Authorization": basic_auth(client_id, secret)})

    def introspection(self, token: str) -> dict[str, Any]:
        """The RFC 7662 introspection answer for any client's token (as pixsrc-introspector)."""
        res = http_request(
            self.introspection_url,
            {"token": token},
            {"Authorization": basic_auth(self.introspector_client, self.introspector_secret)},
        )
        if res.status != 200 or not isinstance(res.body, dict):
            raise AssertionError(f"introspection failed: {res.status} {res.body!r}")
        return res.body

    def introspect(self, token: str) -> bool:
        """True while the access or refresh token is live (not expired, revoked or rotated away)."""
        return bool(self.introspection(token).get("active"))

    def token_state(self, token: str) -> dict[str, Any]:
        """Test-only view: found/kind/active/consumed/expired/client_id/scope/exp/grant_id."""
        res = http_request(f"{self.issuer}/__test/token?{urllib.parse.urlencode({'token': token})}")
        return res.body

    def requests(self) -> list[dict[str, Any]]:
        """What reached /auth, /token, /token/revocation, /token/introspection and /me so far:
        dicts with method, path, status, auth_scheme ("Basic"/"Bearer"/None), grant_type, client_id, error."""
        return http_request(f"{self.issuer}/__test/requests").body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def start_oidc_server(
    tmp_path: Path,
    access_ttl: int = 300,
    confidential_port: int | None = None,
    *,
    refresh_ttl: int = 86400,
    confidential_secret: str = DEFAULT_CONFIDENTIAL_SECRET,
    extra_scopes: tuple[str, ...] | list[str] = (),
    port: int = 0,
    startup_timeout: float = 30,
) -> Iterator[OidcServer]:
    """Run the OIDC server until the ``with`` block ends.

    ``confidential_port=None`` picks a free port for pixsrc-confidential's single redirect URI
    (``server.confidential_redirect_uri``); pass 53682 or any port your listener will use.
    Waits for the server's JSON "listening" line (no polling); raises RuntimeError with its log
    when it exits or stays silent for ``startup_timeout`` seconds.
    """
    require_node()
    if confidential_port is None:
        confidential_port = free_port()
    log_path = tmp_path / f"oidc-server-{time.monotonic_ns()}.log"
    env = {
        **os.environ,
        "PIXSRC_OIDC_ACCESS_TTL": str(access_ttl),
        "PIXSRC_OIDC_REFRESH_TTL": str(refresh_ttl),
        "PIXSRC_OIDC_CONFIDENTIAL_PORT": str(confidential_port),
        "PIXSRC_OIDC_CONFIDENTIAL_SECRET": confidential_secret,
        "PIXSRC_OIDC_EXTRA_SCOPES": " ".join(extra_scopes),
        "PIXSRC_OIDC_EXIT_ON_STDIN_EOF": "1",  # dies with us even if we are SIGKILLed
        "NODE_ENV": "test",
    }
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["node", str(SERVER_SCRIPT), str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        line = _read_line(proc, startup_timeout)
        if not line:
            proc.wait(timeout=5)
            raise RuntimeError(
                f"oidc_server.mjs exited ({proc.returncode}) before listening:\n{log_path.read_text()}"
            )
        info = json.loads(line)
        yield OidcServer(
            issuer=info["issuer"],
            port=info["port"],
            pid=info["pid"],
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            confidential_port=confidential_port,
            confidential_secret=confidential_secret,
            log_path=log_path,
            process=proc,
        )
    finally:
        _stop(proc)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """proc's first stdout line, '' on EOF; RuntimeError after ``timeout`` seconds."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        _stop(proc)
        raise RuntimeError(f"oidc_server.mjs printed nothing within {timeout} s")
    return box[0]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream:
            with contextlib.suppress(OSError):
                stream.close()


# --------------------------------------------------------------------------- the browser


class BrowserError(RuntimeError):
    """browser.mjs crashed or timed out (exit 1): the message carries its error and stderr."""


@dataclass
class BrowserResult:
    ok: bool  # the browser left the authorization server (reached the redirect target)
    url: str | None  # final URL, e.g. http://127.0.0.1:PORT/callback?code=...&state=...&iss=...
    query: dict[str, str]  # its query parameters
    status: int | None  # HTTP status of the final page
    title: str | None
    text: str | None  # the final page's visible text
    steps: list[str]  # e.g. ["login", "consent"] or ["login:cancel"]
    screenshot: str | None
    elapsed_ms: int | None
    error: str | None
    returncode: int | None = None
    stderr: str = ""

    @classmethod
    def from_json(cls, text: str, returncode: int | None = None, stderr: str = "") -> BrowserResult:
        data = json.loads(text)
        return cls(
            **{
                k: data.get(k)
                for k in (
                    "ok",
                    "url",
                    "query",
                    "status",
                    "title",
                    "text",
                    "steps",
                    "screenshot",
                    "elapsed_ms",
                    "error",
                )
            },
            returncode=returncode,
            stderr=stderr,
        )


def run_browser(
    url: str,
    screenshot: str | Path | None = None,
    deny: bool = False,
    *,
    timeout: float = 60,
    login: str = "pixsrc-user",
) -> BrowserResult:
    """Log in (or cancel, ``deny=True``) at ``url`` in headless Chromium and follow the redirect.

    The redirect target (your loopback listener) must be serving already, in another thread or
    process: the call returns only once that page has loaded. Returns the parsed result for exit
    0 (``ok``) and 2 (stopped on an authorization-server page, e.g. an error page); raises
    BrowserError on a crash or timeout. ``timeout`` is in seconds (per step inside the browser).
    """
    require_chromium()
    cmd = ["node", str(BROWSER_SCRIPT), url, "--timeout", str(int(timeout * 1000)), "--login", login]
    if screenshot is not None:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--screenshot", str(screenshot)]
    if deny:
        cmd.append("--deny")
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout * 4 + 30,
    )
    try:
        result = BrowserResult.from_json(proc.stdout, proc.returncode, proc.stderr)
    except (ValueError, TypeError) as err:
        raise BrowserError(
            f"browser.mjs exit {proc.returncode}, no JSON: {proc.stdout!r}\n{proc.stderr}"
        ) from err
    if proc.returncode not in (0, 2):
        raise BrowserError(f"browser.mjs exit {proc.returncode}: {result.error}\n{proc.stderr}")
    return result


def browser_env(
    result_path: str | Path,
    screenshot: str | Path | None = None,
    deny: bool = False,
    *,
    background: bool = False,
    timeout: float = 30,
) -> dict[str, str]:
    """Environment variables that make ``webbrowser.open(url)`` (in a process started with them)
    run browser.sh, which logs in and writes its JSON result to ``result_path``.

    ``background=False``: webbrowser.open() blocks until the login is done and the callback page
    has loaded, so the program must serve its loopback listener from another thread.
    ``background=True``: it returns at once, like a real browser; wait with
    :func:`wait_for_browser_result`.
    Note that ``webbrowser`` reads $BROWSER once per process, at its first use.
    """
    require_chromium()
    env = {
        "BROWSER": str(BROWSER_SH),
        "PIXSRC_BROWSER_RESULT": str(result_path),
        "PIXSRC_BROWSER_TIMEOUT": str(int(timeout * 1000)),
        "PIXSRC_BROWSER_BACKGROUND": "1" if background else "",
        "PIXSRC_BROWSER_DENY": "1" if deny else "",
        "PIXSRC_BROWSER_SCREENSHOT": str(screenshot) if screenshot else "",
    }
    if screenshot:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
    return env


def wait_for_browser_result(result_path: str | Path, timeout: float = 60) -> BrowserResult:
    """Wait for browser.sh's result file (written atomically) and parse it."""
    path = Path(result_path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise BrowserError(f"no browser result at {path} after {timeout} s")
        time.sleep(0.05)
    return BrowserResult.from_json(path.read_text())


# --------------------------------------------------------------------------- pytest fixtures
# Import them into a conftest.py to use them: `from support.oidc import oidc_server` (noqa F401)


@pytest.fixture
def oidc_server(tmp_path: Path) -> Iterator[OidcServer]:
    """A running server with the default 300 s access tokens and a free confidential port."""
    with start_oidc_server(tmp_path) as server:
        yield server
