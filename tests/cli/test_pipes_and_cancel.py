"""A closed pipe and a cancelled prompt are ordinary endings, never an "internal error".

The pipe tests run the real executable with stdout a real pipe: either one whose reading end is
already closed (every write fails, so the result does not depend on timing) or a shell pipeline
into ``head -1`` with more output than the pipe holds (the writer must meet the closed end).
The prompt tests drive the real executable on a pseudo-terminal with pexpect.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from support.cli import PLAIN_TERMINAL, finish, pixsrc_exe, run, run_subprocess
from support.cli import spawn as spawn_on_pty

from pixsrc.errors import EXIT_INTERRUPTED

pexpect = pytest.importorskip("pexpect")

CLOSED_PIPE = 141  # 128 + SIGPIPE: what the shell shows for git, cat, ... stopped by a closed pipe
spawn = functools.partial(spawn_on_pty, **PLAIN_TERMINAL)  # prompts, no colour


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough files that --list outgrows a pipe buffer (64 KiB); made once, creating files is slow here."""
    src = tmp_path_factory.mktemp("pictures")
    for n in range(1600):
        (src / f"picture-with-a-longish-name-{n:05}.png").write_bytes(b"\x89PNG")
    return src


@pytest.fixture
def inbox(pictures: Path, config_file: Path) -> Path:
    """A local-fs source 'inbox' over those files."""
    assert run("add", "local-fs", "--name", "Inbox", "--set", f"path={pictures}", "--no-input").exit_code == 0
    return pictures


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``pixsrc ARGS`` with stdout a pipe whose reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*pixsrc_exe(), *args], stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ("fetch", "inbox", "--list"),  # large: the write fails inside the command
    ("fetch", "inbox", "--list", "--json"),
    ("show", "inbox"),  # small: still buffered when the command returns
    ("show", "inbox", "--json"),
    ("list",),
    ("types",),
    ("types", "local-fs"),
    ("--help",),  # written by Click itself
    ("list", "--help"),
], ids=" ".join)
def test_a_closed_pipe_ends_quietly(inbox: Path, args: tuple[str, ...]) -> None:
    result = run_into_closed_pipe(*args)
    assert result.stderr == b""
    assert result.returncode == CLOSED_PIPE


@pytest.mark.parametrize("command", ["fetch inbox --list", "fetch inbox --list --json", "show inbox"])
def test_piped_into_head(inbox: Path, command: str) -> None:
    exe = " ".join(pixsrc_exe())
    script = f"set -o pipefail; {exe} {command} | head -1; echo \"status=${{PIPESTATUS[0]}}\" >&2"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr.splitlines()[-1] in ("status=0", f"status={CLOSED_PIPE}")  # show fits: head may win
    assert "error" not in result.stderr.lower() and "Traceback" not in result.stderr
    if command.startswith("fetch"):
        assert result.stderr == f"status={CLOSED_PIPE}\n"  # 1600 lines do not fit: the closed end is met


def test_a_real_failure_with_a_closed_pipe_keeps_its_code(inbox: Path) -> None:
    """Not every ending on a closed pipe is 141: an unknown source is still exit 2, with its message."""
    result = run_into_closed_pipe("fetch", "nosuch", "--list")
    assert result.returncode == 2
    assert b"error: " in result.stderr and b"internal error" not in result.stderr


# --- cancelling at a prompt -------------------------------------------------------------------

def assert_cancelled(child) -> None:
    rest = finish(child)
    assert "cancelled" in rest
    assert "internal error" not in rest and "Abort" not in rest, rest
    assert child.exitstatus == EXIT_INTERRUPTED, rest


def keyring_file(isolated: Path) -> Path:
    return isolated / "home" / ".local" / "share" / "python_keyring" / "keyring_pass.cfg"


@pytest.fixture
def configured(config_file: Path, tmp_path: Path) -> bytes:
    result = run_subprocess("add", "local-fs", "--name", "Inbox", "--set", f"path={tmp_path}")
    assert result.returncode == 0, result.stderr
    return config_file.read_bytes()


@pytest.mark.parametrize("how", ["n", "Enter", "Ctrl-C", "Ctrl-D"])
def test_remove_cancelled(config_file: Path, configured: bytes, how: str) -> None:
    child = spawn("remove", "inbox")
    child.expect_exact("Remove 'Inbox' (inbox)? Downloaded files are kept. [y/N]:")
    {"n": lambda: child.sendline("n"), "Enter": lambda: child.sendline(""),
     "Ctrl-C": child.sendintr, "Ctrl-D": child.sendeof}[how]()
    assert_cancelled(child)
    assert config_file.read_bytes() == configured


@pytest.mark.parametrize("prompt", ["Type (number or id):", "Gallery URL", "Index format (optional)",
                                    "API key (sent as a Bearer token) (Enter to skip): ",
                                    "Name for this source"])
@pytest.mark.parametrize("key", ["Ctrl-C", "Ctrl-D"])
def test_add_wizard_cancelled_at_any_prompt_writes_nothing(config_file: Path, isolated: Path, prompt: str,
                                                           key: str) -> None:
    answers = [("Type (number or id):", "remote-gallery"), ("Gallery URL", "https://assets.example.com/g/"),
               ("Index format (optional)", "json"), ("Folder depth", ""), ("Only files matching", ""),
               ("Skip files matching", ""), ("All files, not only images", ""),
               ("Ask the server about every file", ""),
               ("API key (sent as a Bearer token) (Enter to skip): ", "wiz-KEY-5a5a5a5a5a5a"),
               ("Name for this source", "Client Assets")]
    child = spawn("add")
    for text, answer in answers:
        child.expect_exact(text)
        if text == prompt:
            child.sendintr() if key == "Ctrl-C" else child.sendeof()
            break
        child.sendline(answer)
    assert_cancelled(child)
    assert not config_file.exists()
    assert not keyring_file(isolated).exists() or "client" not in keyring_file(isolated).read_text()


def test_edit_wizard_cancelled_keeps_the_file(config_file: Path, configured: bytes) -> None:
    child = spawn("edit", "inbox")
    child.expect_exact("Folder")
    child.sendline("/somewhere/else")
    child.expect_exact("Include sub-folders")
    child.sendintr()
    assert_cancelled(child)
    assert config_file.read_bytes() == configured


def test_auth_login_prompt_cancelled(config_file: Path, isolated: Path) -> None:
    assert run("add", "remote-gallery", "--name", "G", "--set", "url=https://assets.example.com/g/",
               "--no-input").exit_code == 0
    child = spawn("auth", "login", "g")
    child.expect_exact("(sent as a Bearer token): ")  # the last space comes after getpass flushed the input
    child.sendeof()
    assert_cancelled(child)
    assert not keyring_file(isolated).exists()


# --- edit with nothing to change --------------------------------------------------------------

def test_edit_without_changes_says_so_and_writes_nothing(config_file: Path, tmp_path: Path) -> None:
    assert run("add", "local-fs", "--name", "Inbox", "--set", f"path={tmp_path}", "--dest", str(tmp_path),
               "--no-input").exit_code == 0
    before = config_file.read_bytes()
    stamp = tomllib.loads(before.decode())["sources"]["inbox"]["updated_at"]
    for args in ([], ["--set", f"path={tmp_path}"], ["--name", "Inbox"], ["--dest", str(tmp_path)],
                 ["--unset", "recursive"]):
        result = run("edit", "inbox", *args)
        assert result.exit_code == 0, result.stderr
        assert "nothing to change" in result.stderr, args
        assert "updated" not in result.stderr
        assert config_file.read_bytes() == before, args
    assert tomllib.loads(config_file.read_text())["sources"]["inbox"]["updated_at"] == stamp
    changed = run("edit", "inbox", "--set", "recursive=false")
    assert changed.exit_code == 0 and "updated 'inbox'" in changed.stderr
    assert tomllib.loads(config_file.read_text())["sources"]["inbox"]["updated_at"] >= stamp


def test_edit_wizard_with_every_answer_kept(config_file: Path, configured: bytes) -> None:
    child = spawn("edit", "inbox")
    for text in ("Folder", "Include sub-folders", "Only files matching", "Skip files matching",
                 "Follow symbolic links", "All files", "Name [Inbox]:"):
        child.expect_exact(text)
        child.sendline("")
    rest = finish(child)
    assert child.exitstatus == 0, rest
    assert "nothing to change in 'inbox'" in rest
    assert config_file.read_bytes() == configured
