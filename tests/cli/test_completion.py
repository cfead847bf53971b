"""`pixsrc completion SHELL`: the script works in a real bash, completes commands and source ids, costs nothing else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.cli import pixsrc_exe, run


def bash_complete(words: list[str], env: dict[str, str]) -> list[str]:
    """What Tab offers in a real bash for the command line ``words`` (the last one being completed)."""
    exe = pixsrc_exe()
    if len(exe) > 1:
        pytest.skip("needs the installed pixsrc executable")
    script = run("completion", "bash").stdout
    line = " ".join(words)
    program = (f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _pixsrc_completion pixsrc; '
               'printf "%s\\n" "${COMPREPLY[@]}"')
    path = f"{Path(exe[0]).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env, "PATH": path})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_sub_commands_and_source_ids(config_file: Path, tmp_path: Path) -> None:
    for name in ("My Inbox", "Mine two", "Other"):
        assert run("add", "local-fs", "--name", name, "--set", f"path={tmp_path}").exit_code == 0
    env = {"PIXSRC_CONFIG": str(config_file)}
    assert bash_complete(["pixsrc", "fe"], env) == ["fetch"]
    assert bash_complete(["pixsrc", "auth", "log"], env) == ["login", "logout"]
    assert bash_complete(["pixsrc", "show", "m"], env) == ["my-inbox", "mine-two"]
    assert bash_complete(["pixsrc", "edit", "o"], env) == ["other"]
    assert bash_complete(["pixsrc", "fetch", "my-inbox", "m"], env) == ["my-inbox", "mine-two"]
    assert bash_complete(["pixsrc", "auth", "login", "mi"], env) == ["mine-two"]
    # a broken config completes nothing, quietly: Tab must never print a traceback into the prompt
    config_file.write_text("[sources\n")
    assert bash_complete(["pixsrc", "show", "m"], env) == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_every_shell_gets_a_script_naming_pixsrc(shell: str, isolated: Path) -> None:
    """Without any config file: the script does not depend on one."""
    result = run("completion", shell)
    assert result.exit_code == 0
    assert "_PIXSRC_COMPLETE" in result.stdout and "pixsrc" in result.stdout


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = run("completion", "tcsh")
    assert result.exit_code == 2
    assert "tcsh" in result.stderr
