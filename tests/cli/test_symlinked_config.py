"""A sources file that is a symlink (stow, chezmoi, yadm, a dotfiles repo): every write goes through the
link to its target, atomically, and the link stays a link. Relative links, chains of links and a
dangling link (its target is created) too; the lock guards the real file, whichever name reaches it."""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from support.cli import pixsrc_exe, run

HAND_WRITTEN = """\
version = 1

[sources.inbox]
name = "Inbox"
type = "local-fs"

[sources.inbox.config]
path = "/tmp/inbox"
"""


def symlink(link: Path, target: str | Path) -> None:
    try:
        link.symlink_to(target)
    except OSError as exc:  # Windows without developer mode
        pytest.skip(f"cannot create symlinks here: {exc}")


def sources_in(path: Path) -> dict[str, dict]:
    return tomllib.loads(path.read_text("utf-8")).get("sources", {})


def leftovers(*folders: Path) -> list[str]:
    """Temp files an atomic write left behind."""
    return [p.name for folder in folders if folder.exists() for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    real = tmp_path / "dotfiles" / "pixsrc" / "sources.toml"
    real.parent.mkdir(parents=True)
    real.write_text(HAND_WRITTEN)
    return real


def make_links(kind: str, config_file: Path, target: Path, tmp_path: Path) -> list[tuple[Path, str]]:
    """Link config_file to target the ``kind`` way; returns every link with what it must keep pointing to."""
    config_file.parent.mkdir(parents=True, exist_ok=True)
    if kind == "absolute":
        links = [(config_file, str(target))]
    elif kind == "relative":
        links = [(config_file, os.path.join("..", "dotfiles", "pixsrc", "sources.toml"))]
    else:  # a chain: an absolute link to a link whose relative target is resolved from *its* folder
        middle = tmp_path / "links" / "middle.toml"
        middle.parent.mkdir()
        links = [(config_file, str(middle)), (middle, os.path.join("..", "dotfiles", "pixsrc", "sources.toml"))]
    for link, points_to in links:
        symlink(link, points_to)
    return links


@pytest.mark.parametrize("kind", ["absolute", "relative", "chain"])
def test_add_edit_remove_write_through_the_link(kind: str, config_file: Path, target: Path, tmp_path: Path) -> None:
    links = make_links(kind, config_file, target, tmp_path)
    steps = [
        (["add", "local-fs", "--name", "New", "--set", "path=/tmp/new"], ["inbox", "new"]),
        (["edit", "new", "--set", "all_files=true"], ["inbox", "new"]),
        (["disable", "inbox"], ["inbox", "new"]),
        (["remove", "inbox", "--yes"], ["new"]),
    ]
    for command, expected in steps:
        result = run(*command)
        assert result.exit_code == 0, result.stderr
        for link, points_to in links:
            assert link.is_symlink(), f"{command[0]} replaced the link {link}"
            assert os.readlink(link) == points_to
        assert not target.is_symlink() and target.is_file()
        assert sorted(sources_in(target)) == expected
        assert sources_in(config_file) == sources_in(target)  # read through the link, as any reader does
    assert sources_in(target)["new"]["config"] == {"path": "/tmp/new", "all_files": True}
    if os.name != "nt":
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # the temp file and the lock sit next to the real file; nothing is left beside the link
    assert leftovers(config_file.parent, target.parent) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["sources.toml", "sources.toml.lock"]
    assert sorted(p.name for p in config_file.parent.iterdir()) == ["sources.toml"]


@pytest.mark.parametrize("folder_exists", [True, False])
def test_a_dangling_link_gets_its_target_created(config_file: Path, tmp_path: Path, folder_exists: bool) -> None:
    target = tmp_path / "dotfiles" / "pixsrc" / "sources.toml"
    if folder_exists:
        target.parent.mkdir(parents=True)
    config_file.parent.mkdir(parents=True)
    symlink(config_file, target)

    listed = run("list")  # reading a dangling link is an empty config, as a missing file is
    assert listed.exit_code == 0, listed.stderr
    result = run("add", "local-fs", "--name", "First", "--set", "path=/tmp/first")
    assert result.exit_code == 0, result.stderr
    assert config_file.is_symlink() and os.readlink(config_file) == str(target)
    assert sorted(sources_in(target)) == ["first"]


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_a_link_loop_is_a_one_line_error(config_file: Path, tmp_path: Path, loop: str) -> None:
    config_file.parent.mkdir(parents=True)
    if loop == "self":
        symlink(config_file, config_file.name)
    else:
        other = tmp_path / "other.toml"
        symlink(config_file, other)
        symlink(other, config_file)
    for command in (["add", "local-fs", "--name", "New", "--set", "path=/tmp/new"], ["list"]):
        result = run(*command)
        assert result.exit_code == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(config_file) in errors[0], result.stderr
        assert "internal error" not in result.stderr
        assert config_file.is_symlink()


def test_the_lock_guards_the_real_file_whichever_name_is_used(
    config_file: Path, target: Path, tmp_path: Path
) -> None:
    """Adds through the link and through the target's own name, all at once: none is lost."""
    make_links("relative", config_file, target, tmp_path)
    procs = [
        subprocess.Popen(
            [*pixsrc_exe(), "--config", str(config_file if n % 2 else target),
             "add", "local-fs", "--name", f"Source {n:02d}", "--set", f"path=/tmp/{n}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for n in range(12)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    assert [code for code, _ in outcomes] == [0] * 12, outcomes
    assert config_file.is_symlink()
    assert sorted(sources_in(target)) == ["inbox"] + [f"source-{n:02d}" for n in range(12)]
