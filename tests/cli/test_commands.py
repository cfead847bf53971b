"""Every command through CliRunner: help, flags, validation, ids, lookups and their messages."""

from __future__ import annotations

import filecmp
import json
import tomllib
from pathlib import Path

import pytest
from support.cli import run

from pixsrc import __version__

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "sample-assets"
SAMPLE_IMAGES = sorted(["ocean.png", "sunrise.png", "logos/pixsrc-mark.png", "logos/pixsrc-mark-inverse.png"])


def toml(path: Path) -> dict:
    return tomllib.loads(path.read_text("utf-8"))


def ok(*args: str, input: str | None = None):  # noqa: A002
    result = run(*args, input=input)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- help and version ---------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["add"],
    ["list"],
    ["show"],
    ["edit"],
    ["enable"],
    ["disable"],
    ["remove"],
    ["types"],
    ["fetch"],
    ["auth"],
    ["auth", "login"],
    ["auth", "status"],
    ["auth", "logout"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pixsrc")
def test_help_has_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "Usage: pixsrc" in result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"pixsrc {__version__}\n"


def test_no_arguments_shows_help() -> None:
    result = run()
    assert result.exit_code in (0, 2)
    assert "Usage: pixsrc" in result.stdout + result.stderr


# -- add ----------------------------------------------------------------------------------------------


def test_add_without_type_and_without_tty_fails_fast(config_file: Path) -> None:
    result = run("add")
    assert result.exit_code == 2
    assert "error: missing TYPE" in result.stderr
    assert not config_file.exists()


def test_add_missing_required_field_lists_it(config_file: Path) -> None:
    result = run("add", "remote-gallery", "--name", "G")
    assert result.exit_code == 2
    assert "missing required field(s) for remote-gallery: url (Gallery URL)" in result.stderr
    assert "--set url=..." in result.stderr
    assert not config_file.exists()


def test_add_unknown_type_suggests(config_file: Path) -> None:
    result = run("add", "local-f", "--set", "path=/tmp")
    assert result.exit_code == 2
    assert "unknown source type 'local-f'" in result.stderr
    assert "did you mean 'local-fs'?" in result.stderr


def test_set_converts_booleans_and_lists(config_file: Path) -> None:
    ok(
        "add",
        "local-fs",
        "--name",
        "Inbox",
        "--set",
        "path=/data/in",
        "--set",
        "recursive=false",
        "--set",
        "include=*.jpg, *.png ,",
        "--set",
        "all_files=yes",
    )
    config = toml(config_file)["sources"]["inbox"]["config"]
    assert config == {
        "path": "/data/in",
        "recursive": False,
        "include": ["*.jpg", "*.png"],
        "all_files": True,
    }
    assert config_file.read_text().count("recursive = false") == 1


def test_set_converts_integers(config_file: Path) -> None:
    ok("add", "remote-gallery", "--name", "G", "--set", "url=https://g.example/", "--set", "max_depth=3")
    assert toml(config_file)["sources"]["g"]["config"]["max_depth"] == 3


def test_relative_path_is_made_absolute(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok("add", "local-fs", "--name", "Here", "--set", "path=photos", "--set", "recursive=true")
    assert toml(config_file)["sources"]["here"]["config"]["path"] == str(tmp_path / "photos")


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("index=bogus", "sources.new.config.index: Input should be 'auto', 'json' or 'html'"),
        ("url=ftp://x", "sources.new.config.url: must be an http:// or https:// URL with a host"),
        ("url=https://", "sources.new.config.url: must be an http:// or https:// URL with a host"),
        ("max_depth=deep", "sources.new.config.max_depth: Input should be a valid integer"),
        ("colour=red", "--set colour: remote-gallery has no field 'colour'"),
        ("url", "--set 'url': expected KEY=VALUE"),
    ],
)
def test_set_validation(config_file: Path, pair: str, message: str) -> None:
    args = ["add", "remote-gallery", "--name", "G", "--set", pair]
    if not pair.startswith("url"):
        args += ["--set", "url=https://g.example/"]
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not config_file.exists()


def test_unknown_key_names_the_valid_keys() -> None:
    result = run("add", "local-fs", "--set", "path=/tmp", "--set", "folder=/x")
    assert result.exit_code == 2
    assert "its fields: path, recursive, include, exclude, follow_symlinks, all_files" in result.stderr


def test_required_field_must_not_be_empty(config_file: Path) -> None:
    result = run("add", "local-fs", "--name", "X", "--set", "path=")
    assert result.exit_code == 2
    assert "path" in result.stderr
    assert not config_file.exists()


def test_id_is_a_slug_of_the_name_and_deduplicated(config_file: Path) -> None:
    ok("add", "local-fs", "--name", "Client Assets", "--set", "path=/a")
    dup = run("add", "local-fs", "--name", "client assets", "--set", "path=/b")
    assert dup.exit_code == 2
    assert "a source is already named 'client assets'" in dup.stderr
    ok("add", "local-fs", "--name", "Client Assets!", "--set", "path=/c")
    ok("add", "local-fs", "--name", "Ünïcödé  Fotos / 2024", "--set", "path=/d")
    sources = toml(config_file)["sources"]
    assert list(sources) == ["client-assets", "client-assets-2", "unicode-fotos-2024"]
    assert sources["client-assets-2"]["name"] == "Client Assets!"


def test_explicit_id(config_file: Path) -> None:
    ok("add", "local-fs", "--name", "A", "--id", "my-id", "--set", "path=/a")
    bad = run("add", "local-fs", "--name", "B", "--id", "My Id", "--set", "path=/b")
    assert bad.exit_code == 2 and "--id 'My Id'" in bad.stderr
    taken = run("add", "local-fs", "--name", "C", "--id", "my-id", "--set", "path=/c")
    assert taken.exit_code == 2 and "a source with id 'my-id' already exists" in taken.stderr
    assert list(toml(config_file)["sources"]) == ["my-id"]


def test_name_defaults_to_the_type_name(config_file: Path) -> None:
    ok("add", "local-fs", "--set", "path=/a")
    assert toml(config_file)["sources"]["local-folder"]["name"] == "Local folder"


# -- list and show ------------------------------------------------------------------------------------


@pytest.fixture
def three(config_file: Path) -> Path:
    ok("add", "local-fs", "--name", "Inbox", "--set", f"path={SAMPLES}")
    ok("add", "local-fs", "--name", "Archive", "--set", "path=/archive", "--disabled", "--dest", "/srv/a")
    ok("add", "remote-gallery", "--name", "Client Assets", "--set", "url=https://g.example/")
    return config_file


def test_list_table(three: Path) -> None:
    out = ok("list").stdout.splitlines()
    assert out[0].split() == ["ID", "NAME", "TYPE", "ENABLED", "INTERVAL", "DEST"]
    assert out[1].split() == ["inbox", "Inbox", "local-fs", "yes"]
    assert out[2].split() == ["archive", "Archive", "local-fs", "no", "/srv/a"]
    assert out[3].split() == ["client-assets", "Client", "Assets", "remote-gallery", "yes"]


def test_list_json_and_type_filter(three: Path) -> None:
    rows = json.loads(ok("list", "--json").stdout)
    assert [r["id"] for r in rows] == ["inbox", "archive", "client-assets"]
    assert rows[1]["enabled"] is False and rows[1]["dest"] == "/srv/a"
    filtered = json.loads(ok("list", "--json", "--type", "remote-gallery").stdout)
    assert [r["id"] for r in filtered] == ["client-assets"]
    assert json.loads(ok("list", "--json", "--type", "nothing").stdout) == []


def test_list_empty_says_so_on_stderr(config_file: Path) -> None:
    result = ok("list")
    assert result.stdout == ""
    assert f"no sources in {config_file}" in result.stderr


def test_show_json_has_auth_status_without_secret(three: Path) -> None:
    ok("auth", "login", "client-assets", "--api-key-stdin", input="tok-SECRET-42\n")
    result = ok("show", "client-assets", "--json")
    data = json.loads(result.stdout)
    assert data["id"] == "client-assets" and data["type"] == "remote-gallery"
    assert data["available"] is True and data["problem"] is None
    assert data["auth"] == {
        "kind": "api-key",
        "status": "ok",
        "stored_in": "keyring keyrings.alt.file.PlaintextKeyring",
        "detail": None,
        "stored_at": data["auth"]["stored_at"],
        "age_days": 0.0,
    }
    assert data["auth"]["stored_at"].endswith("Z")
    text = ok("show", "client-assets")
    assert "auth:     api-key: ok (keyring keyrings.alt.file.PlaintextKeyring)" in text.stdout
    assert "tok-SECRET-42" not in result.stdout + result.stderr + text.stdout + text.stderr


def test_show_text(three: Path) -> None:
    out = ok("show", "archive").stdout
    assert out.splitlines()[:4] == [
        "Archive (archive)",
        "  type:     local-fs",
        "  enabled:  no",
        "  dest:     /srv/a",
    ]
    assert "  path: /archive" in out


def test_source_by_exact_name_case_insensitively(three: Path) -> None:
    assert json.loads(ok("show", "CLIENT assets", "--json").stdout)["id"] == "client-assets"
    assert json.loads(ok("show", "inbox", "--json").stdout)["id"] == "inbox"
    partial = run("show", "Client")
    assert partial.exit_code == 2


def test_unknown_source_suggests_the_closest(three: Path) -> None:
    result = run("show", "clent-assets")
    assert result.exit_code == 2
    assert "error: no source named 'clent-assets'" in result.stderr
    assert "did you mean 'client-assets'?" in result.stderr
    far = run("enable", "zzzzzz")
    assert far.exit_code == 2 and "did you mean" not in far.stderr and "see `pixsrc list`" in far.stderr


# -- edit ---------------------------------------------------------------------------------------------


def test_edit_set_unset_name_dest(three: Path) -> None:
    before = toml(three)["sources"]["client-assets"]
    ok("edit", "client-assets", "--set", "index=json", "--set", "max_depth=2", "--set", "include=*.png")
    ok("edit", "client-assets", "--unset", "max_depth", "--name", "Clients", "--dest", "/srv/c")
    after = toml(three)["sources"]["client-assets"]
    assert after["config"] == {"url": "https://g.example/", "index": "json", "include": ["*.png"]}
    assert after["name"] == "Clients" and after["dest"] == "/srv/c"
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] >= before["updated_at"]
    ok("edit", "clients", "--dest", "")
    assert "dest" not in toml(three)["sources"]["client-assets"]


def test_edit_rejections_leave_the_file_alone(three: Path) -> None:
    before = three.read_bytes()
    for args, message in [
        (["--set", "index=xml"], "sources.client-assets.config.index"),
        (["--unset", "nope"], "--unset nope: remote-gallery has no field 'nope'"),
        (["--unset", "url"], "sources.client-assets.config.url: required field is missing"),
        (["--name", "inbox"], "a source is already named 'inbox'"),
        (["--name", "  "], "the name must not be empty"),
    ]:
        result = run("edit", "client-assets", *args)
        assert result.exit_code == 2, args
        assert message in result.stderr, (args, result.stderr)
    assert three.read_bytes() == before


# -- enable, disable, fetch ---------------------------------------------------------------------------


def test_disable_enable_and_fetch(three: Path, tmp_path: Path) -> None:
    ok("disable", "inbox")
    assert toml(three)["sources"]["inbox"]["enabled"] is False
    result = run("fetch", "inbox", "--dest", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "source 'inbox' is disabled" in result.stderr
    assert "pixsrc enable inbox" in result.stderr
    assert not (tmp_path / "out").exists()
    ok("enable", "Inbox")
    assert toml(three)["sources"]["inbox"]["enabled"] is True
    ok("fetch", "inbox", "--dest", str(tmp_path / "out"))
    assert files_under(tmp_path / "out") == SAMPLE_IMAGES
    for rel in SAMPLE_IMAGES:
        assert filecmp.cmp(SAMPLES / rel, tmp_path / "out" / rel, shallow=False)


def test_fetch_all_skips_disabled(config_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "a.png").write_bytes(b"\x89PNG a")
    (other / "sub" / "b.jpg").write_bytes(b"\xff\xd8 b")
    ok("add", "local-fs", "--name", "Inbox", "--set", f"path={SAMPLES}")
    ok("add", "local-fs", "--name", "Other", "--set", f"path={other}", "--disabled")
    ok("add", "local-fs", "--name", "Third", "--set", f"path={other}", "--set", "recursive=false")
    result = ok("fetch", "--all", "--dest", str(tmp_path / "out"), "--json")
    report = json.loads(result.stdout)
    assert [s["source"] for s in report["sources"]] == ["inbox", "third"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["inbox", "third"]
    assert files_under(tmp_path / "out" / "third") == ["a.png"]
    assert files_under(tmp_path / "out" / "inbox") == SAMPLE_IMAGES


def test_fetch_needs_sources_or_all(three: Path) -> None:
    result = run("fetch")
    assert result.exit_code == 2 and "pass --all" in result.stderr
    both = run("fetch", "inbox", "--all")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_fetch_twice_is_incremental(three: Path, tmp_path: Path) -> None:
    first = json.loads(ok("fetch", "inbox", "--dest", str(tmp_path / "o"), "--json").stdout)["sources"][0]
    second = json.loads(ok("fetch", "inbox", "--dest", str(tmp_path / "o"), "--json").stdout)["sources"][0]
    assert (first["downloaded"], first["unchanged"]) == (4, 0)
    assert (second["downloaded"], second["unchanged"], second["status"]) == (0, 4, "ok")


# -- remove -------------------------------------------------------------------------------------------


def test_remove_yes_deletes_credential_and_manifest_but_not_files(
    three: Path, state_path: Path, tmp_path: Path
) -> None:
    import keyring

    from pixsrc.state import State

    ok("edit", "client-assets", "--set", "url=https://g.example/x/")
    ok("auth", "login", "client-assets", "--api-key-stdin", input="abc123\n")
    assert keyring.get_password("pixsrc", "client-assets") == "abc123"
    ok("fetch", "inbox", "--dest", str(tmp_path / "out"))
    state = State(state_path / "state.db")
    assert len(state.manifest("inbox")) == 4
    state.close()

    removed = ok("remove", "client-assets", "--yes")
    assert "removed 'client-assets'" in removed.stderr
    assert "deleted its credential from keyring" in removed.stderr
    assert keyring.get_password("pixsrc", "client-assets") is None

    ok("remove", "INBOX", "-y")
    state = State(state_path / "state.db")
    assert state.manifest("inbox") == {}
    state.close()
    assert files_under(tmp_path / "out") == SAMPLE_IMAGES
    assert list(toml(three)["sources"]) == ["archive"]


def test_remove_without_yes_and_without_tty(three: Path) -> None:
    before = three.read_bytes()
    result = run("remove", "inbox")
    assert result.exit_code == 2
    assert "removing 'inbox' needs confirmation" in result.stderr and "--yes" in result.stderr
    assert three.read_bytes() == before


def test_remove_unknown(three: Path) -> None:
    result = run("remove", "inbx", "--yes")
    assert result.exit_code == 2 and "did you mean 'inbox'?" in result.stderr


# -- types --------------------------------------------------------------------------------------------


def test_types() -> None:
    listing = ok("types").stdout
    assert "local-fs" in listing and "remote-gallery" in listing
    data = json.loads(ok("types", "remote-gallery", "--json").stdout)
    assert data[0]["auth"]["kind"] == "api-key"
    fields = {f["key"]: f for f in data[0]["fields"]}
    assert fields["url"]["type"] == "url" and fields["url"]["required"] is True
    assert fields["index"]["type"] == "select" and fields["index"]["options"] == ["auto", "json", "html"]
    unknown = run("types", "remote-galery")
    assert unknown.exit_code == 2 and "did you mean 'remote-gallery'?" in unknown.stderr


def test_dest_on_the_command_line_beats_the_sources_own_dest(config_file: Path, tmp_path: Path) -> None:
    own = tmp_path / "own"
    ok("add", "local-fs", "--name", "Inbox", "--set", f"path={SAMPLES}", "--dest", str(own))
    ok("add", "local-fs", "--name", "Plain", "--set", f"path={SAMPLES}")
    ok("fetch", "inbox", "--dest", str(tmp_path / "flag"))
    assert files_under(tmp_path / "flag") == SAMPLE_IMAGES and not own.exists()
    ok("fetch", "inbox", "plain", "--dest", str(tmp_path / "many"))  # several sources: DIR/<id>
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["inbox", "plain"]
    ok("fetch", "inbox")  # without the flag the source's own dest is used
    assert files_under(own) == SAMPLE_IMAGES


def test_a_default_name_that_is_taken_becomes_free(config_file: Path) -> None:
    """Two sources of one type, neither with --name: the second is not refused for the first's default name."""
    ok("add", "local-fs", "--set", f"path={SAMPLES}")
    ok("add", "local-fs", "--set", f"path={SAMPLES}")
    ok("add", "local-fs", "--id", "third", "--set", f"path={SAMPLES}")
    rows = {row["id"]: row["name"] for row in json.loads(ok("list", "--json").stdout)}
    assert sorted(rows.values()) == ["Local folder", "Local folder 2", "third"]
    assert run("add", "local-fs", "--name", "third", "--set", f"path={SAMPLES}").exit_code == 2  # a chosen one is not


@pytest.mark.parametrize("args", [["fetch", "inbox"], ["stats"], ["fetch", "--due"], ["remove", "inbox", "--yes"]])
def test_a_damaged_state_database_is_a_clear_error_that_changes_nothing(config_file: Path, state_path: Path,
                                                                          tmp_path: Path, args: list[str]) -> None:
    """Not "internal error: DatabaseError": the file is named with the fix, neither it nor the config is
    touched (remove opens the state before it edits the config)."""
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG one")
    assert run("add", "local-fs", "--id", "inbox", "--set", f"path={folder}", "--interval", "1h",
               "--no-input").exit_code == 0
    state_path.mkdir(parents=True)
    damaged = state_path / "state.db"
    damaged.write_bytes(b"not a database, " * 100)
    config_before = config_file.read_bytes()
    result = run(*args)
    assert result.exit_code == 2, result.stderr
    assert f"{damaged} is not a usable pixsrc state database" in result.stderr
    assert f"mv '{damaged}' '{damaged}.broken'" in result.stderr and "internal error" not in result.stderr
    assert damaged.read_bytes() == b"not a database, " * 100
    assert config_file.read_bytes() == config_before
