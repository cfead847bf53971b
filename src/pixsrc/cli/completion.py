"""``pixsrc completion SHELL``: the shell's completion script (Typer writes it; pixsrc only prints it)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from pixsrc.cli.common import handle_errors

app = typer.Typer()

COMPLETE_VAR = "_PIXSRC_COMPLETE"  # the shell sets it when it asks pixsrc for completions


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    powershell = "powershell"


def prepare() -> None:
    """Only when a shell asks for completions: load Typer's completion classes (the scripts need them)."""
    if os.environ.get(COMPLETE_VAR):
        from typer._completion_classes import completion_init

        completion_init()


@app.command(epilog="Examples: pixsrc completion bash > ~/.local/share/bash-completion/completions/pixsrc\n\n"
                    "  pixsrc completion zsh > \"${fpath[1]}/_pixsrc\"\n\n"
                    "  pixsrc completion fish > ~/.config/fish/completions/pixsrc.fish")
@handle_errors
def completion(shell: Annotated[Shell, typer.Argument(help="bash, zsh, fish or powershell.")]) -> None:
    """Print the shell completion script: commands, options and your source ids complete with Tab."""
    from typer._completion_shared import get_completion_script

    print(get_completion_script(prog_name="pixsrc", complete_var=COMPLETE_VAR, shell=shell.value))
