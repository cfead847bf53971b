"""OAuth 2.0 for native apps: loopback authorization-code flow with PKCE, refresh, revocation.

Login (RFC 8252, RFC 7636, RFC 9700): a listener on 127.0.0.1 only (an ephemeral port where the
provider accepts any loopback port, else the provider's fixed registered port), an authorize URL
with ``state`` (256 bits) and an S256 code challenge, then two answers are awaited at once: the
browser's redirect to the listener, and the user pasting the redirect URL (or the bare code) into
the terminal — the way to log in from a headless machine over SSH. The first valid answer wins.

Tokens are kept by ``pixsrc.tokens`` as a small JSON blob per source. ``OAuthSession`` hands out
access tokens, refreshing 60 s before expiry and once after a 401, under a cross-process lock
that re-reads the stored blob first, so two processes never burn each other's rotated refresh
token.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

from pixsrc import redact
from pixsrc.durations import rfc3339
from pixsrc.errors import AuthRequired, ConfigError, UsageError
from pixsrc.types import OAuthProvider

if TYPE_CHECKING:
    from pixsrc.api import Api, RateLimit

REFRESH_SKEW = 60.0
OVERRIDABLE = ("authorize_url", "token_url", "revoke_url", "api_base_url", "content_base_url", "notify_base_url",
               "issuer")
PROVIDER_KEYS = {"client_id", "redirect_port", *OVERRIDABLE, "max_concurrency", "requests_per_second", "sends_iss",
                 "allow_insecure", "refresh_token_days"}


# -- settings ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProviderSettings:
    """A provider's defaults with the user's ``[providers.<name>]`` overrides applied."""

    provider: OAuthProvider
    client_id: str | None
    redirect_port: int | None
    extra: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        if name in OVERRIDABLE:
            return self.extra.get(name) or getattr(self.provider, name)
        raise AttributeError(name)

    def rate_limit(self) -> RateLimit:
        """The provider's published limits by default; ``max_concurrency`` / ``requests_per_second`` override."""
        from pixsrc.api import RateLimit

        return RateLimit(self.extra.get("max_concurrency", self.provider.max_concurrency),
                         self.extra.get("requests_per_second", self.provider.requests_per_second))

    @property
    def requires_iss(self) -> bool:
        """RFC 9207: refuse a callback without ``iss`` (``sends_iss``, only where an issuer is known)."""
        sends = self.extra.get("sends_iss", self.provider.sends_iss)
        return bool(sends) and bool(self.issuer)

    @property
    def secret_env(self) -> str:
        return f"PIXSRC_{self.provider.name.upper().replace('-', '_')}_CLIENT_SECRET"

    def client_secret(self) -> str | None:
        from pixsrc import tokens

        value = os.environ.get(self.secret_env)
        if not value:
            credential = tokens.get(client_secret_key(self.provider.name))
            value = credential.value if credential else None
        redact.register(value)
        return value


def client_secret_key(provider: str) -> str:
    """The token-store key of a provider's client secret (":" keeps it apart from source ids)."""
    return f"provider:{provider}"


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_transport(provider: OAuthProvider, table: Mapping[str, Any], where: str) -> None:
    """Refuse plain http:// to another machine for every endpoint (overridden or built in): codes,
    tokens, verifiers and client secrets would cross the network readable by anyone on the path.
    Loopback is fine (a local fake or proxy); ``allow_insecure = true`` is the explicit way out."""
    if "allow_insecure" in table and not isinstance(table["allow_insecure"], bool):
        raise ConfigError(f"{where}.allow_insecure: must be true or false")
    if table.get("allow_insecure"):
        return
    for key in OVERRIDABLE:
        url = table.get(key) or getattr(provider, key)
        if not isinstance(url, str) or not url.lower().startswith("http://"):
            continue
        host = urlsplit(url).hostname or ""
        if not _is_loopback(host):
            raise ConfigError(f"{where}.{key}: plain http:// to {host or url!r} would send credentials unencrypted",
                              hint=f"use an https:// URL, or set allow_insecure = true in [{where}] "
                                   "if this network is trusted")


def settings_for(provider: OAuthProvider, providers_table: Mapping[str, Any]) -> ProviderSettings:
    table = providers_table.get(provider.name, {})
    where = f"providers.{provider.name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    for key, value in table.items():
        if key not in PROVIDER_KEYS:
            raise ConfigError(f"{where}.{key}: unknown setting", hint="known: " + ", ".join(sorted(PROVIDER_KEYS)))
        if key in OVERRIDABLE and not (isinstance(value, str) and value.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}.{key}: must be an http(s) URL")
    if "sends_iss" in table and not isinstance(table["sends_iss"], bool):
        raise ConfigError(f"{where}.sends_iss: must be true or false",
                          hint="true when the provider's metadata has authorization_response_iss_parameter_supported")
    _check_transport(provider, table, where)
    for key, kind in (("max_concurrency", int), ("requests_per_second", int | float),
                      ("refresh_token_days", int | float)):
        if key in table and (not isinstance(table[key], kind) or isinstance(table[key], bool) or table[key] <= 0):
            raise ConfigError(f"{where}.{key}: must be a positive number")
    port = table.get("redirect_port", provider.loopback_port)
    if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
        raise ConfigError(f"{where}.redirect_port: must be a port number")
    client_id = os.environ.get(f"PIXSRC_{provider.name.upper().replace('-', '_')}_CLIENT_ID") or table.get("client_id")
    return ProviderSettings(provider, client_id or None, port, table)


def refresh_limit_days(provider: OAuthProvider, providers_table: Mapping[str, Any]) -> float | None:
    """How many days a refresh token lasts: ``refresh_token_days`` in ``[providers.<name>]`` (e.g. 7 for
    a Google app in "Testing" status, which the provider cannot be asked about), else the provider's.
    Raises ConfigError for a bad provider table, as every use of it does."""
    value = settings_for(provider, providers_table).extra.get("refresh_token_days", provider.refresh_token_days)
    return float(value) if value else None


def setup_steps(settings: ProviderSettings, source_id: str) -> str:
    p = settings.provider
    if settings.redirect_port:
        redirect = f"register the redirect URI http://127.0.0.1:{settings.redirect_port}{p.redirect_path} exactly"
    else:
        redirect = "no redirect URI to register (a desktop-app client accepts http://127.0.0.1 on any port)"
    steps = [f"create an OAuth client at {p.console_url or p.display_name + ' developer console'}", redirect,
             f"put its id in the config: [providers.{p.name}] client_id = \"...\""]
    if p.secret != "none":
        steps.append(f"store its secret: pixsrc auth client {p.name} (or set {settings.secret_env})")
    steps.append(f"then run: pixsrc auth login {source_id}")
    return "; ".join(steps)


# -- tokens --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenSet:
    provider: str
    access_token: str | None
    refresh_token: str | None
    expires_at: float | None
    scope: str | None
    token_type: str = "Bearer"
    obtained_at: float = 0.0
    refresh_obtained_at: float | None = None
    refresh_expires_at: float | None = None
    """When the provider said the refresh token ends (Pinterest's ``refresh_token_expires_in``)."""

    def __repr__(self) -> str:
        return f"TokenSet(provider={self.provider!r}, expires_at={self.expires_at!r}, scope={self.scope!r})"

    def fresh(self, now: float | None = None) -> bool:
        """Usable for a while yet: refresh 60 s before expiry (or half-way, for very short tokens)."""
        if not self.access_token:
            return False
        if self.expires_at is None:
            return True
        skew = min(REFRESH_SKEW, max(0.0, self.expires_at - self.obtained_at) / 2)
        return self.expires_at - skew > (now or time.time())

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps({"v": 1, **data}, separators=(",", ":"))

    def refresh_expiry(self, limit_days: float | None) -> float | None:
        """When the refresh token stops working, where that is known: the provider's own word, else
        ``limit_days`` after it was issued; None when it lasts until revoked (or its age is unknown)."""
        if not self.refresh_token:
            return None
        if self.refresh_expires_at:
            return self.refresh_expires_at
        if limit_days and self.refresh_obtained_at:
            return self.refresh_obtained_at + limit_days * 86400
        return None

    def to_bundle(self) -> str:
        """For CI: base64 JSON with what a run needs (no access token: it would go stale), and the
        refresh token's dates, so `auth check` in CI can tell when it ends."""
        data: dict[str, Any] = {"v": 1, "provider": self.provider, "refresh_token": self.refresh_token,
                                "scope": self.scope}
        data |= {key: value for key in ("refresh_obtained_at", "refresh_expires_at")
                 if (value := getattr(self, key)) is not None}
        return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()

    @classmethod
    def parse(cls, text: str) -> TokenSet:
        """From the keyring's JSON blob or from an exported (base64) bundle."""
        text = text.strip()
        try:
            data = json.loads(text if text.startswith("{") else base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            if not isinstance(data, dict) or "provider" not in data:
                raise ValueError("not a pixsrc token")
            fields: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
            fields["token_type"] = fields["token_type"] or "Bearer"
            fields["obtained_at"] = fields["obtained_at"] or 0.0
            _check_types(fields)
            tokens = cls(**fields)
        except (ValueError, TypeError) as exc:
            raise AuthRequired(f"the stored OAuth credential is unreadable ({type(exc).__name__})") from None
        redact.register(tokens.access_token)
        redact.register(tokens.refresh_token)
        return tokens


_TEXT_FIELDS = ("provider", "access_token", "refresh_token", "scope", "token_type")
_TIME_FIELDS = ("expires_at", "obtained_at", "refresh_obtained_at", "refresh_expires_at")


def _check_types(fields: Mapping[str, Any]) -> None:
    """A credential edited by hand or pasted into PIXSRC_AUTH_*: texts are strings, times are epoch
    seconds this side of the year 5000 (else expiry arithmetic ends in a TypeError or OverflowError)."""
    for key in _TEXT_FIELDS:
        if fields[key] is not None and not isinstance(fields[key], str):
            raise ValueError(f"{key} is not a string")
    for key in _TIME_FIELDS:
        value = fields[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value < 1e11):  # NaN fails the comparison too
            raise ValueError(f"{key} is not a time")


def _token_set(provider: str, answer: Mapping[str, Any], previous: TokenSet | None = None) -> TokenSet:
    now = time.time()
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise AuthRequired("the token endpoint answered without an access_token")
    refresh = answer.get("refresh_token")
    rotated = isinstance(refresh, str) and bool(refresh)
    expires_in = answer.get("expires_in")
    refresh_in = answer.get("refresh_token_expires_in")
    refresh_in = refresh_in if isinstance(refresh_in, int | float) and not isinstance(refresh_in, bool) else None
    redact.register(access)
    redact.register(refresh if rotated else None)
    return TokenSet(
        provider=provider,
        access_token=access,
        refresh_token=refresh if rotated else (previous.refresh_token if previous else None),
        expires_at=now + float(expires_in) if isinstance(expires_in, int | float) else None,
        scope=answer.get("scope") or (previous.scope if previous else None),
        token_type=str(answer.get("token_type") or "Bearer"),
        obtained_at=now,
        refresh_obtained_at=now if rotated or previous is None else previous.refresh_obtained_at,
        refresh_expires_at=(now + refresh_in if rotated and refresh_in else
                            None if rotated or previous is None else previous.refresh_expires_at),
    )


def token_request(settings: ProviderSettings, form: dict[str, str], *, api: Api | None = None) -> dict[str, Any]:
    """POST to the token endpoint; RFC 6749 section 5.2 errors become AuthRequired (exit 3).

    Sent once: the POST is not idempotent, so after a lost connection, a timeout or a 5xx it is not
    resent (a refresh the server processed and we did not hear of would be replayed, and providers
    that rotate refresh tokens revoke the whole grant on reuse). Only a connection that was never
    made, a 408 and a 429 are tried again (``pixsrc.api``). ``api``: the client to use (tests inject
    one with a short timeout or retry policy); by default one for this request.
    """
    from pixsrc.api import Api, ApiError, RetryPolicy

    provider = settings.provider
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    form = {**form, "client_id": settings.client_id or ""}
    secret = settings.client_secret() if provider.secret != "none" else None
    if provider.secret == "required" and not secret:
        raise UsageError(f"no client secret for {provider.display_name}",
                         hint=f"store it: pixsrc auth client {provider.name} (or set {settings.secret_env})")
    if secret and provider.client_auth == "basic":
        pair = f"{settings.client_id}:{secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        del form["client_id"]
    elif secret:
        form["client_secret"] = secret
    # a short policy: someone is waiting at the terminal, and only a refused connection or a 429 is
    # tried again anyway; 2-3 s in all when the endpoint is down, not the API plane's minutes
    client = api if api is not None else Api(policy=RetryPolicy(retries=3, base=0.5, cap=2.0, deadline=30.0))
    try:
        response = client.post(settings.token_url, idempotent=False, headers=headers,
                               content=urlencode(form).encode())
    except ApiError as exc:
        raise AuthRequired(f"cannot reach the {provider.display_name} token endpoint: {redact.redact(str(exc))}",
                           hint=f"check the network (and [providers.{provider.name}] token_url), then retry (a token "
                                "request that may have reached the server is not resent: a reused refresh token can "
                                "end the sign-in)") from None
    finally:
        if api is None:
            client.close()
    try:
        answer = json.loads(response.content) if response.content else {}
    except ValueError:
        answer = {}
    if isinstance(answer, dict):  # registered as soon as they arrive, before any message can quote them
        for name in ("access_token", "refresh_token", "id_token"):
            redact.register(answer[name] if isinstance(answer.get(name), str) else None)
    if response.status_code != 200 or not isinstance(answer, dict) or "error" in answer:
        error = answer.get("error") if isinstance(answer, dict) else None
        detail = answer.get("error_description") or answer.get("message") if isinstance(answer, dict) else None
        text = f"{error or 'HTTP ' + str(response.status_code)}" + (f": {detail}" if detail else "")
        raise AuthRequired(f"the {provider.display_name} token endpoint refused: {redact.redact(str(text))}",
                           hint=None)
    return answer


# -- login ---------------------------------------------------------------------------------------

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pixsrc</title>
<style>body{{font:16px system-ui,sans-serif;margin:15vh auto;max-width:34em;padding:0 1em;color:#222}}
h1{{font-size:1.4em}}</style></head><body><h1>{title}</h1><p>{text}</p></body></html>"""


@dataclass(frozen=True)
class _Answer:
    code: str | None = None
    error: str | None = None
    via: str = "browser"


@dataclass(frozen=True)
class _Expected:
    """What a callback of this login must carry."""

    state: str
    issuer: str | None
    require_iss: bool  # RFC 9207: the provider always sends iss, so one without it is not its own
    pkce: bool  # a bare pasted code is only safe when the verifier binds it to this login


def _check_callback(params: Mapping[str, list[str]], expected: _Expected, via: str) -> _Answer | str:
    """An _Answer to finish with, or a reason to reject this callback and keep waiting."""
    got_state = params.get("state", [None])[0]
    if got_state != expected.state:
        return "the state parameter is missing or wrong (a stale or forged redirect); ignored"
    iss, issuer = params.get("iss", [None])[0], expected.issuer
    if iss and issuer and iss.rstrip("/") != issuer.rstrip("/"):
        return f"the redirect came from issuer {iss!r}, not {issuer!r}; ignored"
    if not iss and expected.require_iss:
        # RFC 9207 section 2.4: a mix-up attack (another provider's response) comes without it
        return f"the redirect carries no iss, and {issuer} always sends one (RFC 9207); ignored"
    if error := params.get("error", [None])[0]:
        description = params.get("error_description", [""])[0]
        return _Answer(error=f"{error}: {description}" if description else error, via=via)
    code = params.get("code", [None])[0]
    if not code:
        return "the redirect carries no code"
    return _Answer(code=code, via=via)


READ_TIMEOUT = 5.0  # per connection: a browser sends its request at once; anything slower is dropped


class _Listener(ThreadingHTTPServer):
    # one thread per connection, so a client that connects and sends nothing (any local process can)
    # never holds up the browser's redirect; daemon threads, not joined at close: the login ends on time
    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, path: str, expected: _Expected, title: str, answers: queue.Queue[_Answer]) -> None:
        self.callback_path, self.expected, self.title, self.answers = path, expected, title, answers
        self.done = threading.Event()
        super().__init__(("127.0.0.1", port), _CallbackHandler)
        self.hosts = {f"127.0.0.1:{self.server_address[1]}", f"localhost:{self.server_address[1]}"}


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _Listener
    timeout = READ_TIMEOUT  # socketserver sets it on the connection: reads give up instead of hanging

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the request line holds the code
        pass

    def _page(self, status: int, title: str, text: str) -> None:
        body = PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if (self.headers.get("Host") or "").lower() not in self.server.hosts:
            # a page on another site whose name was rebound to 127.0.0.1 arrives with its own name as
            # Host (DNS rebinding); the browser redirected by the provider names the redirect URI's host
            self._page(421, "Misdirected request", "This is pixsrc's sign-in listener on 127.0.0.1 only.")
            return
        parts = urlsplit(self.path)
        if parts.path != self.server.callback_path or self.server.done.is_set():
            self._page(404, "Not found", "This is pixsrc's sign-in listener; nothing else lives here.")
            return
        result = _check_callback(parse_qs(parts.query), self.server.expected, "browser")
        if isinstance(result, str):
            self._page(400, "Sign-in not accepted", f"pixsrc {result}.")
            print(f"warning: a redirect to the listener was rejected: {result}", file=sys.stderr)
            return
        self.server.done.set()
        if result.error:
            self._page(200, "Sign-in failed", f"{self.server.title}: {result.error}. Return to the terminal.")
        else:
            self._page(200, f"Signed in to {self.server.title}.", "You can close this tab.")
        self.server.answers.put(result)


def _lines(stdin: TextIO, stop: threading.Event) -> Iterator[str]:
    """Lines typed or piped in, until ``stop``. On POSIX the wait is a select() with a short timeout, so
    after the browser wins this thread does not sit in readline() and swallow the wizard's next answer."""
    import select

    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    while not stop.is_set():
        ready = fd < 0 or os.name == "nt" or bool(select.select([fd], [], [], 0.2)[0])
        if stop.is_set():  # input that arrives now is the next prompt's, not ours
            return
        if not ready:
            continue
        line = stdin.readline()
        if not line:
            return
        if not stop.is_set():
            yield line


def _read_pasted(stdin: TextIO, expected: _Expected, answers: queue.Queue[_Answer], stop: threading.Event) -> None:
    for line in _lines(stdin, stop):
        text = line.strip()
        if not text:
            continue
        if "://" in text or text.startswith("?") or "code=" in text:
            query = urlsplit(text).query if "://" in text else text.lstrip("?")
            result = _check_callback(parse_qs(query), expected, "paste")
            if isinstance(result, str):
                print(f"that URL was not accepted: {result}; paste again", file=sys.stderr)
                continue
            answers.put(result)
        elif expected.pkce:  # a bare code (e.g. copied from a provider's page); PKCE binds it to this login
            answers.put(_Answer(code=text, via="paste"))
        else:
            # without PKCE nothing ties a bare code to this login: someone else's code would sign
            # this machine in to their account (login CSRF). The full address carries the state.
            print("a bare code cannot be checked without PKCE: paste the whole address the browser ended on "
                  "(http://127.0.0.1:...?code=...&state=...)", file=sys.stderr)
            continue
        return


_BROWSER_PROGRAM = "import sys, webbrowser; webbrowser.open(sys.argv[1])"


def browser_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the browser: this one without pixsrc's secrets (a browser, or whatever
    $BROWSER names, has no use for a CI bundle or a client secret, and may log or pass them on)."""
    def secret(name: str) -> bool:
        upper = name.upper()
        return upper.startswith("PIXSRC_AUTH_") or upper.startswith("PIXSRC_") and any(
            word in upper for word in ("SECRET", "PASSWORD", "TOKEN", "API_KEY"))

    return {name: value for name, value in (os.environ if environ is None else environ).items() if not secret(name)}


def open_in_browser(url: str) -> None:
    """Open ``url`` the way ``webbrowser`` would ($BROWSER, xdg-open, open, ...), from a child
    Python with the secrets taken out of its environment: webbrowser itself can only pass the whole
    of ours on. Not waited for (a $BROWSER may block until the tab closes); a failure to start only
    leaves the printed URL, which is there anyway."""
    import subprocess

    if not sys.executable:  # an embedded interpreter: nothing to run the child with
        return
    try:
        # -I: isolated, so a webbrowser.py in the current folder is not what gets imported
        child = subprocess.Popen([sys.executable, "-I", "-c", _BROWSER_PROGRAM, url], env=browser_environment(),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)
    except OSError:
        return
    threading.Thread(target=child.wait, daemon=True, name="pixsrc-browser").start()  # no zombie left


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)  # 86 characters from the unreserved set
    redact.register(verifier)  # a token endpoint may quote it back in an error description
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def login(settings: ProviderSettings, scopes: tuple[str, ...], title: str, *, open_browser: bool = True,
          port: int | None = None, timeout: float = 300.0, stdin: TextIO | None = None,
          announce: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> TokenSet:
    provider = settings.provider
    if not settings.client_id:
        raise UsageError(f"no OAuth client is set up for {provider.display_name}")
    listen_port = port if port is not None else (settings.redirect_port or 0)
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    answers: queue.Queue[_Answer] = queue.Queue()
    try:
        expected = _Expected(state, settings.issuer, settings.requires_iss, provider.pkce)
        listener = _Listener(listen_port, provider.redirect_path, expected, title, answers)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on 127.0.0.1:{listen_port} for the sign-in redirect: {exc.strerror}",
            hint=(f"free that port, or register another redirect URI with {provider.display_name} and set "
                  f"[providers.{provider.name}] redirect_port (or pass --port)"),
        ) from None
    redirect_uri = f"http://127.0.0.1:{listener.server_address[1]}{provider.redirect_path}"
    params = {"response_type": "code", "client_id": settings.client_id, "redirect_uri": redirect_uri,
              "scope": provider.scope_separator.join(scopes), "state": state, **dict(provider.authorize_params)}
    if provider.pkce:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    sep = "&" if "?" in settings.authorize_url else "?"
    url = f"{settings.authorize_url}{sep}{urlencode(params)}"
    server = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                              name="pixsrc-oauth-listener")
    server.start()
    stop = threading.Event()
    announce(f"Open this URL in a browser to sign in to {provider.display_name}:\n\n  {url}\n")
    announce("Waiting for the browser... On another machine? Paste the address it ends on "
             + ("(or the code shown) " if provider.pkce else "") + "here and press Enter.")
    if stdin is not None:
        threading.Thread(target=_read_pasted, args=(stdin, expected, answers, stop), daemon=True,
                         name="pixsrc-oauth-paste").start()
    if open_browser:
        open_in_browser(url)
    try:
        answer = answers.get(timeout=timeout)
    except queue.Empty:
        raise AuthRequired(f"no sign-in within {timeout:g} s", hint="run the login again (--timeout SECONDS)") from None
    finally:
        stop.set()
        listener.done.set()
        listener.shutdown()
        listener.server_close()
    if answer.error:
        raise AuthRequired(f"{provider.display_name} refused the sign-in: {redact.redact(answer.error)}")
    assert answer.code is not None
    redact.register(answer.code)
    form = {"grant_type": "authorization_code", "code": answer.code, "redirect_uri": redirect_uri}
    if provider.pkce:
        form["code_verifier"] = verifier
    return _token_set(provider.name, token_request(settings, form))


# -- refresh -------------------------------------------------------------------------------------

class OAuthSession:
    """Access tokens for one source; refreshes them and stores what the provider returns."""

    def __init__(self, source_id: str, settings: ProviderSettings,
                 warn: Callable[[str], None] = lambda text: print(f"warning: {text}", file=sys.stderr)) -> None:
        self.source_id = source_id
        self.settings = settings
        self.warn = warn
        self._lock = threading.Lock()
        self._tokens, self._stored_in = self._load()

    def _load(self) -> tuple[TokenSet, str]:
        from pixsrc import tokens

        credential = tokens.get(self.source_id)
        if credential is None:
            raise AuthRequired(f"source {self.source_id!r} is not signed in",
                               hint=f"run: pixsrc auth login {self.source_id}")
        token_set = TokenSet.parse(credential.value)
        if token_set.provider != self.settings.provider.name:
            raise AuthRequired(f"the stored credential of {self.source_id!r} is for {token_set.provider!r}",
                               hint=f"run: pixsrc auth login {self.source_id}")
        return token_set, credential.stored_in

    def headers(self) -> dict[str, str]:
        with self._lock:
            if not self._tokens.fresh():
                self._refresh(self._tokens.access_token)
            return {"Authorization": f"Bearer {self._tokens.access_token}"}

    def unauthorized(self, header: Mapping[str, str]) -> None:
        """After a 401 with this Authorization header: refresh once (unless someone already did)."""
        used = (header.get("Authorization") or "").removeprefix("Bearer ")
        with self._lock:
            if used == self._tokens.access_token:
                self._refresh(used)

    def _refresh(self, stale_access: str | None) -> None:
        from pixsrc.config import state_dir
        from pixsrc.locks import FileLock

        with FileLock(state_dir() / "locks" / f"auth-{self.source_id}.lock"):
            # another process may have refreshed (and rotated the refresh token) meanwhile
            if not self._stored_in.startswith("env "):
                latest, self._stored_in = self._load()
                if latest.access_token != stale_access and latest.fresh():
                    self._tokens = latest
                    return
                self._tokens = latest
            if not self._tokens.refresh_token:
                raise AuthRequired(f"the access token of {self.source_id!r} expired and there is no refresh token",
                                   hint=f"run: pixsrc auth login {self.source_id}")
            form = {"grant_type": "refresh_token", "refresh_token": self._tokens.refresh_token,
                    **dict(self.settings.provider.refresh_params)}
            try:
                answer = token_request(self.settings, form)
            except AuthRequired as exc:
                raise AuthRequired(f"refreshing the access token failed: {exc.message}",
                                   hint=f"run: pixsrc auth login {self.source_id}") from None
            new = _token_set(self.settings.provider.name, answer, self._tokens)
            rotated = new.refresh_token != self._tokens.refresh_token
            self._tokens = new
            self._save(rotated)

    def _save(self, rotated: bool) -> None:
        from pixsrc import tokens

        if self._stored_in.startswith("env "):
            if rotated:
                self.warn(f"{self.source_id}: {self.settings.provider.display_name} rotated the refresh token; the "
                          f"bundle in {self._stored_in[4:]} is now stale. Sign in again and re-export it: "
                          f"pixsrc auth login {self.source_id} && pixsrc auth export {self.source_id}")
            return
        store = "file" if self._stored_in.startswith("file ") else "keyring"
        try:
            self._stored_in = tokens.put(self.source_id, self._tokens.to_json(), store)  # type: ignore[arg-type]
        except AuthRequired as exc:
            self.warn(f"{self.source_id}: could not save the refreshed token ({exc.message}). "
                      + ("The old refresh token no longer works: " if rotated else "")
                      + f"keep this run's credential with: PIXSRC_AUTH_{self.source_id.upper().replace('-', '_')}"
                      f"=<bundle from `pixsrc auth export {self.source_id}`>")

    @property
    def token_set(self) -> TokenSet:
        return self._tokens


def store_new_tokens(source_id: str, token_set: TokenSet, store: str | None,
                     settings: ProviderSettings | None = None,
                     warn: Callable[[str], None] = lambda text: print(f"warning: {text}", file=sys.stderr)) -> str:
    """Save tokens from a login; returns where they went. Never prints them.

    No keyring and no ``--store``: the explicit file store (0600 in a 0700 folder), with a warning
    that names the file and the way to move it. ``--store keyring`` (or a file store that fails):
    the fresh grant is revoked at the provider (with ``settings``) and AuthRequired (exit 3) says
    so, leaving nothing behind on either side that pixsrc could undo.
    """
    from pixsrc import tokens

    try:
        return tokens.put(source_id, token_set.to_json(), store)  # type: ignore[arg-type]
    except tokens.KeyringUnavailable as exc:
        failure: AuthRequired | OSError = exc
        if store is None:
            try:
                where = tokens.put(source_id, token_set.to_json(), "file")
            except (AuthRequired, OSError) as file_exc:
                failure = file_exc
            else:
                warn(f"{exc.message}; the sign-in of {source_id!r} is stored in the file {tokens.file_store_path()} "
                     "(mode 0600, in a 0700 folder: readable by you only). Once a keyring works, move it there: "
                     f"pixsrc auth export {source_id} | pixsrc auth import {source_id} --store keyring")
                return where
    except (AuthRequired, OSError) as exc:
        failure = exc
    reason = failure.message if isinstance(failure, AuthRequired) else f"{failure.strerror or failure}"
    undone = revoke(settings, token_set) if settings is not None else "the new grant is still live at the provider"
    raise AuthRequired(f"signed in, but the tokens could not be stored: {reason}; {undone}",
                       hint=(f"make the keyring work and sign in again, or keep them in a mode-0600 file: "
                             f"pixsrc auth login {source_id} --store file")) from None


def revoke(settings: ProviderSettings, token_set: TokenSet, *, api: Api | None = None) -> str:
    """Revoke at the provider where it supports it; returns what happened, for the user."""
    from pixsrc.api import Api, ApiError, RetryPolicy

    provider = settings.provider
    url = settings.revoke_url
    if provider.revoke_style == "none" or not url:
        return (f"{provider.display_name} offers no revocation for user tokens; "
                "disconnect pixsrc in your account settings")
    # a short policy: logout should not hang on a provider that is down, it deletes locally anyway
    client = api if api is not None else Api(policy=RetryPolicy(retries=2, cap=4.0, deadline=20.0))
    try:
        if provider.revoke_style == "bearer":
            response = client.post(url, headers={"Authorization": f"Bearer {token_set.access_token}"})
            if response.status_code == 401 and token_set.refresh_token:
                # the access token expired: it cannot authenticate the revocation, a fresh one can
                # (Dropbox's revoke also kills the refresh token behind it, providers.md 2.1)
                try:
                    fresh = token_request(settings, {"grant_type": "refresh_token",
                                                     "refresh_token": token_set.refresh_token,
                                                     **dict(provider.refresh_params)})
                except AuthRequired:
                    fresh = {}
                if isinstance(fresh.get("access_token"), str):
                    redact.register(fresh["access_token"])
                    response = client.post(url, headers={"Authorization": f"Bearer {fresh['access_token']}"})
        else:
            token = token_set.refresh_token or token_set.access_token or ""
            form = {"token": token, "client_id": settings.client_id or ""}
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            secret = settings.client_secret() if provider.secret != "none" else None
            if secret and provider.client_auth == "basic":
                pair = f"{settings.client_id}:{secret}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            elif secret:
                form["client_secret"] = secret
            # RFC 7009 section 2.2: revoking an already revoked (or unknown) token answers 200, so a
            # revocation that may have gone through can be sent again
            response = client.post(url, idempotent=True, headers=headers, content=urlencode(form).encode())
    except ApiError as exc:
        return f"could not reach {provider.display_name} to revoke ({redact.redact(str(exc))}); deleted locally only"
    finally:
        if api is None:
            client.close()
    if response.status_code in (200, 204):
        return f"revoked at {provider.display_name}"
    return f"{provider.display_name} answered HTTP {response.status_code} to the revocation; deleted locally anyway"


def status(source_id: str, provider: OAuthProvider, refresh_days: float | None = None) -> dict[str, Any]:
    """What ``auth status`` shows for an OAuth source: never a token. ``refresh_days``: the refresh
    tokens' lifetime (``refresh_limit_days``); the provider's by default."""
    from pixsrc import tokens

    row: dict[str, Any] = {"kind": "oauth2", "provider": provider.name, "status": "missing", "stored_in": None,
                           "scopes": None, "access_expires_at": None, "refresh_token_age_days": None,
                           "refresh_expires_at": None, "limit": provider.limits_note,
                           "detail": f"run: pixsrc auth login {source_id}"}
    try:
        credential = tokens.get(source_id)
    except AuthRequired as exc:
        return {**row, "status": "error", "detail": exc.message}
    if credential is None:
        return row
    row |= {"stored_in": credential.stored_in, "detail": None}
    try:
        token_set = TokenSet.parse(credential.value)
    except AuthRequired as exc:
        return {**row, "status": "invalid", "detail": exc.message}
    if token_set.provider != provider.name:
        return {**row, "status": "invalid", "detail": f"the credential is for {token_set.provider!r}"}
    now = time.time()
    usable = token_set.refresh_token or token_set.fresh(now)
    row["status"] = "ok" if usable else "expired"
    row["scopes"] = token_set.scope.replace(",", " ").split() if token_set.scope else None
    if token_set.expires_at:
        row["access_expires_at"] = rfc3339(token_set.expires_at)
    if token_set.refresh_token and token_set.refresh_obtained_at:
        row["refresh_token_age_days"] = round((now - token_set.refresh_obtained_at) / 86400, 1)
    ends = token_set.refresh_expiry(refresh_days if refresh_days is not None else provider.refresh_token_days)
    if ends is not None:
        row["refresh_expires_at"] = rfc3339(ends)
        if ends <= now:
            row["status"] = "expired"
    if row["status"] == "expired":
        row["detail"] = f"run: pixsrc auth login {source_id}"
    return row
