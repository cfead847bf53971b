"""Running the real entry point: in-process (CliRunner) and as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
