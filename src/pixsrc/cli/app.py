"""The ``pixsrc`` command: the root app and its global options.

Command modules import only typer and the standard library at the top; everything heavier
(pydantic models, the HTTP client, keyring, source types) is imported inside the command that needs it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pixsrc import __version__
from pixsrc.cli import auth, common, fetch, sources, types_cmd

app = typer.Typer(
    name="pixsrc",
    help=(
        "Configure your asset sources once, then list and download their images and media.\n\n"
        "Example:\n\n"
        "  pixsrc add local-fs --name Inbox --set path=~/Pictures/inbox\n\n"
        "  pixsrc fetch inbox --dest ~/assets"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks with locals could show secrets
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"pixsrc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[str | None, typer.Option(
        "--config", metavar="PATH", help="Sources file (default: $PIXSRC_CONFIG, then the user config dir).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    common.DEBUG = debug
    ctx.obj = common.AppState(config_override=config, debug=debug)


sources.register(app)
types_cmd.register(app)
app.add_typer(auth.app, name="auth")
fetch.register(app)


def main() -> None:
    app(prog_name="pixsrc")
