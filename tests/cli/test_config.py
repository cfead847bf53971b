"""The sources file: its documented shape, what survives a rewrite, atomic and concurrent writes,
broken files, invalid source configs, uninstalled types, and secrets kept out of it."""

from __future__ import annotations

import json
import stat
import subprocess
import tomllib
from datetime import datetime
from pathlib import Path

import pytest
from support.cli import pixsrc_exe, run, run_subprocess

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "sample-assets"


def read_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text("utf-8"))


def add_local(name: str, *extra: str) -> None:
    result = run("add", "local-fs", "--name", name, "--set", f"path={SAMPLES}", *extra)
    assert result.exit_code == 0, result.stderr


# -- shape -------------------------------------------------------------------------------------------


def test_add_writes_the_documented_shape(config_file: Path) -> None:
    result = run(
        "add",
        "remote-gallery",
        "--name",
        "Client Assets",
        "--set",
        "url=https://assets.example.com/gallery/",
        "--set",
        "index=json",
        "--set",
        "include=*.png, *.jpg",
        "--dest",
        "/srv/assets",
    )
    assert result.exit_code == 0, result.stderr
    assert "added 'client-assets'" in result.stderr
    document = read_toml(config_file)
    assert set(document) == {"version", "sources"}
    assert document["version"] == 1
    table = document["sources"]["client-assets"]
    assert set(table) == {"name", "type", "enabled", "created_at", "updated_at", "dest", "config"}
    assert table["name"] == "Client Assets"
    assert table["type"] == "remote-gallery"
    assert table["enabled"] is True
    assert table["dest"] == "/srv/assets"
    assert isinstance(table["created_at"], datetime) and table["created_at"].utcoffset().total_seconds() == 0
    assert table["updated_at"] == table["created_at"]
    # only the keys given, in their converted form (a list, not the raw string)
    assert table["config"] == {
        "url": "https://assets.example.com/gallery/",
        "index": "json",
        "include": ["*.png", "*.jpg"],
    }


def test_round_trip_through_list_json(config_file: Path) -> None:
    add_local("Inbox", "--disabled")
    listed = json.loads(run("list", "--json").stdout)
    assert [(s["id"], s["name"], s["type"], s["enabled"], s["available"]) for s in listed] == [
        ("inbox", "Inbox", "local-fs", False, True)
    ]
    assert listed[0]["config"] == {"path": str(SAMPLES)}
    document = read_toml(config_file)
    assert listed[0]["created_at"] == document["sources"]["inbox"]["created_at"].isoformat().replace(
        "+00:00", "Z"
    )


# -- what survives a rewrite -------------------------------------------------------------------------

FOREIGN = """\
version = 1
top_level_note = "kept"

[defaults]
dest = "/srv/pixsrc"
parallel = 3

[providers.google]
client_id = "abc.apps.example.com"
scopes = ["photos.readonly"]

[providers.google.extra]
nested = true

[ui]
theme = "dark"
colors = [1, 2, 3]

[sources.inbox]
name = "Inbox"
type = "local-fs"
enabled = true
notes = "hand-written, unknown to pixsrc"
future_field = { a = 1 }

[sources.inbox.config]
path = "/tmp/inbox"

[sources.stale]
name = "Stale"
type = "local-fs"

[sources.stale.config]
path = "/tmp/stale"
"""


def _foreign_parts(document: dict) -> dict:
    return {
        "top_level_note": document.get("top_level_note"),
        "defaults": document.get("defaults"),
        "providers": document.get("providers"),
        "ui": document.get("ui"),
    }


EXPECTED_FOREIGN = {
    "top_level_note": "kept",
    "defaults": {"dest": "/srv/pixsrc", "parallel": 3},
    "providers": {
        "google": {
            "client_id": "abc.apps.example.com",
            "scopes": ["photos.readonly"],
            "extra": {"nested": True},
        }
    },
    "ui": {"theme": "dark", "colors": [1, 2, 3]},
}


@pytest.mark.parametrize(
    "command",
    [
        ["add", "local-fs", "--name", "New", "--set", "path=/tmp/new"],
        ["edit", "inbox", "--set", "recursive=false"],
        ["edit", "stale", "--name", "Renamed"],
        ["remove", "stale", "--yes"],
        ["disable", "inbox"],
    ],
)
def test_unknown_tables_and_keys_survive_writes(config_file: Path, command: list[str]) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(FOREIGN)
    result = run(*command)
    assert result.exit_code == 0, result.stderr
    document = read_toml(config_file)
    assert _foreign_parts(document) == EXPECTED_FOREIGN
    inbox = document["sources"]["inbox"]
    assert inbox["notes"] == "hand-written, unknown to pixsrc"
    assert inbox["future_field"] == {"a": 1}
    assert inbox["config"]["path"] == "/tmp/inbox"


def test_each_write_keeps_the_others(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(FOREIGN)
    for command in (
        ["add", "local-fs", "--name", "New", "--set", "path=/tmp/new"],
        ["edit", "new", "--set", "all_files=true"],
        ["remove", "stale", "--yes"],
    ):
        result = run(*command)
        assert result.exit_code == 0, result.stderr
    document = read_toml(config_file)
    assert _foreign_parts(document) == EXPECTED_FOREIGN
    assert sorted(document["sources"]) == ["inbox", "new"]
    assert document["sources"]["new"]["config"] == {"path": "/tmp/new", "all_files": True}


# -- atomic writes -----------------------------------------------------------------------------------


def test_write_replaces_the_file_by_rename_with_mode_0600(config_file: Path) -> None:
    add_local("One")
    first = config_file.stat()
    assert stat.S_IMODE(first.st_mode) == 0o600
    add_local("Two")
    second = config_file.stat()
    assert second.st_ino != first.st_ino  # a new file renamed over the old one, not rewritten in place
    assert stat.S_IMODE(second.st_mode) == 0o600
    assert sorted(p.name for p in config_file.parent.iterdir()) == ["sources.toml", "sources.toml.lock"]
    assert sorted(read_toml(config_file)["sources"]) == ["one", "two"]


def test_mode_0600_even_when_the_user_file_was_world_readable(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("version = 1\n")
    config_file.chmod(0o644)
    add_local("One")
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_failed_write_leaves_the_old_file_and_no_temp_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_local("One")
    before = config_file.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pixsrc.config.os.replace", boom)
    result = run("add", "local-fs", "--name", "Two", "--set", f"path={SAMPLES}")
    assert result.exit_code == 2  # a clear error naming the file, not an internal one
    assert "No space left on device" in result.stderr and "was not changed" in result.stderr
    assert "internal error" not in result.stderr
    assert config_file.read_bytes() == before
    assert sorted(p.name for p in config_file.parent.iterdir()) == ["sources.toml", "sources.toml.lock"]


def test_twenty_concurrent_adds_all_land(config_file: Path) -> None:
    procs = [
        subprocess.Popen(
            [*pixsrc_exe(), "add", "local-fs", "--name", f"Source {n:02d}", "--set", f"path=/tmp/{n}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(20)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _ in outcomes] == [0] * 20, outcomes
    sources = read_toml(config_file)["sources"]
    assert sorted(sources) == [f"source-{n:02d}" for n in range(20)]
    assert {s["config"]["path"] for s in sources.values()} == {f"/tmp/{n}" for n in range(20)}
    assert sorted(p.name for p in config_file.parent.iterdir()) == ["sources.toml", "sources.toml.lock"]


# -- a broken file is reported and never rewritten ---------------------------------------------------

BROKEN = b'version = 1\n\n[sources.inbox]\nname = "Inbox\ntype = "local-fs"\n'


@pytest.mark.parametrize(
    "command",
    [
        ["add", "local-fs", "--name", "New", "--set", "path=/tmp/new"],
        ["edit", "inbox", "--set", "recursive=false"],
        ["remove", "inbox", "--yes"],
        ["enable", "inbox"],
        ["disable", "inbox"],
        ["list"],
        ["show", "inbox"],
        ["fetch", "inbox"],
    ],
)
def test_broken_toml_is_reported_with_location_and_left_alone(config_file: Path, command: list[str]) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_bytes(BROKEN)
    result = run(*command)
    assert result.exit_code == 2
    assert f"{config_file}:4:14: invalid TOML" in result.stderr
    assert result.stdout == ""
    assert config_file.read_bytes() == BROKEN
    assert sorted(p.name for p in config_file.parent.iterdir()) in (
        ["sources.toml"],
        ["sources.toml", "sources.toml.lock"],
    )


def test_broken_toml_in_a_subprocess_too(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_bytes(BROKEN)
    result = run_subprocess("add", "local-fs", "--name", "New", "--set", "path=/tmp/new")
    assert result.returncode == 2
    assert f"{config_file}:4:14:" in result.stderr
    assert "Traceback" not in result.stderr
    assert config_file.read_bytes() == BROKEN


def test_structurally_invalid_file_names_the_key(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    data = b'version = 1\n[sources.inbox]\nname = "Inbox"\ntype = "local-fs"\nenabled = "yes"\n'
    config_file.write_bytes(data)
    result = run("add", "local-fs", "--name", "New", "--set", "path=/tmp/new")
    assert result.exit_code == 2
    assert "sources.inbox.enabled: must be true or false" in result.stderr
    assert config_file.read_bytes() == data


# -- an invalid source config ------------------------------------------------------------------------

INVALID_URL = """\
version = 1

[sources.gallery]
name = "Gallery"
type = "remote-gallery"

[sources.gallery.config]
url = "ftp://x"
"""


def test_show_names_the_invalid_field(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(INVALID_URL)
    result = run("show", "gallery")
    assert result.exit_code == 2
    assert (
        "sources.gallery.config.url: must be an http:// or https:// URL with a host"
        in result.stdout + result.stderr
    )
    as_json = run("show", "gallery", "--json")
    assert as_json.exit_code == 2
    data = json.loads(as_json.stdout)
    assert data["problem"] == "sources.gallery.config.url: must be an http:// or https:// URL with a host"


def test_fetch_refuses_the_invalid_config(config_file: Path, tmp_path: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(INVALID_URL)
    result = run("fetch", "gallery", "--dest", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "sources.gallery.config.url: must be an http:// or https:// URL with a host" in result.stderr
    assert not (tmp_path / "out").exists()
    listing = run("fetch", "gallery", "--list")
    assert listing.exit_code == 2
    assert "sources.gallery.config.url" in listing.stderr


# -- a type that is not installed --------------------------------------------------------------------

GONE = """\
version = 1

[sources.old]
name = "Old plugin source"
type = "gone-plugin"
enabled = true

[sources.old.config]
token_path = "/x"
pages = 3
"""


def test_uninstalled_type_is_kept_listed_and_refused(config_file: Path, tmp_path: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text(GONE)
    add_local("Inbox")
    assert run("disable", "inbox").exit_code == 0
    document = read_toml(config_file)
    assert document["sources"]["old"] == {
        "name": "Old plugin source",
        "type": "gone-plugin",
        "enabled": True,
        "config": {"token_path": "/x", "pages": 3},
    }

    listed = {s["id"]: s for s in json.loads(run("list", "--json").stdout)}
    assert listed["old"]["available"] is False
    assert listed["inbox"]["available"] is True
    assert "gone-plugin (not installed)" in run("list").stdout

    result = run("fetch", "old", "--dest", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "type 'gone-plugin', which is not installed" in result.stderr
    assert not (tmp_path / "out").exists()

    show = run("show", "old", "--json")
    assert json.loads(show.stdout)["problem"] == "type 'gone-plugin' is not installed"

    # removing the orphan works and keeps the rest
    assert run("remove", "old", "--yes").exit_code == 0
    assert sorted(read_toml(config_file)["sources"]) == ["inbox"]


# -- no secret in the config file --------------------------------------------------------------------

SECRET = "sk-live-0123456789abcdef-DO-NOT-LEAK"


def test_auth_login_keeps_the_key_out_of_the_config(config_file: Path, isolated: Path) -> None:
    result = run("add", "remote-gallery", "--name", "Gallery", "--set", "url=https://g.example/")
    assert result.exit_code == 0, result.stderr
    before = config_file.read_bytes()
    login = run("auth", "login", "gallery", "--api-key-stdin", input=SECRET + "\n")
    assert login.exit_code == 0, login.stderr
    assert config_file.read_bytes() == before
    for path in config_file.parent.rglob("*"):
        assert SECRET.encode() not in path.read_bytes()
    for command in (
        ["show", "gallery"],
        ["show", "gallery", "--json"],
        ["list", "--json"],
        ["auth", "status"],
    ):
        out = run(*command)
        assert SECRET not in out.stdout + out.stderr
    import keyring

    assert keyring.get_password("pixsrc", "gallery") == SECRET
