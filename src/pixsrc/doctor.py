"""``pixsrc doctor``: is this machine, in this environment, set up to fetch? One result per check.

The checks, in the order they are shown: the config and state paths as this process resolves them
(and which variables decided them: cron runs with another environment), the config file, plugins,
the keyring; per source its type and settings, credential, OAuth client, provider hosts (one HEAD
request each through the API client, so DNS, TCP, TLS with pixsrc's trust store and the proxy are
what a fetch would meet) and destination; then the clock against that answer's ``Date`` header,
and the locks.

Every failure names its fix and carries an exit code; the report's is the worst, in the order
``fetch`` uses: 2 (config, paths) before 3 (credentials, keyring) before 4 (network, destinations).
Warnings alone exit 0.

Read-only: the only writes are temp files, created and removed at once, that prove a folder is
writable; a free lock is taken and released in the same instant to tell that it is free.
Network checks run on threads, all at once, each within ``NETWORK_LIMIT``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pixsrc.config import Config, Source, config_path, load_config, real_file, state_dir
from pixsrc.durations import human_size
from pixsrc.errors import EXIT_AUTH, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, AuthRequired, PixsrcError, UsageError, worst

if TYPE_CHECKING:
    from pixsrc.oauth import ProviderSettings
    from pixsrc.types import SourceType

Status = Literal["ok", "warn", "fail"]

KEYRING_LIMIT = 3.0  # seconds; PIXSRC_KEYRING_TIMEOUT may only shorten it
NETWORK_LIMIT = 5.0  # seconds per host: connect and TLS handshake (DNS shares it)
CLOCK_SKEW = 60.0  # seconds off a provider's clock before it is worth a warning
LOW_SPACE = 1 << 30  # bytes free in a destination before it is worth a warning
PROBE_KEY = "doctor:probe"  # never a source id (slugs have no ':'): the lookup finds nothing


@dataclass(frozen=True)
class Check:
    """One line of the report. ``exit_code``: what this failure means for the run (0 unless it failed)."""

    check: str
    source: str | None
    status: Status
    detail: str
    fix: str | None = None
    exit_code: int = EXIT_OK

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "source": self.source, "status": self.status, "detail": self.detail,
                "fix": self.fix}


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        return worst(c.exit_code for c in self.checks if c.status == "fail")

    def as_json(self) -> dict[str, Any]:
        return {"schema": 1, "checks": [c.as_json() for c in self.checks], "exit_code": self.exit_code}


def _ok(check: str, source: str | None, detail: str) -> Check:
    return Check(check, source, "ok", detail)


def _warn(check: str, source: str | None, detail: str, fix: str) -> Check:
    return Check(check, source, "warn", detail, fix)


def _fail(check: str, source: str | None, detail: str, fix: str | None, code: int) -> Check:
    return Check(check, source, "fail", detail, fix, code)


@dataclass
class _Plan:
    """What the per-source checks need, once its type and settings proved valid."""

    source: Source
    stype: SourceType
    settings: ProviderSettings | None
    urls: list[str]


def run(config_override: str | None = None, source_ref: str | None = None) -> Report:
    """Every check (``source_ref``: that source's, besides the paths and the config file)."""
    path = config_path(config_override)
    head = [_config_path_check(path, config_override), _state_path_check()]
    try:
        cfg = load_config(path)
    except PixsrcError as exc:
        return Report([*head, _fail("config", None, exc.message, exc.hint, EXIT_USAGE)])
    count = len(cfg.sources)
    head.append(_ok("config", None, f"{path} parses: {count} source{'s' if count != 1 else ''}"))
    if source_ref is not None:
        try:
            sources = [cfg.find(source_ref)]
        except UsageError as exc:
            return Report([*head, _fail("source", source_ref, exc.message, exc.hint, EXIT_USAGE)])
    else:
        head += _plugin_checks()
        sources = list(cfg.sources.values())

    per_source: dict[str, list[Check]] = {}
    plans: list[_Plan] = []
    for source in sources:
        if not source.enabled and source_ref is None:
            per_source[source.id] = [_ok("source", source.id, f"disabled: not checked (pixsrc enable {source.id})")]
            continue
        plan, verdict = _prepare(cfg, source)
        per_source[source.id] = [verdict]
        if plan is not None:
            plans.append(plan)

    origins = {_origin(url): url for plan in plans for url in plan.urls}
    network = _start_network_checks(list(origins.values()))

    from pixsrc.tokens import may_use_keyring

    keyring = (_keyring_check(plans) if any(may_use_keyring(plan.source.id, plan.stype.auth) for plan in plans)
               else None)
    for plan in plans:
        per_source[plan.source.id].append(_credential_check(plan, cfg))
        if plan.settings is not None:
            per_source[plan.source.id].append(_client_check(plan))
    if keyring is not None and keyring.status == "fail" and not any(
            c.status == "fail" and c.exit_code == EXIT_AUTH for checks in per_source.values() for c in checks):
        # broken, but no credential depends on it: they come from the environment or the file store
        keyring = dataclasses.replace(keyring, status="warn", exit_code=EXIT_OK)
    if keyring is not None:
        head.append(keyring)

    reached = network()
    for plan in plans:
        seen: set[tuple[str, str, int]] = set()
        for url in plan.urls:
            if _origin(url) not in seen:
                seen.add(_origin(url))
                per_source[plan.source.id].append(dataclasses.replace(reached[_origin(url)].check,
                                                                      source=plan.source.id))
    for source in sources:
        if source.enabled or source_ref is not None:
            per_source[source.id].append(_destination_check(cfg, source))

    tail = []
    clock = _clock_check(plans, reached)
    if clock is not None:
        tail.append(clock)
    tail += _lock_checks(path, None if source_ref is None else sources[0].id)
    return Report([*head, *(c for checks in per_source.values() for c in checks), *tail])


# -- paths and config ----------------------------------------------------------------------------

def _unix_dirs() -> bool:
    """Whether platformdirs follows the XDG variables here (Linux and the BSDs; not macOS or Windows)."""
    from platformdirs import PlatformDirs
    from platformdirs.unix import Unix

    return issubclass(PlatformDirs, Unix)


def _decided_by(flag: str | None, own: str, xdg: str) -> str:
    if flag:
        return "from --config"
    if os.environ.get(own):
        return f"from ${own}; a cron job needs it set too"
    if _unix_dirs() and os.environ.get(xdg, "").strip():
        return f"from ${xdg}; a cron job needs it set too"
    return f"the default: neither ${own} nor ${xdg} is set" if _unix_dirs() else f"the default: ${own} is not set"


def _config_path_check(path: Path, override: str | None) -> Check:
    why = _decided_by(override, "PIXSRC_CONFIG", "XDG_CONFIG_HOME")
    shown = f"{path} -> {real_file(path)}" if path.is_symlink() else str(path)
    if not path.exists():
        return _warn("config-path", None, f"{shown} ({why}) does not exist: no sources are configured there",
                     "add a source (pixsrc add TYPE), or point PIXSRC_CONFIG at your sources file")
    return _ok("config-path", None, f"{shown} ({why})")


def _state_path_check() -> Check:
    path = state_dir()
    why = _decided_by(None, "PIXSRC_STATE_DIR", "XDG_STATE_HOME")
    problem, existing = _writable(path)
    if problem:
        return _fail("state-path", None, f"{path} ({why}): {problem}",
                     "fix the folder's permissions, or set PIXSRC_STATE_DIR to a folder of your own", EXIT_USAGE)
    later = "" if existing == path else "; created on the first fetch"
    db = path / "state.db"
    if db.exists():
        import sqlite3

        try:  # read-only: doctor changes nothing (State() would tighten modes and migrate)
            with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            verdict = str(exc)
        if verdict != "ok":
            from pixsrc.state import unusable

            unsound = unusable(db, verdict)
            return _fail("state-path", None, unsound.message, unsound.hint, EXIT_USAGE)
        later = "; state.db passes SQLite's quick check"
    return _ok("state-path", None, f"{path} ({why}){later}")


def _plugin_checks() -> list[Check]:
    from pixsrc import registry

    types, problems = registry.load_all()
    if not problems:
        plugins = sum(1 for t in types if t.id not in registry.BUILTINS)
        return [_ok("plugins", None, f"{len(types)} source types load ({plugins} from plugins)")]
    # a broken plugin that no source uses breaks nothing; a source of its type fails its own check
    checks = []
    for problem in problems:
        words = problem.origin.split()  # "plugin <distribution> <version>"
        dist = words[1] if len(words) == 3 and words[0] == "plugin" else "the plugin"
        checks.append(_warn("plugins", None, f"type {problem.type_id!r} ({problem.origin}) {problem.error}",
                            f"reinstall it, or remove it: pip uninstall {dist}"))
    return checks


def _prepare(cfg: Config, source: Source) -> tuple[_Plan | None, Check]:
    """The source's type, validated settings and the URLs it talks to; or why it cannot be checked."""
    from pixsrc import oauth, registry

    try:
        stype = registry.of(source)
        model = stype.validate(source.config, f"sources.{source.id}.config")
        settings = None
        urls: list[str] = []
        if stype.auth.kind == "oauth2" and stype.auth.oauth is not None:
            settings = oauth.settings_for(stype.auth.oauth, cfg.providers())
            # the API first: the clock check asks the first host that passed
            urls = [u for u in (settings.api_base_url, settings.content_base_url, settings.token_url) if u]
    except PixsrcError as exc:
        return None, _fail("source", source.id, exc.message, exc.hint or f"fix it: pixsrc edit {source.id}",
                           EXIT_USAGE)
    for spec in stype.fields():  # a gallery's URL, a plugin's server: whatever the settings point at
        value = getattr(model, spec.key, None)
        if spec.type == "url" and isinstance(value, str) and value:
            urls.append(value)
    plan = _Plan(source, stype, settings, urls)
    return plan, _ok("source", source.id, f"type {stype.id}: settings valid")


# -- credentials -----------------------------------------------------------------------------------

def _keyring_check(plans: list[_Plan]) -> Check:
    """One lookup that finds nothing, within KEYRING_LIMIT: a locked keyring waiting for a prompt
    nobody sees hangs here. Once it timed out, every later keyring call of this process fails at once
    (``tokens._keyring_call``), so the credential checks after it stay quick."""
    from pixsrc import tokens

    if tokens.default_store() == "file":
        return _ok("keyring", None, "not used: PIXSRC_TOKEN_STORE=file keeps credentials in "
                   f"{tokens.file_store_path()}")
    limit = min(KEYRING_LIMIT, tokens.keyring_timeout())
    backend: list[str] = []

    def probe() -> None:
        import keyring

        found = keyring.get_keyring()
        backend.append(f"{type(found).__module__}.{type(found).__name__}")
        found.get_password(tokens.SERVICE, PROBE_KEY)

    first = next(plan.source.id for plan in plans if plan.stype.auth.kind != "none")
    began = time.monotonic()
    try:
        tokens._keyring_call(first, probe, timeout=limit)
    except tokens.KeyringUnavailable as exc:
        name = backend[0] if backend else "the keyring backend"
        return _fail("keyring", None, f"{name}: {exc.message}", exc.hint, EXIT_AUTH)
    return _ok("keyring", None, f"{backend[0]} answered in {time.monotonic() - began:.2f} s")


def _credential_check(plan: _Plan, cfg: Config) -> Check:
    from pixsrc import tokens

    sid, auth = plan.source.id, plan.stype.auth
    if auth.kind == "none":
        return _ok("credential", sid, "needs none")
    login = f"pixsrc auth login {sid}"
    row = tokens.describe(sid, auth, cfg.providers())
    status = row["status"]
    if status == "missing":
        if not auth.required:
            return _ok("credential", sid, f"{auth.kind}: none stored (optional)")
        return _fail("credential", sid, f"{auth.kind}: not signed in", f"run: {login}", EXIT_AUTH)
    if status == "error":
        try:  # again, for the exception's hint (describe keeps only the message); quick: a hung keyring
            tokens.get(sid, optional=not auth.required)  # fails at once now
            hint = None
        except AuthRequired as exc:
            hint = exc.hint
        fix = hint or f"set {tokens.env_var(sid)}, or store it in a file: {login} --store file"
        if not auth.required:
            return _warn("credential", sid, f"{row['detail']}; a fetch goes on without one", fix)
        return _fail("credential", sid, str(row["detail"]), fix, EXIT_AUTH)
    if status != "ok":  # invalid, expired
        what = "expired" if status == "expired" else f"unusable: {row['detail']}"
        return _fail("credential", sid, f"{auth.kind}: the stored credential is {what}", f"run: {login}", EXIT_AUTH)
    where = str(row["stored_in"])
    parts = [f"{auth.kind} in {where}"]
    if where.startswith("env "):
        parts.append("only in this environment: a cron job needs the variable too")
    if row.get("access_expires_at"):
        parts.append(f"access token expires {row['access_expires_at']} (refreshed on its own)")
    ends = row.get("refresh_expires_at")
    if ends:
        parts.append(f"refresh token valid until {ends}")
        left = _epoch(str(ends)) - time.time()
        if left < 7 * 86400:
            return _warn("credential", sid, "; ".join(parts) + f" (in {left / 86400:.1f} days)",
                         f"sign in again before then: {login}")
    return _ok("credential", sid, "; ".join(parts))


def _epoch(iso: str) -> float:
    """A time as oauth.status shows it; one it cannot read counts as far off (no warning)."""
    try:
        return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return float("inf")


def _client_check(plan: _Plan) -> Check:
    """The OAuth client: a refresh in cron needs its id (and secret, where the provider wants one)."""
    from pixsrc import oauth

    settings, sid = plan.settings, plan.source.id
    assert settings is not None
    provider = settings.provider
    if not settings.client_id:
        return _fail("oauth-client", sid, f"no OAuth client id for {provider.display_name}",
                     oauth.setup_steps(settings, sid), EXIT_USAGE)
    env = f"PIXSRC_{provider.name.upper().replace('-', '_')}_CLIENT_ID"
    where = (f"${env} (a cron job needs it set too)" if os.environ.get(env)
             else f"[providers.{provider.name}] client_id")
    detail = f"client id from {where}"
    if provider.secret == "required":
        fix = f"run: pixsrc auth client {provider.name} (or set {settings.secret_env})"
        try:
            secret = settings.client_secret()
        except AuthRequired as exc:
            return _fail("oauth-client", sid, f"client secret: {exc.message}", exc.hint or fix, EXIT_AUTH)
        if not secret:
            return _fail("oauth-client", sid, f"{detail}, but no client secret is stored", fix, EXIT_AUTH)
        detail += "; client secret stored"
    return _ok("oauth-client", sid, detail)


# -- network ---------------------------------------------------------------------------------------

def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


@dataclass(frozen=True)
class _Reach:
    """What one HEAD request to a host said: its network check, and its ``Date`` for the clock check."""

    check: Check
    date: str | None = None
    asked_at: float = 0.0  # the middle of the request, to set against ``date``


def _start_network_checks(urls: list[str]) -> Callable[[], dict[tuple[str, str, int], _Reach]]:
    """Start one thread per host; the returned function waits for them, NETWORK_LIMIT at most.
    Daemon threads, not a ThreadPoolExecutor: ``getaddrinfo`` has no timeout, and a hung lookup
    must not hold the process at exit."""
    slots: list[_Reach | None] = [None] * len(urls)
    threads = []

    def work(index: int, url: str) -> None:
        try:
            slots[index] = _host_check(url)
        except Exception as exc:  # reported as a line, not a traceback on another thread
            slots[index] = _Reach(_fail("network", None, f"{_hostport(url)}: {type(exc).__name__}: {exc}", None,
                                        EXIT_UNAVAILABLE))

    for index, url in enumerate(urls):
        thread = threading.Thread(target=work, args=(index, url), name="pixsrc-doctor", daemon=True)
        thread.start()
        threads.append(thread)

    deadline = time.monotonic() + NETWORK_LIMIT + 0.5

    def collect() -> dict[tuple[str, str, int], _Reach]:
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return {_origin(url): slots[i] or _Reach(_fail(
            "network", None, f"{_hostport(url)}: no answer within {NETWORK_LIMIT:g} s",
            "check this machine's DNS (/etc/resolv.conf), network and proxy settings", EXIT_UNAVAILABLE))
            for i, url in enumerate(urls)}

    return collect


def _hostport(url: str) -> str:
    _, host, port = _origin(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_check(url: str) -> _Reach:
    """One HEAD request to the host's root, sent as fetch would send it: the API client (httpx) with
    pixsrc's trust store and the proxy it would use. Any HTTP answer proves DNS, TCP and TLS."""
    from pixsrc.api import Api, ApiError, ProxySettings, RetryPolicy, safe_url

    scheme, host, _ = _origin(url)
    proxy = ProxySettings.from_environment().proxy_for(scheme, host)
    shown = _hostport(url) + (f" through the proxy {safe_url(proxy).rstrip('/')}" if proxy else "")
    try:
        with Api(timeout=NETWORK_LIMIT, policy=RetryPolicy(retries=0)) as api:
            sent = time.time()
            response = api.request("HEAD", f"{scheme}://{urlsplit(url).netloc.rpartition('@')[2]}/")
            received = time.time()
    except ApiError as exc:
        reason = str(exc).partition(" failed: ")[2] or str(exc)
        return _Reach(_fail("network", None, f"{shown}: {reason}", _network_fix(reason, proxy), EXIT_UNAVAILABLE))
    how = "over TLS, trusted by pixsrc's trust store" if scheme == "https" else "(plain http: no TLS)"
    return _Reach(_ok("network", None, f"{shown} answers {how} (HTTP {response.status_code})"),
                  response.headers.get("Date"), (sent + received) / 2)


def _network_fix(reason: str, proxy: str | None) -> str:
    if "certificate" in reason:
        return "a private CA or a TLS-inspecting proxy? point SSL_CERT_FILE at its CA bundle (in the crontab too)"
    if proxy is not None:
        return "check HTTPS_PROXY / HTTP_PROXY and NO_PROXY"
    if "name resolution" in reason or "not known" in reason or "getaddrinfo" in reason:
        return "check the host name in the settings, and this machine's DNS (/etc/resolv.conf)"
    if "Timeout" in reason or "timed out" in reason:
        return "a firewall? if this network needs a proxy, set HTTPS_PROXY"
    return "is the server up, and is the port in the URL right?"


def _clock_check(plans: list[_Plan], reached: dict[tuple[str, str, int], _Reach]) -> Check | None:
    """The ``Date`` of the first host that answered (https first) against our clock: OAuth expiry and
    certificate dates depend on it. None when no host answered."""
    candidates = [(plan.source.id, url, reached[_origin(url)]) for plan in plans for url in plan.urls
                  if reached[_origin(url)].check.status == "ok"]
    candidates.sort(key=lambda c: _origin(c[1])[0] != "https")
    if not candidates:
        return None
    sid, url, reach = candidates[0]
    host, date = _hostport(url), reach.date
    try:
        theirs = email.utils.parsedate_to_datetime(date or "")
    except (TypeError, ValueError):
        return _warn("clock", sid, f"{host} sent no usable Date header ({date!r})", "check the clock by hand: date -u")
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=UTC)
    offset = reach.asked_at - theirs.timestamp()
    if abs(offset) > CLOCK_SKEW:
        side = "ahead of" if offset > 0 else "behind"
        return _warn("clock", sid, f"this machine's clock is {abs(offset):.0f} s {side} {host}'s ({date})",
                     "turn on time sync (NTP), e.g. timedatectl set-ntp true: token expiry and certificate "
                     "dates depend on the clock")
    return _ok("clock", sid, f"within {max(1.0, abs(offset)):.0f} s of {host}'s clock")


# -- destinations and locks ------------------------------------------------------------------------

def _writable(path: Path) -> tuple[str | None, Path]:
    """(why pixsrc could not write there or create it, or None; the folder that exists: ``path`` or
    the nearest parent it would be created in). Proven with a temp file, removed at once."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder", existing
    try:
        fd, name = tempfile.mkstemp(dir=existing, prefix=".pixsrc-doctor-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"cannot write in {existing}: {exc.strerror or exc}", existing
    return None, existing


def _destination_check(cfg: Config, source: Source) -> Check:
    from pixsrc.fetch import destination

    path = destination(cfg, source, None, several=False)
    why = ("the source's dest" if source.dest else "defaults.dest" if cfg.default_dest
           else "the default: the pictures folder")
    fix = f"choose a folder this user can write to: pixsrc edit {source.id} --dest DIR (or fix that one)"
    problem, existing = _writable(path)
    if problem:
        return _fail("destination", source.id, f"{path} ({why}): {problem}", fix, EXIT_UNAVAILABLE)
    free = shutil.disk_usage(existing).free
    later = "" if existing == path else f", created in {existing} on the first fetch"
    detail = f"{path} ({why}): writable{later}, {human_size(free)} free"
    if free < LOW_SPACE:
        return _warn("destination", source.id, detail, f"free some space, or choose another folder: "
                     f"pixsrc edit {source.id} --dest DIR")
    return _ok("destination", source.id, detail)


def _lock_role(path: Path) -> tuple[str | None, str]:
    """(the source a lock file belongs to, what holds it) from its name (see fetch.py and oauth.py)."""
    stem = path.name.removesuffix(".lock")
    if path.parent.name == "locks":
        if stem.startswith("auth-"):
            return stem.removeprefix("auth-"), "a token refresh"
        return stem, "a fetch"
    return None, "a change to " + stem


def _lock_checks(config: Path, source_id: str | None) -> list[Check]:
    """Locks are flocks: the kernel releases one when its process ends, so a lock file a crashed
    run left behind is free, never stale. What can still stop a run: a lock held now (a fetch that
    has not finished), and a lock file this user cannot open (left by a run as another user)."""
    from pixsrc.locks import is_held

    root = state_dir()
    paths: Iterable[Path]
    if source_id is None:
        paths = [*sorted((root / "locks").glob("*.lock")), *sorted(root.glob("*.lock")),
                 real_file(config).with_name(real_file(config).name + ".lock")]
    else:
        paths = [root / "locks" / f"{source_id}.lock", root / "locks" / f"auth-{source_id}.lock"]
    found = [p for p in paths if p.exists()]
    checks = []
    for path in found:
        owner, role = _lock_role(path)
        try:
            held = is_held(path)
        except OSError as exc:
            checks.append(_fail("locks", owner, f"cannot open the lock file {path}: {exc.strerror or exc}",
                                "left by a run as another user (sudo?): remove it, or chown it to this user",
                                EXIT_USAGE))
            continue
        if held:
            checks.append(_ok("locks", owner, f"{path} is held: {role} is running now"))
    if not checks:
        files = f"{len(found)} lock file{'s' if len(found) != 1 else ''}"
        checks.append(_ok("locks", source_id, f"none held ({files}, all free: the kernel releases a lock "
                          "when its process ends, even after a crash)"))
    return checks
