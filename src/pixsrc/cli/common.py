"""What every command shares: the app state, error reporting, output helpers.

stdout carries data (tables, JSON); stderr carries messages and progress.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from pixsrc.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, PixsrcError

if TYPE_CHECKING:
    from pixsrc.config import Config

# 128 + SIGPIPE: what the shell reports for git, cat or rclone when the reader of their output is gone,
# so `set -o pipefail` scripts see pixsrc the same way as every other tool
EXIT_CLOSED_PIPE = 141
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class AppState:
    """What the global options set, kept on the root Click context of the running command."""

    config_override: str | None = None
    debug: bool = False
    quiet: bool = False

    @property
    def config_path(self) -> Path:
        from pixsrc.config import config_path

        return config_path(self.config_override)


def app_state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def source_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Tab on a SOURCE argument: the ids in the config this command line names (quietly nothing if broken)."""
    from pixsrc.config import load_config
    from pixsrc.errors import PixsrcError

    try:
        cfg = load_config(app_state(ctx).config_path)
    except (PixsrcError, OSError):
        return []
    return [source_id for source_id in cfg.sources if source_id.startswith(incomplete)]


SourceArg = Annotated[str, typer.Argument(metavar="SOURCE", help="Id or name.", autocompletion=source_ids)]


def load(ctx: typer.Context) -> Config:
    """The config file this run uses (--config, $PIXSRC_CONFIG, or the default), parsed and checked."""
    from pixsrc.config import load_config

    return load_config(app_state(ctx).config_path)


def current_state() -> AppState:
    """The running command's state (defaults when called outside a command, e.g. from a test)."""
    import importlib

    try:  # Typer 0.28 vendors Click; older Typers use the real one
        click_globals = importlib.import_module("typer._click.globals")
    except ImportError:  # pragma: no cover
        click_globals = importlib.import_module("click.globals")
    ctx = click_globals.get_current_context(silent=True)
    return app_state(ctx) if ctx is not None else AppState()


def say(message: str) -> None:
    """A progress or result message for the person (stderr), secrets masked; `-q` silences it."""
    if not current_state().quiet:
        warn(message)


def warn(message: str) -> None:
    """A warning or error for stderr that `-q` keeps: a cron log must show it."""
    from pixsrc.redact import redact

    print(redact(message), file=sys.stderr)


def print_json(data: Any, indent: int | None = 2) -> None:
    """JSON on stdout, registered secrets masked; ``indent=None``: one line (watch's JSON Lines)."""
    from pixsrc.redact import redact

    sys.stdout.write(redact(json.dumps(data, indent=indent, ensure_ascii=False, default=str), patterns=False) + "\n")


def print_text(line: str, patterns: bool = True) -> None:
    """A line of data on stdout, masked like every message (``patterns``: also token-shaped text,
    for lines that carry a server's or a library's words)."""
    from pixsrc.redact import redact

    sys.stdout.write(redact(line, patterns=patterns) + "\n")


def print_table(headers: list[str], rows: list[list[str]], patterns: bool = False) -> None:
    """A plain aligned table on stdout (rich costs ~25 ms of start-up for this), masked as print_text."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        print_text("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
                   patterns)


def choose(label: str, options: list[str], default: str | None = None) -> str:
    """Ask until the answer is one of ``options``."""
    while True:
        answer = typer.prompt(f"{label} ({'/'.join(options)})", default=default)
        if answer in options:
            return str(answer)
        say(f"  choose one of: {', '.join(options)}")


def is_interactive(no_input: bool = False) -> bool:
    return not no_input and sys.stdin.isatty()


def closed_outputs() -> list[int]:
    """The file descriptors of stdout and stderr whose reader has gone (a pipe or socket closed at the far end)."""
    try:
        import select

        poller = select.poll()
    except (ImportError, AttributeError):  # no poll() (Windows): a BrokenPipeError there is taken at its word
        return [1]
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            fd = stream.fileno() if stream is not None else -1
        except (OSError, ValueError):  # closed, or not a real file
            continue
        if fd >= 0:
            poller.register(fd, select.POLLOUT)
    # Linux and the BSDs flag the writing end of a pipe without readers with POLLERR; a socket with POLLHUP
    return [fd for fd, events in poller.poll(0) if events & (select.POLLERR | select.POLLHUP)]


def end_on_closed_output() -> int:
    """Point closed stdout/stderr at /dev/null (so Python's last flush cannot complain) and give the exit code."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in closed_outputs():
        os.dup2(devnull, fd)
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def fail(exc: PixsrcError) -> typer.Exit:
    warn(f"error: {exc.message}")
    if exc.hint:
        warn(f"  hint: {exc.hint}")
    return typer.Exit(exc.exit_code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn PixsrcError into its one-line message and exit code; hide tracebacks unless --debug.

    Two ordinary endings are not errors: a prompt answered "no", Ctrl-C or Ctrl-D at a prompt (Click raises
    Abort) is a cancellation, exit 130 before anything was written; output whose reader went away
    (`pixsrc show x | head -5`) ends quietly with exit 141.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PixsrcError as exc:
            raise fail(exc) from None
        except KeyboardInterrupt:
            warn("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Abort:  # raised by typer.prompt/confirm on 'no', Ctrl-C and Ctrl-D
            warn("cancelled")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if isinstance(exc, BrokenPipeError) and closed_outputs():
                raise typer.Exit(end_on_closed_output()) from None
            debug = current_state().debug
            if debug:  # the traceback goes through the same redaction as every other message
                import traceback

                warn(traceback.format_exc().rstrip())
            warn(f"internal error: {type(exc).__name__}: {exc}")
            if not debug:
                warn("  hint: run again with --debug for the traceback, and report it")
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper
