"""The interactive wizard on a real pseudo-terminal (pexpect), spawning the real executable."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from support.cli import pixsrc_exe

pexpect = pytest.importorskip("pexpect")

SECRET = "wiz-KEY-5a5a5a5a5a5a"
URL = "https://assets.example.com/gallery/"


def spawn(*args: str):
    exe, *pre = pixsrc_exe()
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "COLUMNS": "200"}
    child = pexpect.spawn(exe, [*pre, *args], env=env, encoding="utf-8", timeout=30, dimensions=(50, 200))
    return child


def expect(child, text: str) -> str:
    """Wait for the literal ``text``; return everything printed before it."""
    child.expect_exact(text)
    return child.before


def finish(child) -> str:
    child.expect(pexpect.EOF)
    rest = child.before
    child.close()
    return rest


def test_full_add_wizard(config_file: Path, isolated: Path) -> None:
    child = spawn("add")
    transcript = [expect(child, "Type (number or id):")]
    assert re.search(r"\d+\. remote-gallery ", transcript[0])
    child.sendline("99")  # no such number: asked again
    transcript.append(expect(child, "choose a number from 1 to"))
    expect(child, "Type (number or id):")
    child.sendline("remote-galery")  # a typo: asked again
    expect(child, "Type (number or id):")
    child.sendline("remote-gallery")

    transcript.append(expect(child, f"Gallery URL [e.g. {URL}]:"))
    child.sendline("ftp://nope")
    transcript.append(expect(child, "must be an http:// or https:// URL with a host"))
    expect(child, "Gallery URL")
    child.sendline(URL)

    expect(child, "Index format (optional)")
    child.sendline("xml")  # not a choice: asked again
    transcript.append(expect(child, "choose one of: auto, json, html"))
    expect(child, "Index format")
    child.sendline("json")

    expect(child, "Folder depth to crawl (html) (optional) [10]:")
    child.sendline("")  # keep the default
    expect(child, "Only files matching (globs, comma-separated) (optional)")
    child.sendline("*.png, *.jpg")
    expect(child, "Skip files matching (globs, comma-separated) (optional)")
    child.sendline("")
    expect(child, "All files, not only images and videos (html) (optional) [y/N]:")
    child.sendline("")

    expect(child, "API key (sent as a Bearer token) (Enter to skip):")
    child.sendline(SECRET)  # hidden: the terminal does not echo it
    expect(child, "Name for this source [Remote gallery (HTTP)]:")
    child.sendline("Client Assets")
    rest = finish(child)
    transcript.append(rest)
    assert child.exitstatus == 0, "".join(transcript)
    assert f"added 'client-assets' (Remote gallery (HTTP)) to {config_file}" in rest
    assert "credential stored in keyring keyrings.alt.file.PlaintextKeyring" in rest
    assert SECRET not in "".join(transcript)

    document = tomllib.loads(config_file.read_text())
    source = document["sources"]["client-assets"]
    assert source["name"] == "Client Assets"
    assert source["type"] == "remote-gallery"
    assert source["enabled"] is True
    # only what the user chose; a default accepted with Enter is not pinned into the file
    assert source["config"] == {"url": URL, "index": "json", "include": ["*.png", "*.jpg"]}

    assert SECRET not in config_file.read_text()
    keyring_file = isolated / "home" / ".local" / "share" / "python_keyring" / "keyring_pass.cfg"
    stored = keyring_file.read_text()
    assert re.search(r"^\[pixsrc\]$", stored, re.M) and "client_2dassets" in stored  # keyrings.alt escaping
    assert SECRET not in stored  # keyrings.alt base64-encodes; the real check is below
    import keyring

    assert keyring.get_password("pixsrc", "client-assets") == SECRET


def test_wizard_asks_only_what_flags_left_out(config_file: Path) -> None:
    child = spawn("add", "local-fs", "--name", "Inbox")
    expect(child, "Folder [e.g. ~/Pictures/inbox]:")
    child.sendline("")  # required: asked again
    expect(child, "Folder [e.g. ~/Pictures/inbox]:")
    child.sendline("~/Pictures/inbox")
    expect(child, "Include sub-folders (optional) [Y/n]:")
    child.sendline("n")
    for _ in range(3):
        expect(child, "(optional)")
        child.sendline("")
    expect(child, "All files, not only images and videos (optional) [y/N]:")
    child.sendline("")
    rest = finish(child)
    assert child.exitstatus == 0, rest
    assert "Name for this source" not in rest and "API key" not in rest
    source = tomllib.loads(config_file.read_text())["sources"]["inbox"]
    assert source["config"] == {"path": "~/Pictures/inbox", "recursive": False}


def test_remove_asks_on_a_terminal(config_file: Path) -> None:
    child = spawn("add", "local-fs", "--name", "Inbox", "--set", "path=/tmp/in")
    finish(child)
    assert child.exitstatus == 0
    child = spawn("remove", "inbox")
    expect(child, "Remove 'Inbox' (inbox)? Downloaded files are kept. [y/N]:")
    child.sendline("n")
    rest = finish(child)
    assert child.exitstatus == 130 and "cancelled" in rest  # a cancellation, not an error (exit 1)
    assert "inbox" in tomllib.loads(config_file.read_text())["sources"]
    child = spawn("remove", "inbox")
    expect(child, "[y/N]:")
    child.sendline("y")
    rest = finish(child)
    assert child.exitstatus == 0, rest
    assert tomllib.loads(config_file.read_text()).get("sources", {}) == {}


def test_dry_run_on_a_terminal_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"\x89PNG a")
    child = spawn("add", "local-fs", "--name", "Loc", "--set", f"path={src}", "--no-input")
    finish(child)
    child = spawn("fetch", "loc", "--dest", str(tmp_path / "out"), "--dry-run")
    output = finish(child)
    assert "would fetch: a.png" in output  # with a progress display on the terminal too
    assert not (tmp_path / "out").exists()
