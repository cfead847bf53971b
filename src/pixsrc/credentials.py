"""Checking credentials: prove one works, rotate an API key without ever storing a bad one, and the
CI gate behind ``pixsrc auth check``.

``check`` is offline by default: it reads what is stored (never printing it) and compares the known
end of each credential with a window; ``online`` adds one authenticated call per source. A type
that needs no credential is never looked up, so no keyring is asked for it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pixsrc.durations import rfc3339
from pixsrc.errors import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    AuthRequired,
    SourceUnavailable,
    UsageError,
    worst,
)

if TYPE_CHECKING:
    from pixsrc.config import Source
    from pixsrc.tokens import Store
    from pixsrc.types import AuthSpec

CheckStatus = Literal["ok", "missing", "invalid", "expiring", "expired", "error", "rejected", "unreachable",
                      "unavailable"]
EXIT_OF: dict[CheckStatus, int] = {"ok": EXIT_OK, "unavailable": EXIT_USAGE, "missing": EXIT_AUTH,
                                   "invalid": EXIT_AUTH, "expiring": EXIT_AUTH, "expired": EXIT_AUTH,
                                   "error": EXIT_AUTH, "rejected": EXIT_AUTH, "unreachable": EXIT_UNAVAILABLE}


def verify(source: Source, providers: dict[str, Any], *, secret: str | None = None,
           list_fallback: bool = False) -> str | None:
    """One cheap authenticated call that proves the credential works; returns what it showed.

    ``secret``: check this API key instead of the stored one. Types without a ``verify()`` are
    checked by listing their first asset when ``list_fallback`` is set (else None: not checked).
    Raises AuthRequired when the source refuses the credential, SourceUnavailable when it cannot
    be reached.
    """
    from pixsrc.fetch import open_controller

    controller, _ = open_controller(source, jobs=1, providers=providers, secret=secret)
    try:
        check = getattr(controller, "verify", None)
        if check is not None:
            who = check()
            return f"the credential works{f' ({who})' if who else ''}"
        if not list_fallback:
            return None
        assets = controller.list_assets()
        try:
            next(iter(assets), None)  # the first page is enough: it was fetched with the credential
        finally:
            close = getattr(assets, "close", None)
            if close is not None:
                close()  # a crawl's worker pool stops now, not when the generator is collected
        return "the source answered a listing with it"
    finally:
        controller.close()


def rotatable(source: Source, auth: AuthSpec) -> Store:
    """The store holding the API key `rotate` would replace; UsageError (exit 2) when there is none
    (OAuth, no credential at all, or a key that only comes from the environment)."""
    from pixsrc import tokens

    if auth.kind == "none":
        raise UsageError(f"source {source.id!r} needs no credential")
    if auth.kind != "api-key":
        raise UsageError(f"{source.id!r} signs in with OAuth: there is no key to rotate",
                         hint=f"sign in again (it replaces the tokens): pixsrc auth login {source.id}")
    old = tokens.locate(source.id, optional=not auth.required)
    if old is None:
        if tokens.env_var(source.id) in os.environ:
            raise UsageError(f"the key of {source.id!r} comes from {tokens.env_var(source.id)}; change it there")
        raise UsageError(f"{source.id!r} has no stored key to rotate", hint=f"store one: pixsrc auth login {source.id}")
    return old


def rotate(source: Source, auth: AuthSpec, new_key: str, providers: dict[str, Any],
           store: Store | None = None, old: Store | None = None) -> tuple[str, str | None]:
    """Replace the source's API key with ``new_key`` once the source has accepted it.

    Returns (where it went, what the check showed). The new key goes to the store the old one was in
    (``store`` to move it; ``old``: that store, when the caller asked ``rotatable`` already: each
    lookup may wait on the keyring); a refused key raises AuthRequired and an unreachable source
    SourceUnavailable, both before anything was written, so the old key keeps working.
    """
    from pixsrc import redact, tokens

    redact.register(new_key)
    old = old or rotatable(source, auth)
    if not new_key:
        raise UsageError("the key is empty")
    try:
        checked = verify(source, providers, secret=new_key, list_fallback=True)
    except AuthRequired as exc:
        raise AuthRequired(f"the new key was refused ({exc.message}); the stored key is unchanged",
                           hint="check the new key, or keep using the old one") from None
    except SourceUnavailable as exc:
        raise SourceUnavailable(f"could not check the new key ({exc.message}); the stored key is unchanged",
                                hint=f"try again when {source.id!r} answers") from None
    target = store or old
    where = tokens.put(source.id, new_key, target)
    if target != old:  # the old key must not stay behind in the store it came from
        try:
            tokens.delete(source.id, stores=(old,))
        except AuthRequired as exc:
            raise AuthRequired(f"the new key is stored in {where}, but the old one could not be deleted from the "
                               f"{old}: {exc.message}", hint=exc.hint) from None
    return where, checked


@dataclass(frozen=True)
class CheckResult:
    """One source's line of `auth check`; ``expires_at`` is when its credential stops working, if known."""

    source: str
    kind: str | None
    status: CheckStatus
    detail: str
    stored_in: str | None = None
    expires_at: float | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OF[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "status": self.status, "ok": self.status == "ok",
                "stored_in": self.stored_in, "expires_at": rfc3339(self.expires_at) if self.expires_at else None,
                "detail": self.detail}


def exit_code(results: list[CheckResult]) -> int:
    """The most severe source's code, as `fetch` orders them: config (2), auth (3), unreachable (4)."""
    return worst(result.exit_code for result in results)


def check(sources: list[Source], providers: dict[str, Any], min_validity: float, *, online: bool = False,
          now: float | None = None) -> list[CheckResult]:
    """Each source's credential: present, readable, and valid for ``min_validity`` seconds more.

    Only what is known offline counts: an API key has no known end; for OAuth the refresh token's
    end matters (the provider's word, or its lifetime after issue), not the access token's, which
    is refreshed; without a refresh token, the access token's end. ``online``: sources that pass
    also make one authenticated call (``verify``)."""
    moment = now if now is not None else time.time()
    results = []
    for source in sources:
        result = _offline(source, providers, min_validity, moment)
        if online and result.status == "ok" and result.kind != "none":
            result = _online(source, providers, result)
        results.append(result)
    return results


def _offline(source: Source, providers: dict[str, Any], window: float, now: float) -> CheckResult:
    from pixsrc import registry, tokens

    stype, why = registry.usable(source.type)
    if stype is None:
        return CheckResult(source.id, None, "unavailable", why or "")
    auth = stype.auth
    if auth.kind == "none":
        return CheckResult(source.id, "none", "ok", "needs no credential")
    login = f"run: pixsrc auth login {source.id}"
    try:
        credential = tokens.get(source.id, optional=not auth.required)
    except AuthRequired as exc:
        return CheckResult(source.id, auth.kind, "error", f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
    if credential is None:
        if not auth.required:
            return CheckResult(source.id, auth.kind, "ok", "no key stored (optional)")
        return CheckResult(source.id, auth.kind, "missing", f"no stored credential; {login}")
    stored_in = credential.stored_in
    if auth.kind != "oauth2" or auth.oauth is None:
        when = None if stored_in.startswith("env ") else tokens.stored_at(source.id)
        age = f"stored {_span(now - when)} ago" if when is not None else "age unknown"
        return CheckResult(source.id, auth.kind, "ok", f"key in {stored_in}, {age}", stored_in)
    from pixsrc import oauth

    try:
        token_set = oauth.TokenSet.parse(credential.value)
    except AuthRequired as exc:
        return CheckResult(source.id, "oauth2", "invalid", f"{exc.message}; {login}", stored_in)
    if token_set.provider != auth.oauth.name:
        return CheckResult(source.id, "oauth2", "invalid",
                           f"the credential is for {token_set.provider!r}; {login}", stored_in)
    if token_set.refresh_token:
        try:
            limit = oauth.refresh_limit_days(auth.oauth, providers)
        except UsageError as exc:
            return CheckResult(source.id, "oauth2", "unavailable", exc.message, stored_in)
        ends = token_set.refresh_expiry(limit)
        what = "refresh token"
        if ends is None:
            unknown = (f"; its age is unknown, so its {limit:g}-day limit cannot be checked (sign in again to "
                       "record it)" if limit else "")
            return CheckResult(source.id, "oauth2", "ok", f"refresh token without a known end{unknown}", stored_in)
    else:
        ends, what = token_set.expires_at, "no refresh token: the access token"
        if ends is None:
            return CheckResult(source.id, "oauth2", "ok", "access token without an end, no refresh token",
                               stored_in)
    if ends <= now:
        return CheckResult(source.id, "oauth2", "expired", f"{what} expired {rfc3339(ends)}; {login}", stored_in, ends)
    if ends - now < window:
        return CheckResult(source.id, "oauth2", "expiring",
                           f"{what} expires {rfc3339(ends)} (in {_span(ends - now)}); {login}", stored_in, ends)
    return CheckResult(source.id, "oauth2", "ok", f"{what} valid until {rfc3339(ends)} ({_span(ends - now)} left)",
                       stored_in, ends)


def _online(source: Source, providers: dict[str, Any], offline: CheckResult) -> CheckResult:
    from dataclasses import replace

    try:
        shown = verify(source, providers, list_fallback=True)
    except AuthRequired as exc:
        return replace(offline, status="rejected", detail=f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
    except SourceUnavailable as exc:
        return replace(offline, status="unreachable", detail=exc.message)
    except UsageError as exc:
        return replace(offline, status="unavailable", detail=exc.message)
    return replace(offline, detail=f"{offline.detail}; {shown}")


def _span(seconds: float) -> str:
    from pixsrc.durations import format_duration

    return format_duration(max(0.0, seconds))
