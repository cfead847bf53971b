"""``pixsrc auth``: sign sources in and out; credentials live in the OS keyring, never in the config."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsrc.cli.common import SourceArg, handle_errors, is_interactive, load, print_json, print_text, say, warn
from pixsrc.errors import UsageError

if TYPE_CHECKING:
    from pixsrc.config import Config, Source
    from pixsrc.types import SourceType

app = typer.Typer(help="Sign sources in and out; credentials live in the OS keyring, never in the config.",
                  epilog="Example: pixsrc auth login my-drive", no_args_is_help=True)

StoreOption = Annotated[str | None, typer.Option("--store", metavar="keyring|file",
                                                 help="Where to keep it (file: mode-0600 file in the state dir).")]


def _source_and_type(cfg: Config, ref: str) -> tuple[Source, SourceType]:
    from pixsrc import registry

    source = cfg.find(ref)
    return source, registry.of(source)


def _check_store(store: str | None) -> None:
    if store not in (None, "keyring", "file"):
        raise UsageError(f"--store {store!r}: use keyring or file")


def oauth_login(cfg: Config, source_id: str, title: str, stype: SourceType, *, open_browser: bool = True,
                port: int | None = None, timeout: float = 300.0, store: str | None = None) -> None:
    """Run the browser sign-in for a source and store its tokens (also the `add` wizard's step)."""
    from pixsrc import oauth

    spec = stype.auth
    assert spec.oauth is not None
    settings = oauth.settings_for(spec.oauth, cfg.providers())
    if not settings.client_id:
        raise UsageError(f"no OAuth client is set up for {spec.oauth.display_name}",
                         hint=oauth.setup_steps(settings, source_id))
    source = cfg.sources.get(source_id)
    model = stype.validate(source.config, f"sources.{source_id}.config") if source is not None else None
    token_set = oauth.login(settings, spec.scopes_of(model), title, open_browser=open_browser, port=port,
                            timeout=timeout, stdin=sys.stdin)
    where = oauth.store_new_tokens(source_id, token_set, store, settings)
    say(f"signed in; tokens stored in {where}")


def _verify(cfg: Config, source: Source) -> None:
    """One cheap authenticated call, where the type has one, to prove the new credential works."""
    from pixsrc import credentials

    if checked := credentials.verify(source, cfg.providers()):
        say(f"checked: {checked}")


def _read_key(label: str, from_stdin: bool, what: str = "key", flag: str = "--api-key-stdin") -> str:
    """A key or secret from stdin or a hidden prompt, masked in every message from now on."""
    from pixsrc import redact

    if from_stdin:
        secret = sys.stdin.read().strip()
    elif is_interactive():
        secret = typer.prompt(label, hide_input=True).strip()
    else:
        raise UsageError(f"no terminal to ask for the {what}", hint=f"pipe it in with {flag}")
    redact.register(secret)
    if not secret:
        raise UsageError(f"the {what} is empty")
    return secret


@app.command(epilog="Examples: pixsrc auth login my-drive\n\n"
                    "  pixsrc auth login my-drive --no-browser   # over SSH: open the URL elsewhere, paste back\n\n"
                    "  printf %s \"$KEY\" | pixsrc auth login client-assets --api-key-stdin")
@handle_errors
def login(
    ctx: typer.Context,
    source_ref: SourceArg,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the sign-in URL.")] = False,
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535,
                                             help="Loopback port for the redirect (OAuth).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", min=1,
                                           help="Give up waiting for the sign-in after this long.")] = 300,
    api_key_stdin: Annotated[bool, typer.Option("--api-key-stdin", help="Read the API key from stdin.")] = False,
    store: StoreOption = None,
) -> None:
    """Sign a source in: the browser flow for OAuth types, a hidden prompt for API keys."""
    from pixsrc import tokens

    _check_store(store)
    cfg = load(ctx)
    source, stype = _source_and_type(cfg, source_ref)
    kind = stype.auth.kind
    if kind == "none":
        raise UsageError(f"source {source.id!r} ({stype.id}) needs no credential")
    if kind == "oauth2":
        oauth_login(cfg, source.id, source.name, stype, open_browser=not no_browser, port=port, timeout=timeout,
                    store=store)
    else:
        secret = _read_key(stype.auth.label, api_key_stdin)
        say(f"stored the credential of {source.id!r} in {tokens.put(source.id, secret, store)}")  # type: ignore[arg-type]
    _verify(cfg, source)


def _status_row(source: Source, providers: dict[str, Any]) -> dict[str, Any]:
    from pixsrc import registry, tokens

    stype, why = registry.usable(source.type)
    if stype is None:
        return {"source": source.id, "kind": None, "status": "unavailable", "stored_in": None, "detail": why}
    return {"source": source.id, **tokens.describe(source.id, stype.auth, providers)}


def _status_text(row: dict[str, Any]) -> str:
    where = row["stored_in"] or row["detail"] or ""
    if row["kind"] == "none":
        return f"{row['source']}: needs no credential"
    line = f"{row['source']}: {row['kind'] or '?'}: {row['status']}" + (f" ({where})" if where else "")
    if row.get("scopes"):
        line += f"\n    scopes: {' '.join(row['scopes'])}"
    if row.get("access_expires_at"):
        line += f"\n    access token expires {row['access_expires_at']}"
    if row.get("refresh_token_age_days") is not None:
        line += f"\n    refresh token age: {row['refresh_token_age_days']} days"
    if row.get("refresh_expires_at"):
        line += f"\n    refresh token expires {row['refresh_expires_at']}"
    if row["kind"] == "api-key" and row["status"] == "ok":
        age = row.get("age_days")
        line += (f"\n    key age: {age} days (stored {row['stored_at']})" if age is not None
                 else "\n    key age: unknown")
    if row.get("limit"):
        line += f"\n    limit: {row['limit']}"
    return line


@app.command(epilog="Example: pixsrc auth status --json")
@handle_errors
def status(
    ctx: typer.Context,
    source_ref: Annotated[str | None, typer.Argument(metavar="[SOURCE]", help="Id or name; all if omitted.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per source: the auth kind, where the credential is, its age, scopes and expiry (never a token)."""
    cfg = load(ctx)
    sources = [cfg.find(source_ref)] if source_ref else list(cfg.sources.values())
    rows = [_status_row(source, cfg.providers()) for source in sources]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        print_text(_status_text(row))


@app.command(epilog="Example: pixsrc auth logout my-drive")
@handle_errors
def logout(
    ctx: typer.Context,
    source_ref: SourceArg,
    keep_remote: Annotated[bool, typer.Option("--keep-remote", help="Do not revoke at the provider.")] = False,
) -> None:
    """Revoke the source's token at the provider (where supported), then delete it locally."""
    from pixsrc import oauth, tokens
    from pixsrc.errors import AuthRequired

    cfg = load(ctx)
    source, stype = _source_and_type(cfg, source_ref)
    if stype.auth.kind == "none":  # nothing was ever stored: no keyring to ask (or to wait for)
        say(f"source {source.id!r} ({stype.id}) needs no credential; nothing to delete")
        return
    if stype.auth.kind == "oauth2" and stype.auth.oauth is not None and not keep_remote:
        try:
            credential = tokens.get(source.id)
        except AuthRequired:
            credential = None
        if credential is not None:
            try:
                token_set = oauth.TokenSet.parse(credential.value)
            except AuthRequired as exc:
                warn(f"not revoked: {exc.message}")
            else:
                say(oauth.revoke(oauth.settings_for(stype.auth.oauth, cfg.providers()), token_set))
    removed = tokens.forget(source.id, stype.auth)
    say(f"deleted the credential of {source.id!r} from {', '.join(removed)}" if removed
        else f"no stored credential for {source.id!r}")
    if tokens.env_var(source.id) in os.environ:
        warn(f"note: {tokens.env_var(source.id)} is still set in this environment")


@app.command(epilog="Example: printf %s \"$SECRET\" | pixsrc auth client pinterest --secret-stdin")
@handle_errors
def client(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="google, dropbox, pinterest, ...")],
    secret_stdin: Annotated[bool, typer.Option("--secret-stdin", help="Read the secret from stdin.")] = False,
    store: StoreOption = None,
) -> None:
    """Store an OAuth client secret in the keyring (its client_id goes in the config's \\[providers.PROVIDER] table)."""
    from pixsrc import oauth, registry, tokens

    _check_store(store)
    types, _ = registry.load_all()
    known = sorted({t.auth.oauth.name for t in types if t.auth.oauth is not None})
    if provider not in known:
        raise UsageError(f"unknown OAuth provider {provider!r}", hint=registry.suggest(provider, known, "pixsrc types"))
    secret = _read_key(f"Client secret for {provider}", secret_stdin, "secret", "--secret-stdin")
    where = tokens.put(oauth.client_secret_key(provider), secret, store)  # type: ignore[arg-type]
    say(f"stored the {provider} client secret in {where}")


@app.command("export", epilog="Example: pixsrc auth export my-drive  # then save it as a CI secret")
@handle_errors
def export(ctx: typer.Context, source_ref: SourceArg) -> None:
    """Print a bundle for CI (PIXSRC_AUTH_<ID>): it is a password, treat it as one."""
    from pixsrc import oauth, tokens

    source, stype = _source_and_type(load(ctx), source_ref)
    if stype.auth.kind != "oauth2":
        raise UsageError(f"{source.id!r} uses {stype.auth.kind}; set {tokens.env_var(source.id)} to the key itself")
    credential = tokens.get(source.id)
    if credential is None:
        raise UsageError(f"{source.id!r} is not signed in", hint=f"run: pixsrc auth login {source.id}")
    bundle = oauth.TokenSet.parse(credential.value).to_bundle()
    warn(f"warning: this grants access to {source.name}; store it only as a CI secret named "
        f"{tokens.env_var(source.id)}")
    print(bundle)


@app.command("import", epilog="Example: pixsrc auth import my-drive < bundle.txt")
@handle_errors
def import_(ctx: typer.Context, source_ref: SourceArg, store: StoreOption = None) -> None:
    """Store a bundle made by `auth export` (read from stdin) for this source."""
    from pixsrc import oauth, tokens

    _check_store(store)
    source, stype = _source_and_type(load(ctx), source_ref)
    if stype.auth.kind != "oauth2" or stype.auth.oauth is None:
        raise UsageError(f"{source.id!r} does not use OAuth")
    token_set = oauth.TokenSet.parse(sys.stdin.read())
    if token_set.provider != stype.auth.oauth.name or not token_set.refresh_token:
        raise UsageError(f"that bundle is not a {stype.auth.oauth.name} sign-in with a refresh token")
    say(f"stored in {tokens.put(source.id, token_set.to_json(), store)}")  # type: ignore[arg-type]


@app.command(epilog="Examples: pixsrc auth rotate client-assets   # asks for the new key\n\n"
                    "  printf %s \"$NEW_KEY\" | pixsrc auth rotate client-assets --api-key-stdin")
@handle_errors
def rotate(
    ctx: typer.Context,
    source_ref: SourceArg,
    api_key_stdin: Annotated[bool, typer.Option("--api-key-stdin", help="Read the new key from stdin.")] = False,
    store: Annotated[str | None, typer.Option("--store", metavar="keyring|file",
                                              help="Move it there (default: where the old key is).")] = None,
) -> None:
    """Replace an API key: the source must accept the new key first, else the old one stays (exit 3)."""
    from pixsrc import credentials, tokens

    _check_store(store)
    cfg = load(ctx)
    source, stype = _source_and_type(cfg, source_ref)
    old = credentials.rotatable(source, stype.auth)  # before asking for a key that could not be used
    secret = _read_key(f"New {stype.auth.label}", api_key_stdin)
    where, checked = credentials.rotate(source, stype.auth, secret, cfg.providers(), store, old)  # type: ignore[arg-type]
    say(f"checked: {checked}" if checked else "the new key was not checked")
    say(f"replaced the key of {source.id!r} in {where}")
    if tokens.env_var(source.id) in os.environ:
        warn(f"note: {tokens.env_var(source.id)} is set in this environment and overrides the stored key")


@app.command(epilog="Examples: pixsrc auth check --min-validity 7d   # a CI gate\n\n"
                    "  pixsrc auth check my-drive --online --json")
@handle_errors
def check(
    ctx: typer.Context,
    source_refs: Annotated[list[str] | None, typer.Argument(
        metavar="[SOURCE]...", help="Ids or names; every enabled source if omitted.")] = None,
    min_validity: Annotated[str, typer.Option(
        "--min-validity", metavar="DURATION",
        help="Fail when a credential ends within this span (30m, 72h, 7d, 2w).")] = "72h",
    online: Annotated[bool, typer.Option("--online", help="Also make one authenticated call per source.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Exit 3 when a credential is missing, unreadable or ends within --min-validity; 0 when all are fine."""
    from pixsrc import credentials
    from pixsrc.durations import parse_duration

    window = parse_duration(min_validity, "--min-validity")
    cfg = load(ctx)
    if source_refs:
        sources = list({source.id: source for source in map(cfg.find, source_refs)}.values())
    else:
        sources = [source for source in cfg.sources.values() if source.enabled]
    results = credentials.check(sources, cfg.providers(), window.total_seconds(), online=online)
    code = credentials.exit_code(results)
    if json_out:
        print_json({"schema": 1, "ok": code == 0, "exit_code": code, "min_validity_seconds": window.total_seconds(),
                    "online": online, "sources": [result.as_dict() for result in results]})
    else:
        for result in results:
            print_text(f"{result.source}: {result.status}: {result.detail}")  # a server's words, --online
        if not results:
            say("no enabled sources to check")
    if code:
        failed = sum(result.status != "ok" for result in results)
        warn(f"{failed} of {len(results)} credentials need attention")
        raise typer.Exit(code)
