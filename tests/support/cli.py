"""Running the real entry point: in-process (CliRunner), as a subprocess, and on a pty (pexpect)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from pixsrc.cli.app import app


def run(*args: str, input: str | None = None):  # noqa: A002
    """Invoke ``pixsrc ARGS`` in-process; returns the click Result (stdout and stderr kept apart)."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def pixsrc_exe() -> list[str]:
    exe = Path(sys.executable).with_name("pixsrc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pixsrc"]


def run_subprocess(*args: str, input: str | None = None, env: dict[str, str] | None = None,
                   timeout: float = 120, cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``pixsrc ARGS`` the way cron would: no TTY on stdin, stdout and stderr captured."""
    return subprocess.run(
        [*pixsrc_exe(), *args], input=input if input is not None else "", capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd,
    )


PLAIN_TERMINAL = {"TERM": "dumb", "NO_COLOR": "1"}


def spawn(*args: str, rows: int = 50, **env: str) -> Any:
    """``pixsrc ARGS`` on a pty (pexpect), 200 columns wide; ``env`` adds to the environment
    (``**PLAIN_TERMINAL`` for prompts without colour or live display)."""
    import pexpect

    exe, *pre = pixsrc_exe()
    full = {**os.environ, "COLUMNS": "200", **env}
    return pexpect.spawn(exe, [*pre, *args], env=full, encoding="utf-8", timeout=30, dimensions=(rows, 200))


def finish(child: Any) -> str:
    """Wait for the program to end; everything it printed since the last expect."""
    import pexpect

    child.expect(pexpect.EOF)
    rest = str(child.before)
    child.close()
    return rest
