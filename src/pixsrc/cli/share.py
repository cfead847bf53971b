"""``pixsrc export`` / ``pixsrc import``: share source definitions (never credentials) with a team."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pixsrc.cli.common import app_state, handle_errors, load, print_json, print_table, say, warn

app = typer.Typer()


@app.command("export", epilog="Example: pixsrc export client-assets my-drive --output team-sources.toml")
@handle_errors
def export(
    ctx: typer.Context,
    refs: Annotated[list[str] | None, typer.Argument(metavar="[SOURCE]...", help="Ids or names (default: all).",
                                                     show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE",
                                                help="Write the document here (mode 0644) instead of stdout.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --output if it exists.")] = False,
    with_dest: Annotated[bool, typer.Option("--with-dest", help="Include each source's download folder.")] = False,
) -> None:
    """Print the chosen sources' settings as a TOML document to share; credentials and state stay here."""
    from pixsrc.share import export_sources

    to_file = output is not None and str(output) != "-"
    result = export_sources(load(ctx), refs or [], with_dest=with_dest, output=output if to_file else None,
                            force=force)
    for message in result.warnings:
        warn(f"warning: {message}")
    if result.written_to is None:
        sys.stdout.write(result.text)
    else:
        say(f"exported {result.count} source{'s' if result.count != 1 else ''} to {result.written_to}")


@app.command("import", epilog="Example: pixsrc import team-sources.toml --dry-run")
@handle_errors
def import_(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="A document made by `pixsrc export` ('-': stdin).")],
    on_conflict: Annotated[str, typer.Option(
        "--on-conflict", metavar="rename|skip|replace",
        help="When a source's id or name is taken: add it under a free one, skip it, or replace the source "
             "with that id.")] = "rename",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Add the sources of an exported document to your config; nothing is written if any entry is invalid."""
    from pixsrc.share import import_file

    report = import_file(file, app_state(ctx).config_path, on_conflict=on_conflict, dry_run=dry_run, stdin=sys.stdin)
    for message in report.warnings:
        warn(f"warning: {message}")
    if json_out:
        print_json(report.as_json())
    elif report.sources:
        print_table(["ACTION", "ID", "NAME", "TYPE", "NOTE"], [
            [s.action, s.id, s.name, s.type,
             (f"was {s.from_id!r}" if s.id != s.from_id else "") + (f" ({s.reason})" if s.reason else "")]
            for s in report.sources])
    for provider in report.providers:
        if provider.added:
            say(f"[providers.{provider.name}]: added {', '.join(provider.added)}")
    done = [s for s in report.sources if s.action != "skipped"]
    if dry_run:
        say(f"dry run: nothing written to {report.config}")
    elif report.changed:
        say(f"imported {len(done)} source{'s' if len(done) != 1 else ''} into {report.config}")
    else:
        say(f"nothing to import; {report.config} is unchanged")
    sign_in = [s.id for s in done if s.needs_credential]
    if sign_in and not dry_run:
        say("credentials are per machine; next: " + "; ".join(f"pixsrc auth login {sid}" for sid in sign_in))
