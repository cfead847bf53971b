"""The interactive wizard on a real pseudo-terminal (pexpect), spawning the real executable."""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

import pytest
from support.cli import PLAIN_TERMINAL, finish
from support.cli import spawn as spawn_on_pty

pexpect = pytest.importorskip("pexpect")

SECRET = "wiz-KEY-5a5a5a5a5a5a"
URL = "https://assets.example.com/gallery/"
spawn = functools.partial(spawn_on_pty, **PLAIN_TERMINAL)  # prompts, no colour


def expect(child, text: str) -> str:
    """Wait for the literal ``text``; return everything printed before it."""
    child.expect_exact(text)
    return child.before


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
    expect(child, "Ask the server about every file on each fetch, not only changed ones (html) (optional) [y/N]:")
    child.sendline("")

    expect(child, "API key (sent as a Bearer token) (Enter to skip):")
    child.sendline(SECRET)  # hidden: the terminal does not echo it
    expect(child, "Name for this source [Remote gallery (HTTP)]:")
    child.sendline("Client Assets")
    default_dest = isolated / "home" / "Pictures" / "pixsrc" / "client-assets"
    expect(child, f"Download folder [{default_dest}]:")
    child.sendline("")  # the default stays unpinned: a later defaults.dest still applies
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
    expect(child, "Download folder [")
    child.sendline("")
    rest = finish(child)
    assert child.exitstatus == 0, rest
    assert "Name for this source" not in rest and "API key" not in rest
    source = tomllib.loads(config_file.read_text())["sources"]["inbox"]
    assert source["config"] == {"path": "~/Pictures/inbox", "recursive": False}
    assert "dest" not in source  # Enter on the shown default pins nothing


def local_fs_wizard(child, folder: Path) -> None:
    """Answer a local-fs wizard's fields: the folder, then Enter on every optional one."""
    expect(child, "Folder [e.g. ~/Pictures/inbox]:")
    child.sendline(str(folder))
    for _ in range(5):
        expect(child, "(optional)")
        child.sendline("")


def test_a_taken_name_asks_again_and_keeps_every_answer(config_file: Path, tmp_path: Path) -> None:
    from support.cli import run

    assert run("add", "local-fs", "--name", "Inbox", "--set", f"path={tmp_path}").exit_code == 0
    child = spawn("add", "local-fs")
    local_fs_wizard(child, tmp_path / "photos")
    expect(child, "Name for this source [Local folder]:")
    child.sendline("inbox")  # taken (names are case-insensitive)
    expect(child, "a source is already named 'inbox'")
    expect(child, "Name for this source [Local folder]:")
    child.sendline("Photos")
    expect(child, "Download folder [")
    child.sendline(str(tmp_path / "out"))
    rest = finish(child)
    assert child.exitstatus == 0, rest
    source = tomllib.loads(config_file.read_text())["sources"]["photos"]
    assert source["config"]["path"] == str(tmp_path / "photos")  # the answers before the name survived
    assert source["dest"] == str(tmp_path / "out")


def test_the_default_name_is_a_free_one(config_file: Path, tmp_path: Path) -> None:
    from support.cli import run

    assert run("add", "local-fs", "--set", f"path={tmp_path}").exit_code == 0  # takes "Local folder"
    child = spawn("add", "local-fs")
    local_fs_wizard(child, tmp_path)
    expect(child, "Name for this source [Local folder 2]:")
    child.sendline("")
    expect(child, "Download folder [")
    child.sendline("")
    rest = finish(child)
    assert child.exitstatus == 0, rest
    assert tomllib.loads(config_file.read_text())["sources"]["local-folder-2"]["name"] == "Local folder 2"


@pytest.mark.parametrize("keep", [True, False])
def test_without_a_keyring_the_typed_key_goes_to_the_file_store_or_nowhere(
        config_file: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, keep: bool) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    child = spawn("add", "remote-gallery", "--name", "Client", "--set", f"url={URL}")
    expect(child, "API key (sent as a Bearer token) (Enter to skip):")
    child.sendline(SECRET)
    expect(child, "no usable OS keyring")
    expect(child, "instead? [y/N]:")
    child.sendline("y" if keep else "n")
    rest = finish(child)
    assert child.exitstatus == 0, rest
    assert "client" in tomllib.loads(config_file.read_text())["sources"]  # the source is saved either way
    assert SECRET not in rest and SECRET not in config_file.read_text()
    from support.cli import run

    status = run("auth", "status", "client", "--json")
    if keep:
        assert "credential stored in file" in rest
        assert '"stored_in": "file' in status.stdout, status.stdout + status.stderr
    else:
        assert "the key was not kept; add it later with `pixsrc auth login client`" in rest


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
