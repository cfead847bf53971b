"""The ``pixsrc`` command: the root app and its global options.

Command modules import only typer and the standard library at the top; everything heavier
(pydantic models, the HTTP client, keyring, source types) is imported inside the command that needs it.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from types import ModuleType
from typing import Any

import typer
from typer.core import TyperGroup, TyperOption

from pixsrc import __version__
from pixsrc.cli import common, completion

GLOBAL_PANEL = "Global options"


def _set_config(ctx: typer.Context, _param: Any, value: str | None) -> None:
    if value is not None:  # given after the command too: the last one given wins, as rclone's flags do
        common.app_state(ctx).config_override = value


def _set_debug(ctx: typer.Context, _param: Any, value: bool) -> None:
    if value:  # given before or after the command: either turns it on
        common.app_state(ctx).debug = True


def _set_quiet(ctx: typer.Context, _param: Any, value: bool) -> None:
    if value:
        common.app_state(ctx).quiet = True


def _version(_ctx: typer.Context, _param: Any, value: bool) -> None:
    if value:
        print(f"pixsrc {__version__}")
        raise typer.Exit()


def global_options() -> list[TyperOption]:
    """Fresh --config/--debug/--version options for one command (the root, a group, or a leaf)."""
    return [
        TyperOption(param_decls=["--config"], metavar="PATH", default=None, callback=_set_config,
                    expose_value=False, rich_help_panel=GLOBAL_PANEL,
                    help="Sources file (default: $PIXSRC_CONFIG, then the user config dir)."),
        TyperOption(param_decls=["--debug"], is_flag=True, default=False, callback=_set_debug,
                    expose_value=False, rich_help_panel=GLOBAL_PANEL, help="Show tracebacks of internal errors."),
        TyperOption(param_decls=["--quiet", "-q"], is_flag=True, default=False, callback=_set_quiet,
                    expose_value=False, rich_help_panel=GLOBAL_PANEL,
                    help="Only warnings and errors on stderr (data on stdout is unchanged)."),
        TyperOption(param_decls=["--version"], is_flag=True, default=False, callback=_version, is_eager=True,
                    expose_value=False, rich_help_panel=GLOBAL_PANEL, help="Print the version and exit."),
    ]


def _add_global_options(command: Any) -> None:  # a Click Command: vendored in Typer 0.28, click's before
    command.params.extend(global_options())
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            _add_global_options(sub)


class RootGroup(TyperGroup):
    """The root command: gives itself and every command under it the global options.

    So `pixsrc list --config X` parses like `pixsrc --config X list`, by Click itself (no argv rewriting).
    Typer builds this group, with all the commands, each time the app runs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self)


def _root(modules: tuple[ModuleType, ...]) -> typer.Typer:
    root = typer.Typer(
        name="pixsrc",
        help=(
            "Configure your asset sources once, then list and download their images and media.\n\n"
            "Example:\n\n"
            "  pixsrc add local-fs --name Inbox --set path=~/Pictures/inbox\n\n"
            "  pixsrc fetch inbox --dest ~/assets"
        ),
        cls=RootGroup,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,  # tracebacks with locals could show secrets
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for module in modules:
        root.add_typer(module.app, name="auth" if module.__name__ == "pixsrc.cli.auth" else None)
    return root


# each command's module in pixsrc.cli, in the order of `pixsrc --help`: managing sources, fetching,
# signing in, then the rest (a test checks this against the commands the modules define)
COMMANDS = {
    "add": "add", "list": "sources", "show": "sources", "edit": "sources", "enable": "sources",
    "disable": "sources", "remove": "sources", "fetch": "fetch", "watch": "watch", "auth": "auth",
    "types": "types_cmd", "export": "share", "import": "share", "stats": "stats", "doctor": "doctor",
    "completion": "completion",
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"pixsrc.cli.{name}")


@functools.cache
def whole_app() -> typer.Typer:
    """The root with every command (help, completion, "did you mean", tests): built once per process."""
    return _root(tuple(_module(name) for name in dict.fromkeys(COMMANDS.values())))


def __getattr__(name: str) -> Any:
    if name == "app":  # `from pixsrc.cli.app import app`: the whole app, its modules imported only then
        return whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _module_of(argv: list[str]) -> ModuleType | None:
    """The one module whose command argv runs, or None (no command, --help, an unknown name).

    Typer turns every command's signature into Click objects on each run, and each command module
    costs its import: a run imports and builds only its own command's module (a third of `pixsrc
    list`'s start-up). The root's help, completion and errors (which list or suggest commands) use
    the whole app."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return _module(COMMANDS[word]) if word in COMMANDS else None
        elif word in ("-h", "--help", "--version"):
            return None
    return None


def _identity(file: int | str) -> tuple[int, int] | None:
    """Which file a descriptor (or path) is."""
    try:
        st = os.stat(file)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def main() -> None:
    completion.prepare()
    module = None if os.environ.get(completion.COMPLETE_VAR) else _module_of(sys.argv[1:])
    stdout_was = _identity(1)
    try:
        (whole_app() if module is None else _root((module,)))(prog_name="pixsrc")  # always ends in SystemExit
    except SystemExit as exc:
        code = exc.code
    # Two libraries end a closed pipe on their own with exit 1: Typer (and Click) behind a PacifyFlushWrapper
    # (matched by name: Typer 0.28 vendors Click, older Typers use the real one), and Rich (help text) after
    # pointing fd 1 at /dev/null
    pacified = type(sys.stdout).__name__ == "PacifyFlushWrapper" or (
        code == 1 and _identity(1) != stdout_was and _identity(1) == _identity(os.devnull))
    closed = pacified
    try:
        sys.stdout.flush()  # short output is still buffered here: a closed pipe shows up now
    except BrokenPipeError:
        closed = True
    if closed:
        quiet = common.end_on_closed_output()
        if pacified or not code:  # a real failure (exit 2, 3, ...) keeps its code; its message went to stderr
            code = quiet
    raise SystemExit(code)
