"""The plugin-author API: what a source type is, what its controller does, what an asset is.

A source type is data (id, names, a pydantic config model, an auth spec) plus a factory that
builds a Controller. Controllers only list assets and describe how to fetch each one (a
``Transfer``); the sync engine decides what to download, moves the bytes, writes files and records
state.
"""

from __future__ import annotations

import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pixsrc.errors import ConfigError

if TYPE_CHECKING:
    from pixsrc.api import Api

FieldKind = Literal["text", "url", "boolean", "select", "integer", "path", "list"]
AuthKind = Literal["none", "api-key", "oauth2"]


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:  # user:password@host: in the config file in the clear, sent to every host
        raise ValueError("must not contain a user name or password (user:password@); remove it and store the "
                         "secret as the source's credential (its API key): pixsrc auth login SOURCE")
    return value


HttpUrl = typing.Annotated[str, AfterValidator(_check_http_url)]
"""A string that must be an absolute http(s) URL; shown as field type ``url``."""


def field(
    default: Any = ...,
    *,
    label: str,
    placeholder: str | None = None,
    kind: FieldKind | None = None,
    description: str | None = None,
) -> Any:
    """Declare a config field with the metadata the wizard and ``pixsrc types`` show."""
    extra: dict[str, Any] = {"label": label}
    if placeholder is not None:
        extra["placeholder"] = placeholder
    if kind is not None:
        extra["kind"] = kind
    if isinstance(default, list):
        return Field(default_factory=lambda: list(default), description=description, json_schema_extra=extra)
    return Field(default, description=description, json_schema_extra=extra)


class SourceConfig(BaseModel):
    """Base class of every type's config model: unknown keys are errors, not silently kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class FieldSpec:
    key: str
    label: str
    type: FieldKind
    required: bool
    default: Any
    placeholder: str | None
    options: list[str] | None
    description: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "placeholder": self.placeholder,
            "options": self.options,
            "description": self.description,
        }


def _kind_of(annotation: Any) -> tuple[FieldKind, list[str] | None]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        if any(getattr(m, "func", None) is _check_http_url for m in meta):
            return "url", None
        return _kind_of(base)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind_of(args[0]) if len(args) == 1 else ("text", None)
    if origin is Literal:
        return "select", [str(a) for a in typing.get_args(annotation)]
    if origin in (list, tuple):
        return "list", None
    if annotation is bool:
        return "boolean", None
    if annotation is int:
        return "integer", None
    return "text", None


@dataclass(frozen=True)
class OAuthProvider:
    """A provider's OAuth 2.0 facts. Every URL can be overridden in ``[providers.<name>]``.

    ``loopback_port``: None when the provider accepts any loopback port (RFC 8252 section 7.3,
    Google desktop clients), else the fixed default port of the redirect URI users register.
    ``client_auth``: how a client secret reaches the token endpoint (``basic`` or ``post``);
    ``secret``: whether the provider needs one at all (``none`` when PKCE replaces it).
    ``sends_iss``: the provider puts ``iss`` in every authorization response (RFC 9207; its metadata's
    ``authorization_response_iss_parameter_supported``), so a callback without one is refused. A wrong
    ``iss`` is refused whenever ``issuer`` is known.
    """

    name: str
    display_name: str
    authorize_url: str
    token_url: str
    api_base_url: str
    revoke_url: str | None = None
    revoke_style: Literal["rfc7009", "bearer", "none"] = "rfc7009"
    content_base_url: str | None = None
    notify_base_url: str | None = None
    """Where change notifications are long-polled (Dropbox's notify host), if the provider has one."""
    issuer: str | None = None
    sends_iss: bool = False
    scope_separator: str = " "
    pkce: bool = True
    secret: Literal["none", "optional", "required"] = "none"
    client_auth: Literal["basic", "post"] = "post"
    loopback_port: int | None = None
    redirect_path: str = "/callback"
    authorize_params: tuple[tuple[str, str], ...] = ()
    refresh_params: tuple[tuple[str, str], ...] = ()
    rotates_refresh_token: bool = False
    refresh_token_days: int | None = None
    limits_note: str | None = None
    console_url: str | None = None
    max_concurrency: int | None = None
    requests_per_second: float | None = None


@dataclass(frozen=True)
class AuthSpec:
    """How a source authenticates. ``required=False`` means the credential is optional."""

    kind: AuthKind = "none"
    provider: str | None = None
    scopes: tuple[str, ...] = ()
    required: bool = True
    label: str = "API key"
    oauth: OAuthProvider | None = None
    scopes_for: Callable[[Any], tuple[str, ...]] | None = dc_field(default=None, compare=False)
    """Optional: the scopes to ask for given the source's validated config (e.g. extra scopes for an
    opt-in feature). ``scopes`` stays the base set that ``pixsrc types`` shows."""

    def scopes_of(self, config: Any | None) -> tuple[str, ...]:
        """The scopes a sign-in asks for, for a source with this (validated) config."""
        if self.scopes_for is None or config is None:
            return self.scopes
        return tuple(self.scopes_for(config))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "provider": self.provider, "scopes": list(self.scopes), "required": self.required}


@dataclass(frozen=True)
class Checksum:
    """A checksum the source publishes for an asset: ``algorithm`` is a hashlib name (or a key of
    ``HASHERS``), ``value`` its hex digest."""

    algorithm: str
    value: str


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


HASHERS: dict[str, Callable[[], Hasher]] = {}
"""Checksum algorithms hashlib does not have (e.g. Dropbox's content hash), by name."""


def new_hasher(algorithm: str) -> Hasher:
    if algorithm in HASHERS:
        return HASHERS[algorithm]()
    import hashlib

    return hashlib.new(algorithm)


class SourceCache(Protocol):
    """A small per-source key-value store that survives between runs (e.g. a change cursor).

    Writes are kept only when the listing completed, so a cursor never skips past a failed run.
    """

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


class MemoryCache:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def put(self, key: str, value: str) -> None:
        self.values[key] = value


LISTED = "listed:"
"""The prefix of a version read from a folder listing's size and date: a conditional GET is sent
once to move a manifest entry with a version learned from ETag / Last-Modified onto it."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One listable item of a source.

    ``id`` is stable within the source; ``path`` is a suggested relative POSIX path (the engine
    sanitises it); ``version`` changes if and only if the content changes; an empty ``version``
    means the listing does not know it (a web-server folder listing): the engine then learns it from
    the download's ETag / Last-Modified and re-checks with a conditional GET. ``ref`` is private to the
    controller (a download URL, a file id) and never shown. ``same_as`` optionally names another
    asset of the same listing with identical content (one image on two boards): the engine then
    copies that asset's local file, once it has it intact, instead of downloading again.
    """

    id: str
    path: str
    version: str
    size: int | None = None
    modified: datetime | None = None
    media_type: str | None = None
    checksum: Checksum | None = None
    ref: Any = dc_field(default=None, compare=False, repr=False)
    same_as: str | None = None


class TransferAuth(Protocol):
    """Supplies credential headers for a request and is told when the server refused them (401).

    ``unauthorized`` refreshes the credential once (an OAuth refresh) or raises ``AuthRequired``;
    the request is then sent again with fresh ``headers()``. The same object serves both planes:
    ``pixsrc.api`` wraps it in an ``httpx.Auth`` flow, the transfer loop calls it directly.
    """

    def headers(self) -> dict[str, str]: ...

    def unauthorized(self, sent_headers: Mapping[str, str], /) -> None: ...


class BearerKey:
    """A static key or token as a ``TransferAuth``: an ``Authorization: Bearer`` header. There is
    nothing to refresh, so a 401 ends the source with exit 3: ``refused`` says what, ``hint`` the fix."""

    def __init__(self, key: str, refused: str, hint: str) -> None:
        self._key = key
        self.refused, self.hint = refused, hint

    def __repr__(self) -> str:  # never the key, not even in a traceback
        return "BearerKey(<hidden>)"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def unauthorized(self, sent_headers: Mapping[str, str], /) -> None:
        from pixsrc.errors import AuthRequired

        raise AuthRequired(self.refused, hint=self.hint)


@dataclass(frozen=True)
class TransferError:
    """What a controller makes of a failed answer (see ``Transfer.on_error``).

    ``retry``: try again later (after ``retry_after`` seconds if given, else the backoff policy);
    ``auth``: the credential was refused for good, the source ends with exit 3;
    ``unavailable``: nothing more can come from this source now (a daily quota), it ends with exit 4.
    """

    message: str
    retry: bool = False
    retry_after: float | None = None
    auth: bool = False
    unavailable: bool = False
    hint: str | None = None
    """The fix, for ``auth`` and ``unavailable`` ("store its API key: pixsrc auth login x")."""


@dataclass(frozen=True)
class Transfer:
    """How the engine fetches one asset. Controllers describe; the engine moves the bytes.

    ``url`` is an http(s) URL, or for ``local_path`` transfers ignored. ``headers`` are sent as
    given (the engine refuses CR, LF and NUL in them); ``auth`` adds the credential to requests to
    ``url``'s own origin only (libcurl drops it on a redirect to another host, port or scheme).
    ``resumable``: the server honours ``Range`` (with ``If-Range`` on ``validator``) so a ``.part``
    file is continued, not restarted. ``on_error`` classifies a non-2xx answer from its status,
    headers and the first 64 KB of its body; returning None keeps the engine's default (401 ->
    refresh once, then exit 3; 408/429/5xx -> retried; anything else -> this asset failed).
    """

    url: str = ""
    method: Literal["GET", "POST"] = "GET"
    headers: Mapping[str, str] = dc_field(default_factory=dict)
    body: bytes | None = None
    auth: TransferAuth | None = None
    resumable: bool = True
    validator: str | None = None
    """A strong ETag (or an HTTP date) that identifies the listed version, sent in ``If-Range``."""
    rate_limited: bool = True
    """Counts against the provider's request caps; False for downloads from a CDN (Pinterest's
    images), which the API's limits do not cover."""
    local_path: str | None = None
    """Copy this local file instead of downloading (local-fs)."""
    on_error: Callable[[int, Mapping[str, str], bytes], TransferError | None] | None = dc_field(
        default=None, compare=False)


class Controller(Protocol):
    def list_assets(self) -> Iterator[Asset]:
        """Yield every asset, paging the provider lazily. Raise SourceUnavailable or AuthRequired."""
        ...

    def transfer(self, asset: Asset) -> Transfer:
        """Describe how to fetch the asset's content. Raise AssetError for this asset alone."""
        ...

    def close(self) -> None: ...


class ChangeWaiter(Protocol):
    """An optional extra of a Controller: wait for the source to change (``pixsrc watch``).

    ``wait_for_change(cancel, timeout)`` blocks for at most about ``timeout`` seconds and returns True
    when the source has (or may have) changed since its last completed listing, False when nothing
    changed in that time or ``cancel`` was set. It reads the position of that listing from the source
    cache (a cursor, a change token the listing saved there) and never moves it: the next fetch lists
    from where the last one ended. It runs on a background thread of its own, on a controller of its
    own, so it may block in an HTTP call (a long poll); the fetch itself always runs on the main
    thread. A provider that can only be polled asks every ``SourceContext.poll_every`` seconds and
    honours its rate limits; a provider that asks to back off is obeyed. Errors are raised as usual
    (SourceUnavailable, AuthRequired): the watch backs off and says so.

    A controller without this method is fetched on its interval only.
    """

    def wait_for_change(self, cancel: threading.Event, timeout: float) -> bool: ...


def can_wait_for_change(controller: object) -> bool:
    """Whether a controller implements the optional ChangeWaiter extra."""
    return callable(getattr(controller, "wait_for_change", None))


@dataclass
class SourceContext:
    """What a controller factory gets: its validated config and the services it may use."""

    source_id: str
    source_name: str
    config: Any
    jobs: int = 8
    get_secret: Callable[[], str | None] = lambda: None
    user_agent: str = "pixsrc"
    auth: TransferAuth | None = None
    """For oauth2 types: the session that adds (and refreshes) the bearer token, for both planes."""
    provider: Any = None
    """For oauth2 types: ``pixsrc.oauth.ProviderSettings`` (URLs with the user's overrides applied)."""
    cache: SourceCache = dc_field(default_factory=MemoryCache)
    warn: Callable[[str], None] = lambda message: None
    """Tell the user something (a skipped item, a long rate-limit wait); shown on stderr."""
    cancel: threading.Event = dc_field(default_factory=threading.Event)
    """Set when the run is interrupted: API waits end at once."""
    poll_every: float = 30.0
    """For ``wait_for_change`` of a provider that can only be polled: seconds between two polls
    (``pixsrc watch --poll``). Read when waiting, not when the controller is built."""

    def api(self, **options: Any) -> Api:
        """A ``pixsrc.api.Api`` (httpx) wired for this source: its OAuth token (refreshed on expiry
        and once on 401), the provider's rate limits, User-Agent, the run's cancel event, and waits
        shown to the user. ``options`` go to Api (e.g. ``retry_when``, ``headers``, ``timeout``)."""
        from pixsrc.api import Api

        def on_wait(seconds: float, reason: str) -> None:
            self.warn(f"{reason}; waiting {seconds:.0f} s before retrying")

        options.setdefault("auth", self.auth)
        options.setdefault("on_wait", on_wait)
        options.setdefault("user_agent", self.user_agent)
        options.setdefault("cancel", self.cancel)
        if self.provider is not None:
            options.setdefault("limit", self.provider.rate_limit())
        return Api(**options)


@dataclass(frozen=True)
class SourceType:
    id: str
    name: str
    category: Literal["cloud", "social", "local", "web"] | str
    description: str
    config_model: type[SourceConfig]
    factory: Callable[[SourceContext], Controller]
    auth: AuthSpec = AuthSpec()

    def fields(self) -> list[FieldSpec]:
        specs = []
        for key, info in self.config_model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            kind, options = _kind_of(info.annotation if not info.metadata else
                                     typing.Annotated[(info.annotation, *info.metadata)])
            required = info.is_required()
            default = None if required else info.get_default(call_default_factory=True)
            specs.append(
                FieldSpec(
                    key=key,
                    label=str(extra.get("label", key)),
                    type=typing.cast(FieldKind, extra.get("kind", kind)),
                    required=required,
                    default=default,
                    placeholder=typing.cast("str | None", extra.get("placeholder")),
                    options=options,
                    description=info.description,
                )
            )
        return specs

    def validate(self, raw: dict[str, Any], where: str) -> SourceConfig:
        """Validate a config table; errors name ``<where>.<field>`` and why."""
        try:
            return self.config_model.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, where)) from None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "auth": self.auth.as_dict(),
            "fields": [f.as_dict() for f in self.fields()],
        }


def describe_validation_error(exc: ValidationError, where: str) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in err["loc"] if not isinstance(part, int))
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        problems.append(f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}")
    return "; ".join(problems)
