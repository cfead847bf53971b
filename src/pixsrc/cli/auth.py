"""``pixsrc auth``: store, inspect and forget the credentials of sources."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from pixsrc.cli.common import app_state, handle_errors, is_interactive, print_json, say
from pixsrc.errors import UsageError

app = typer.Typer(help="Log sources in and out; credentials live in the OS keyring, never in the config.",
                  epilog="Example: printf %s \"$KEY\" | pixsrc auth login client-assets --api-key-stdin",
                  no_args_is_help=True)

SourceArg = Annotated[str, typer.Argument(metavar="SOURCE", help="Id or name.")]


def _source_and_type(ctx: typer.Context, ref: str) -> tuple[Any, Any]:
    from pixsrc.config import load_config
    from pixsrc.fetch import source_type

    source = load_config(app_state(ctx).config_path).find(ref)
    return source, source_type(source)


@app.command(epilog="Examples: pixsrc auth login client-assets\n\n"
                    "  printf %s \"$KEY\" | pixsrc auth login client-assets --api-key-stdin")
@handle_errors
def login(
    ctx: typer.Context,
    source_ref: SourceArg,
    api_key_stdin: Annotated[bool, typer.Option("--api-key-stdin", help="Read the API key from stdin.")] = False,
    store: Annotated[str | None, typer.Option("--store", metavar="keyring|file",
                                              help="Where to keep it (file: mode-0600 file in the state dir).")] = None,
) -> None:
    """Store the credential a source needs."""
    from pixsrc import tokens

    source, stype = _source_and_type(ctx, source_ref)
    if store not in (None, "keyring", "file"):
        raise UsageError(f"--store {store!r}: use keyring or file")
    if stype.auth.kind == "none":
        raise UsageError(f"source {source.id!r} ({stype.id}) needs no credential")
    if stype.auth.kind == "oauth2":
        raise UsageError(f"OAuth login for {stype.id} is not available in this version of pixsrc")
    if api_key_stdin:
        secret = sys.stdin.read().strip()
    elif is_interactive():
        secret = typer.prompt(stype.auth.label, hide_input=True).strip()
    else:
        raise UsageError("no terminal to ask for the key", hint="pipe it in with --api-key-stdin")
    if not secret:
        raise UsageError("the key is empty")
    where = tokens.put(source.id, secret, store)  # type: ignore[arg-type]
    say(f"stored the credential of {source.id!r} in {where}")


@app.command(epilog="Example: pixsrc auth status --json")
@handle_errors
def status(
    ctx: typer.Context,
    source_ref: Annotated[str | None, typer.Argument(metavar="[SOURCE]", help="Id or name; all if omitted.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show, per source, whether a credential is stored and where (never the credential)."""
    from pixsrc import registry, tokens
    from pixsrc.config import load_config

    cfg = load_config(app_state(ctx).config_path)
    sources = [cfg.find(source_ref)] if source_ref else list(cfg.sources.values())
    rows = []
    for source in sources:
        if not registry.is_installed(source.type):
            rows.append({"source": source.id, "kind": None, "status": "unavailable", "stored_in": None,
                         "detail": f"type {source.type!r} is not installed"})
            continue
        auth = registry.get(source.type).auth
        rows.append({"source": source.id, **tokens.status(source.id, auth.kind, auth.required)})
    if json_out:
        print_json(rows)
        return
    for row in rows:
        where = row["stored_in"] or row["detail"] or ""
        print(f"{row['source']}: {row['kind'] or '?'}: {row['status']}" + (f" ({where})" if where else ""))


@app.command(epilog="Example: pixsrc auth logout client-assets")
@handle_errors
def logout(ctx: typer.Context, source_ref: SourceArg) -> None:
    """Delete a source's stored credential."""
    from pixsrc import tokens

    source, _ = _source_and_type(ctx, source_ref)
    removed = tokens.delete(source.id)
    say(f"deleted the credential of {source.id!r} from {', '.join(removed)}" if removed
        else f"no stored credential for {source.id!r}")
    if tokens.env_var(source.id) in os.environ:
        say(f"note: {tokens.env_var(source.id)} is still set in this environment")
