"""What every command shares: the app state, error reporting, output helpers.

stdout carries data (tables, JSON); stderr carries messages and progress.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer

from pixsrc.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, PixsrcError

DEBUG = False  # set by the root --debug option
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class AppState:
    config_override: str | None = None
    debug: bool = False

    @property
    def config_path(self) -> Path:
        from pixsrc.config import config_path

        return config_path(self.config_override)


def app_state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def say(message: str) -> None:
    """A message for the person (stderr), with anything secret masked."""
    from pixsrc.redact import redact

    print(redact(message), file=sys.stderr)


def print_json(data: Any) -> None:
    from pixsrc.redact import redact

    sys.stdout.write(redact(json.dumps(data, indent=2, ensure_ascii=False, default=str), patterns=False) + "\n")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain aligned table on stdout (rich costs ~25 ms of start-up for this)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        line = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def choose(label: str, options: list[str], default: str | None = None) -> str:
    """Ask until the answer is one of ``options``."""
    while True:
        answer = typer.prompt(f"{label} ({'/'.join(options)})", default=default)
        if answer in options:
            return str(answer)
        say(f"  choose one of: {', '.join(options)}")


def is_interactive(no_input: bool = False) -> bool:
    return not no_input and sys.stdin.isatty()


def fail(exc: PixsrcError) -> typer.Exit:
    say(f"error: {exc.message}")
    if exc.hint:
        say(f"  hint: {exc.hint}")
    return typer.Exit(exc.exit_code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn PixsrcError into its one-line message and exit code; hide tracebacks unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PixsrcError as exc:
            raise fail(exc) from None
        except KeyboardInterrupt:
            say("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if DEBUG:  # the traceback goes through the same redaction as every other message
                import traceback

                say(traceback.format_exc().rstrip())
            say(f"internal error: {type(exc).__name__}: {exc}")
            if not DEBUG:
                say("  hint: run again with --debug for the traceback, and report it")
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper
