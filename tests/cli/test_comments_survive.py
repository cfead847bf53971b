"""Users own sources.toml: every write keeps the comments, blank lines, key order and spacing of
everything it does not change, byte for byte. Each command runs through the real CLI on a
hand-written file, and the whole file is compared with the original plus exactly the change."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support.cli import run

from pixsrc.config import edit_config

HEADER = """\
# pixsrc sources: written by hand, keep the comments!
# (a second line of the file's header)

version = 1

# where everything lands unless a source says otherwise
[defaults]
dest     = "/srv/pixsrc"      # the big disk
parallel = 3

[providers.google]
client_id = "abc.apps.example.com"   # my own OAuth client

# --- work ---

"""

INBOX_TABLE = """\
# the scanner drops its files here
[sources.inbox]
name    = "Inbox"        # shown in `pixsrc list`
type    = "local-fs"
enabled = true
notes   = "hand-written, unknown to pixsrc"

[sources.inbox.config]
path      = "/tmp/inbox"   # scanner output
recursive = true           # sub-folders too
include   = [
    "*.png",   # screenshots
    "*.jpg",
]

"""

ARCHIVE_TABLE = """\
# --- archive ---
[sources.archive]
name    = "Archive"
type    = "local-fs"
enabled = false          # only on demand

  [sources.archive.config]
  path = "/tmp/archive"

"""

CAMERA_TABLE = """\
[sources.camera]
name = "Camera"
type = "local-fs"
enabled = true
created_at = STAMP
updated_at = STAMP

[sources.camera.config]
path = "/tmp/camera"

"""

NOTES = 'notes   = "hand-written, unknown to pixsrc"\n'
STAMPED = NOTES + "updated_at = STAMP\n"
END = "# new sources go above this line\n"
# each fragment is written once; the file is their sum
HAND_WRITTEN = HEADER + INBOX_TABLE + ARCHIVE_TABLE + END
ON_DEMAND = "enabled = false          # only on demand\n"

# each command, and the only edits it may make to the file: (old text, new text), each old text once
CASES = {
    "add": (["add", "local-fs", "--name", "Camera", "--set", "path=/tmp/camera"], [(END, CAMERA_TABLE + END)]),
    "edit --set": (["edit", "inbox", "--set", "recursive=false"], [
        (NOTES, STAMPED),
        ("recursive = true           # sub-folders too", "recursive = false          # sub-folders too"),
    ]),
    "edit --set a list": (["edit", "inbox", "--set", "include=*.gif, *.webp"], [
        (NOTES, STAMPED),
        ('include   = [\n    "*.png",   # screenshots\n    "*.jpg",\n]', 'include   = ["*.gif", "*.webp"]'),
    ]),
    "edit --name": (["edit", "archive", "--name", "Old photos"], [
        ('name    = "Archive"\n', 'name    = "Old photos"\n'),
        (ON_DEMAND, ON_DEMAND + "updated_at = STAMP\n"),
    ]),
    "edit --dest": (["edit", "archive", "--dest", "/mnt/archive"], [
        (ON_DEMAND, ON_DEMAND + 'updated_at = STAMP\ndest = "/mnt/archive"\n'),
    ]),
    "disable": (["disable", "inbox"], [
        ('type    = "local-fs"\nenabled = true\n' + NOTES, 'type    = "local-fs"\nenabled = false\n' + STAMPED),
    ]),
    "enable": (["enable", "archive"], [
        (ON_DEMAND, "enabled = true           # only on demand\nupdated_at = STAMP\n"),  # the comment's column too
    ]),
    # the comment directly above a removed table goes with it; "# --- work ---" is not its own
    "remove the first": (["remove", "inbox", "--yes"], [(INBOX_TABLE, "")]),
    "remove the last": (["remove", "archive", "--yes"], [(ARCHIVE_TABLE, "")]),
}


def edited(original: str, edits: list[tuple[str, str]]) -> str:
    for old, new in edits:
        assert original.count(old) == 1, old
        original = original.replace(old, new)
    return original


def stamped(path: Path) -> str:
    """The file's text with each time stamp pixsrc wrote (now) replaced by STAMP."""
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "STAMP", path.read_text("utf-8"))


@pytest.fixture
def hand_written(config_file: Path) -> Path:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(HAND_WRITTEN, "utf-8")
    return config_file


@pytest.mark.parametrize("case", list(CASES))
def test_a_write_changes_only_its_table(hand_written: Path, case: str) -> None:
    command, edits = CASES[case]
    result = run(*command)
    assert result.exit_code == 0, result.stderr
    assert stamped(hand_written) == edited(HAND_WRITTEN, edits)
    document = tomllib.loads(hand_written.read_text("utf-8"))  # and it still says what it said
    assert document["defaults"] == {"dest": "/srv/pixsrc", "parallel": 3}
    assert document["providers"] == {"google": {"client_id": "abc.apps.example.com"}}
    if "inbox" in document["sources"]:
        assert document["sources"]["inbox"]["notes"] == "hand-written, unknown to pixsrc"


def test_import_adds_its_table_and_changes_nothing_else(hand_written: Path, tmp_path: Path) -> None:
    document = tmp_path / "team.toml"
    document.write_text('format = 1\n\n[sources.camera]\nname = "Camera"\ntype = "local-fs"\n\n'
                        '[sources.camera.config]\npath = "/tmp/camera"\n', "utf-8")
    result = run("import", str(document))
    assert result.exit_code == 0, result.stderr
    assert stamped(hand_written) == edited(HAND_WRITTEN, [(END, CAMERA_TABLE + END)])


def test_writes_in_a_row(hand_written: Path) -> None:
    for command in (["remove", "inbox", "--yes"], ["add", "local-fs", "--name", "Camera", "--set",
                    "path=/tmp/camera"], ["remove", "archive", "--yes"], ["disable", "camera"]):
        result = run(*command)
        assert result.exit_code == 0, (command, result.stderr)
    camera = CAMERA_TABLE.replace("enabled = true\ncreated_at = STAMP\nupdated_at = STAMP\n",
                                  "enabled = false\ncreated_at = STAMP\nupdated_at = STAMP\n")
    assert stamped(hand_written) == edited(HAND_WRITTEN, [(INBOX_TABLE, ""), (ARCHIVE_TABLE, camera)])


def test_through_a_symlink_the_target_keeps_its_comments(config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "sources.toml"
    target.parent.mkdir()
    target.write_text(HAND_WRITTEN, "utf-8")
    config_file.parent.mkdir(parents=True)
    try:
        config_file.symlink_to(target)
    except OSError as exc:  # Windows without developer mode
        pytest.skip(f"cannot create symlinks here: {exc}")
    result = run("disable", "inbox")
    assert result.exit_code == 0, result.stderr
    assert config_file.is_symlink()
    assert stamped(target) == edited(HAND_WRITTEN, CASES["disable"][1])


# odd but valid: an inline config table, dotted keys, an indented table, a comment on a header, nan
COMPACT = """\
version = 1
ratio = nan   # not a number
[sources.inbox]
name = "Inbox"
type = "local-fs"
config = { path = "/tmp/inbox", recursive = true }   # inline
[sources.stale]   # a comment on the header
  name = "Stale"
  type = "local-fs"
  config.path = "/tmp/stale"
"""

COMPACT_CASES = {
    "edit --set inline": (["edit", "inbox", "--set", "recursive=false"], [(
        'config = { path = "/tmp/inbox", recursive = true }   # inline\n',
        'config = { path = "/tmp/inbox", recursive = false }   # inline\nupdated_at = STAMP\n')]),
    "disable, indented": (["disable", "stale"], [(
        '  config.path = "/tmp/stale"\n',
        '  config.path = "/tmp/stale"\n  enabled = false\n  updated_at = STAMP\n')]),
    "remove": (["remove", "inbox", "--yes"], [(
        '[sources.inbox]\nname = "Inbox"\ntype = "local-fs"\n'
        'config = { path = "/tmp/inbox", recursive = true }   # inline\n', "")]),
}


@pytest.mark.parametrize("case", list(COMPACT_CASES))
def test_odd_layouts_are_edited_in_their_own_style(config_file: Path, case: str) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(COMPACT, "utf-8")
    command, edits = COMPACT_CASES[case]
    result = run(*command)
    assert result.exit_code == 0, result.stderr
    assert stamped(config_file) == edited(COMPACT, edits)


DOTTED = """\
# mine
[sources.inbox]
name = "Inbox"
type = "local-fs"
config = { path = "/tmp/inbox" }

[sources.stale]
name = "Stale"
type = "local-fs"
config.path = "/tmp/stale"
config.recursive = false
"""


def test_a_change_tomlkit_cannot_make_key_by_key_still_lands_and_keeps_the_rest(config_file: Path) -> None:
    """Deleting two dotted keys one by one trips tomlkit (0.13-0.15): that source's table is written anew."""
    config_file.parent.mkdir(parents=True)
    config_file.write_text(DOTTED, "utf-8")
    with edit_config(config_file) as config:
        config.sources["stale"].config = {}
        config.sources["stale"].name = "Stale, emptied"
    text = config_file.read_text("utf-8")
    assert text.startswith(DOTTED[:DOTTED.index("[sources.stale]")])
    stale = tomllib.loads(text)["sources"]["stale"]
    assert (stale["name"], stale.get("config", {})) == ("Stale, emptied", {})
    assert tomllib.loads(text)["sources"]["inbox"] == tomllib.loads(DOTTED)["sources"]["inbox"]


@pytest.mark.parametrize("command", [
    ["enable", "inbox"],  # already enabled
    ["disable", "archive"],  # already disabled
    ["edit", "inbox", "--set", "recursive=true"],  # already so
])
def test_a_command_that_changes_nothing_writes_nothing(hand_written: Path, command: list[str]) -> None:
    before = hand_written.stat()
    result = run(*command)
    assert result.exit_code == 0, result.stderr
    after = hand_written.stat()
    assert hand_written.read_text("utf-8") == HAND_WRITTEN
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not even rewritten


def test_a_round_trip_with_no_change_writes_nothing(hand_written: Path) -> None:
    hand_written.chmod(0o644)  # a write would make it 0600: the mode shows it was not written either
    before = hand_written.stat()
    with edit_config(hand_written) as config:
        config.sources["inbox"].config = dict(config.sources["inbox"].config)  # equal values, new objects
    after = hand_written.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (before.st_ino, before.st_mtime_ns, before.st_mode)
    assert sorted(p.name for p in hand_written.parent.iterdir()) == ["sources.toml", "sources.toml.lock"]


PROBE = """
import sys
from pathlib import Path
from pixsrc.config import edit_config, load_config

path = Path(sys.argv[1])
load_config(path)
with edit_config(path):
    pass
assert "tomlkit" not in sys.modules, "reading, or a write with nothing to change, imported tomlkit"
with edit_config(path) as config:
    config.sources["inbox"].enabled = False
assert "tomlkit" in sys.modules, "the probe cannot see the import"
"""


def test_tomlkit_is_imported_only_to_write(hand_written: Path) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, str(hand_written)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    assert "enabled = false\n" in hand_written.read_text("utf-8")
