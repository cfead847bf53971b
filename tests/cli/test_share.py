"""`pixsrc export` and `pixsrc import`: shareable source documents, through the real entry point."""

from __future__ import annotations

import json
import stat
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from support.cli import run

from pixsrc import __version__

SECRET = "s3cr3t-client-value-42"
API_KEY = "gallery-api-key-value-77"

TEAM_CONFIG = """\
version = 1

[providers.google]
client_id = "team.apps.googleusercontent.com"
max_concurrency = 4

[sources.inbox]
name = "Inbox"
type = "local-fs"
enabled = true
created_at = 2026-01-01T10:00:00Z
updated_at = 2026-01-02T10:00:00Z
dest = "/srv/assets/inbox"
notes = "a key pixsrc does not know"

[sources.inbox.config]
path = "/data/inbox"
include = ["*.jpg", "*.{png,webp}"]
recursive = false

[sources.client-assets]
name = "Client Assets"
type = "remote-gallery"
enabled = false

[sources.client-assets.config]
url = "https://assets.example.com/gallery/"
index = "json"
max_depth = 3

[sources.team-drive]
name = "Team Drive"
type = "google-drive"

[sources.team-drive.config]
folder_id = "1AbC"

[sources.boards]
name = "Boards"
type = "pinterest"

[sources.boards.config]
include_secret = true
"""


def ok(*args: str, input: str | None = None):  # noqa: A002
    result = run(*args, input=input)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def listing(config: Path) -> list[dict]:
    rows = json.loads(ok("list", "--json", "--config", str(config)).stdout)
    return [{k: v for k, v in row.items() if k not in ("created_at", "updated_at")} for row in rows]


def import_json(*args: str, input: str | None = None) -> dict:  # noqa: A002
    return json.loads(ok("import", *args, "--json", input=input).stdout)


@pytest.fixture
def team(config_file: Path) -> Path:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(TEAM_CONFIG, "utf-8")
    return config_file


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    return tmp_path / "other" / "sources.toml"


def test_help_has_examples() -> None:
    for command in ("export", "import"):
        result = ok(command, "--help")
        assert "Example" in result.stdout and f"Usage: pixsrc {command}" in result.stdout


# -- export ---------------------------------------------------------------------------------------

def test_export_carries_settings_and_nothing_else(team: Path) -> None:
    ok("auth", "client", "google", "--secret-stdin", input=SECRET)  # stored in the keyring, never exported
    from pixsrc import tokens

    tokens.put("client-assets", API_KEY)
    result = ok("export")
    text = result.stdout
    header, _, day = text.splitlines()[0].rpartition(", ")
    assert header == f"# pixsrc {__version__} export of 4 sources"
    assert abs(date.fromisoformat(day) - datetime.now(UTC).date()) <= timedelta(days=1)
    doc = tomllib.loads(text)
    assert doc["format"] == 1
    assert doc["sources"]["inbox"] == {"name": "Inbox", "type": "local-fs", "enabled": True, "config": {
        "path": "/data/inbox", "include": ["*.jpg", "*.{png,webp}"], "recursive": False}}
    assert doc["sources"]["client-assets"]["enabled"] is False
    assert doc["sources"]["boards"]["config"] == {"include_secret": True}  # a switch, not a credential
    assert doc["providers"] == {"google": {"client_id": "team.apps.googleusercontent.com", "max_concurrency": 4}}
    for absent in (SECRET, API_KEY, "created_at", "updated_at", "dest", "notes", "2026-01"):
        assert absent not in text
    assert result.stderr == ""


def test_export_chosen_sources_and_only_their_providers(team: Path) -> None:
    doc = tomllib.loads(ok("export", "inbox", "client assets").stdout)  # an id and a name
    assert list(doc["sources"]) == ["inbox", "client-assets"]
    assert "providers" not in doc  # neither needs an OAuth client
    assert list(tomllib.loads(ok("export", "Team Drive").stdout)["providers"]) == ["google"]
    result = run("export", "nope")
    assert result.exit_code == 2 and "no source named 'nope'" in result.stderr and result.stdout == ""


def test_export_with_dest(team: Path) -> None:
    doc = tomllib.loads(ok("export", "inbox", "--with-dest").stdout)
    assert doc["sources"]["inbox"]["dest"] == "/srv/assets/inbox"


def test_export_never_writes_a_secret_kept_in_the_config_by_hand(team: Path) -> None:
    with team.open("a", encoding="utf-8") as handle:
        handle.write(f'\n[sources.plug]\nname = "Plug"\ntype = "not-installed-type"\n\n[sources.plug.config]\n'
                     f'api_key = "{API_KEY}"\nalbum = "x"\n')
    text = team.read_text("utf-8").replace("max_concurrency = 4", f'max_concurrency = 4\nclient_secret = "{SECRET}"')
    team.write_text(text, "utf-8")
    result = ok("export")
    doc = tomllib.loads(result.stdout)
    assert doc["sources"]["plug"] == {"name": "Plug", "type": "not-installed-type", "enabled": True,
                                      "config": {"album": "x"}}
    assert "client_secret" not in doc["providers"]["google"]
    assert API_KEY not in result.stdout + result.stderr and SECRET not in result.stdout + result.stderr
    assert "sources.plug.config.api_key: looks like a credential; not exported" in result.stderr
    assert "providers.google.client_secret: not exported" in result.stderr
    assert "type 'not-installed-type' is not installed here" in result.stderr


def test_export_output_file(team: Path, tmp_path: Path) -> None:
    out = tmp_path / "share" / "team.toml"
    result = ok("export", "--output", str(out))
    assert result.stdout == "" and f"exported 4 sources to {out}" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert tomllib.loads(out.read_text("utf-8"))["format"] == 1
    before = out.read_bytes()
    refused = run("export", "inbox", "--output", str(out))
    assert refused.exit_code == 2 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert out.read_bytes() == before
    ok("export", "inbox", "--output", str(out), "--force")
    assert list(tomllib.loads(out.read_text("utf-8"))["sources"]) == ["inbox"]
    config_before = team.read_bytes()
    onto_config = run("export", "--output", str(team), "--force")
    assert onto_config.exit_code == 2 and "is your sources file" in onto_config.stderr
    assert team.read_bytes() == config_before


def test_export_of_an_empty_config_is_an_empty_document(config_file: Path) -> None:
    doc = tomllib.loads(ok("export").stdout)
    assert doc == {"format": 1}


# -- round trip -----------------------------------------------------------------------------------

@pytest.mark.parametrize("with_dest", [True, False], ids=["with-dest", "without-dest"])
def test_round_trip(team: Path, empty: Path, tmp_path: Path, with_dest: bool) -> None:
    out = tmp_path / "team.toml"
    ok("export", "--output", str(out), *(["--with-dest"] if with_dest else []))
    result = ok("import", str(out), "--config", str(empty))
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [
        ["added", "inbox"], ["added", "client-assets"], ["added", "team-drive"], ["added", "boards"]]
    assert "next: pixsrc auth login team-drive; pixsrc auth login boards" in result.stderr
    expected = listing(team)
    if not with_dest:
        expected[0]["dest"] = None
    assert listing(empty) == expected
    imported = tomllib.loads(empty.read_text("utf-8"))
    assert imported["providers"] == {"google": {"client_id": "team.apps.googleusercontent.com",
                                                "max_concurrency": 4}}
    assert isinstance(imported["sources"]["inbox"]["created_at"], datetime)  # fresh stamps, as `add` gives
    assert "notes" not in imported["sources"]["inbox"]
    # the same document again: every source is already there, the file is not touched
    before = empty.read_bytes()
    again = import_json(str(out), "--config", str(empty))
    assert [(s["action"], s["reason"]) for s in again["sources"]] == [("skipped", "identical")] * 4
    assert empty.read_bytes() == before


def test_import_from_stdin(team: Path, empty: Path) -> None:
    text = ok("export", "inbox").stdout
    report = import_json("-", "--config", str(empty), input=text)
    assert report["file"] == "<stdin>" and report["sources"][0]["action"] == "added"
    assert listing(empty)[0]["config"]["path"] == "/data/inbox"


# -- conflicts ------------------------------------------------------------------------------------

DOC = """\
format = 1

[sources.inbox]
name = "INBOX"
type = "local-fs"

[sources.inbox.config]
path = "/elsewhere"

[sources.photos]
name = "client assets"
type = "local-fs"

[sources.photos.config]
path = "/photos"
"""


@pytest.fixture
def doc_file(tmp_path: Path) -> Path:
    path = tmp_path / "doc.toml"
    path.write_text(DOC, "utf-8")
    return path


def test_default_policy_renames(team: Path, doc_file: Path) -> None:
    report = import_json(str(doc_file))
    assert report["schema"] == 1 and report["on_conflict"] == "rename" and report["dry_run"] is False
    assert [(s["action"], s["from_id"], s["id"], s["name"], s["reason"]) for s in report["sources"]] == [
        ("renamed", "inbox", "inbox-2", "INBOX 2", "id and name taken"),
        ("renamed", "photos", "photos", "client assets 2", "name taken"),
    ]
    rows = {row["id"]: row for row in listing(team)}
    assert rows["inbox"]["config"]["path"] == "/data/inbox"  # the user's own source is untouched
    assert rows["inbox-2"]["config"] == {"path": "/elsewhere"} and rows["inbox-2"]["name"] == "INBOX 2"
    assert rows["photos"]["name"] == "client assets 2"


def test_skip_policy(team: Path, doc_file: Path) -> None:
    before = team.read_bytes()
    report = import_json(str(doc_file), "--on-conflict", "skip")
    assert [(s["action"], s["reason"]) for s in report["sources"]] == [
        ("skipped", "id 'inbox' exists"), ("skipped", "name taken by 'client-assets'")]
    assert team.read_bytes() == before


def test_replace_policy_keeps_what_belongs_to_this_machine(team: Path, doc_file: Path) -> None:
    created = tomllib.loads(team.read_text("utf-8"))["sources"]["inbox"]["created_at"]
    report = import_json(str(doc_file), "--on-conflict", "replace")
    assert [(s["action"], s["id"], s["name"]) for s in report["sources"]] == [
        ("replaced", "inbox", "INBOX"), ("renamed", "photos", "client assets 2")]
    table = tomllib.loads(team.read_text("utf-8"))["sources"]["inbox"]
    assert table["config"] == {"path": "/elsewhere"} and table["name"] == "INBOX"
    assert table["dest"] == "/srv/assets/inbox"  # the document had no dest: this machine's stays
    assert table["created_at"] == created and table["updated_at"] > created
    assert table["notes"] == "a key pixsrc does not know"


def test_dry_run_reports_the_same_and_writes_nothing(team: Path, doc_file: Path) -> None:
    before = team.read_bytes()
    dry = import_json(str(doc_file), "--dry-run")
    assert team.read_bytes() == before
    real = import_json(str(doc_file))
    assert dry["dry_run"] is True and {**dry, "dry_run": False} == real
    human = run("import", str(doc_file), "--dry-run", "--config", str(team.with_name("fresh.toml")))
    assert human.exit_code == 0 and "dry run: nothing written" in human.stderr
    assert human.stdout.splitlines()[0].split() == ["ACTION", "ID", "NAME", "TYPE", "NOTE"]
    assert not team.with_name("fresh.toml").exists()


def test_bad_policy(team: Path, doc_file: Path) -> None:
    result = run("import", str(doc_file), "--on-conflict", "merge")
    assert result.exit_code == 2 and "use one of rename, skip, replace" in result.stderr


# -- providers ------------------------------------------------------------------------------------

def test_providers_added_but_the_users_client_is_kept(config_file: Path, tmp_path: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('version = 1\n\n[providers.google]\nclient_id = "mine.apps"\n', "utf-8")
    doc = tmp_path / "doc.toml"
    doc.write_text('format = 1\n\n[providers.google]\nclient_id = "theirs.apps"\nredirect_port = 53682\n\n'
                   '[providers.dropbox]\nclient_id = "dbx-app-key"\nallow_insecure = true\n', "utf-8")
    result = run("import", str(doc), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["providers"] == [
        {"name": "google", "added": ["redirect_port"], "kept": ["client_id"]},
        {"name": "dropbox", "added": ["client_id", "allow_insecure"], "kept": []}]
    assert "providers.google.client_id: kept yours ('mine.apps')" in result.stderr
    assert "does not switch your OAuth client" in result.stderr
    assert "providers.dropbox.allow_insecure = true came from" in result.stderr
    assert tomllib.loads(config_file.read_text("utf-8"))["providers"] == {
        "google": {"client_id": "mine.apps", "redirect_port": 53682},
        "dropbox": {"client_id": "dbx-app-key", "allow_insecure": True}}


# -- documents that are refused -------------------------------------------------------------------

SOURCE = '[sources.{id}]\nname = "{name}"\ntype = "{type}"\n{more}\n[sources.{id}.config]\n{config}\n'


def document(*, id: str = "good", name: str = "Good", type: str = "local-fs", more: str = "",  # noqa: A002
             config: str = 'path = "/x"') -> str:
    return "format = 1\n\n" + SOURCE.format(id=id, name=name, type=type, more=more, config=config)


@pytest.mark.parametrize(("text", "problem"), [
    (document(id="Bad_Id"), "sources.Bad_Id: a source id is lower-case letters"),
    (document(more='colour = "red"'), "sources.good.colour: unknown field"),
    (document(config='path = "/x"\ncolour = "red"'), "sources.good.config.colour: unknown field"),
    (document(config=""), "sources.good.config.path: required field is missing"),
    (document(config="path = 3"), "sources.good.config.path: Input should be a valid string"),
    (document(more='enabled = "yes"'), "sources.good.enabled: must be true or false"),
    (document(name=""), "sources.good.name: required, a non-empty string"),
    (document(type="remote-gallery", config='url = "ftp://x"'), "sources.good.config.url: must be an http://"),
    ("format = 1\n\n[providers.google]\nclient_secrets_file = 'x'\n", "providers.google.client_secrets_file: "
                                                                      "unknown setting"),
    ("format = 1\n\n[providers.google]\nclient_id = 5\n", "providers.google.client_id: must be a non-empty string"),
    ("format = 1\nversion = 1\n", "version: unknown key"),
], ids=["id", "field", "config-field", "missing", "value-type", "enabled", "name", "url", "provider-key",
        "client-id", "top-key"])
def test_an_invalid_entry_writes_nothing(team: Path, tmp_path: Path, text: str, problem: str) -> None:
    doc = tmp_path / "team.toml"
    fine = SOURCE.format(id="fine", name="Fine", type="local-fs", more="", config='path = "/y"')
    doc.write_text(text + "\n" + fine, "utf-8")  # after the top-level keys: a valid entry is not enough
    before = team.read_bytes()
    result = run("import", str(doc))
    assert result.exit_code == 2
    assert f"error: {doc}: {problem}" in result.stderr or f"; {doc}: {problem}" in result.stderr, result.stderr
    assert "nothing was imported" in result.stderr
    assert team.read_bytes() == before
    assert run("import", str(doc), "--dry-run").exit_code == 2


def test_every_problem_is_named_at_once(config_file: Path, tmp_path: Path) -> None:
    doc = tmp_path / "team.toml"
    doc.write_text(document(id="a", more="x = 1") + SOURCE.format(id="b", name="B", type="local-fs", more="",
                                                                 config=""), "utf-8")
    result = run("import", str(doc))
    assert result.exit_code == 2
    assert "sources.a.x: unknown field" in result.stderr and "sources.b.config.path: required" in result.stderr
    assert not config_file.exists()


@pytest.mark.parametrize("where", ["config", "source", "provider"])
def test_a_document_with_a_credential_is_refused(team: Path, tmp_path: Path, where: str) -> None:
    text = {"config": document(config=f'path = "/x"\napi_key = "{API_KEY}"'),
            "source": document(more=f'token = "{API_KEY}"'),
            "provider": f'format = 1\n\n[providers.google]\nclient_id = "x"\nclient_secret = "{API_KEY}"\n'}[where]
    doc = tmp_path / "team.toml"
    doc.write_text(text, "utf-8")
    before = team.read_bytes()
    result = run("import", str(doc), "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert "looks like a credential" in result.stderr and "treat the secrets as leaked" in result.stderr
    key = {"config": "sources.good.config.api_key", "source": "sources.good.token",
           "provider": "providers.google.client_secret"}[where]
    assert key in result.stderr
    assert API_KEY not in result.stderr
    assert team.read_bytes() == before


def test_a_source_id_that_sounds_like_a_secret_is_just_an_id(config_file: Path, tmp_path: Path) -> None:
    doc = tmp_path / "team.toml"
    doc.write_text(document(id="token", name="Token"), "utf-8")
    assert import_json(str(doc))["sources"][0]["id"] == "token"


@pytest.mark.parametrize(("text", "message", "hint"), [
    ("", "not a pixsrc export document", "pixsrc export"),
    (TEAM_CONFIG, "not a pixsrc export document", "looks like a sources file"),
    ("format = 2\n", "format 2 is not one this pixsrc reads", "upgrade pixsrc"),
    ("format = true\n", "format True is not one this pixsrc reads", "upgrade pixsrc"),
    ("format = 1\n[sources\n", "invalid TOML", None),
])
def test_documents_that_are_not_exports(config_file: Path, tmp_path: Path, text: str, message: str,
                                        hint: str | None) -> None:
    doc = tmp_path / "doc.toml"
    doc.write_text(text, "utf-8")
    result = run("import", str(doc))
    assert result.exit_code == 2 and message in result.stderr
    assert hint is None or hint in result.stderr
    assert not config_file.exists()


def test_missing_file(config_file: Path) -> None:
    result = run("import", "nowhere.toml")
    assert result.exit_code == 2 and "nowhere.toml: no such file" in result.stderr


def test_a_type_not_installed_is_kept_with_a_warning(config_file: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.toml"
    doc.write_text(document(type="flickr-plugin", config='album = "x"\nnested = { depth = 2 }'), "utf-8")
    result = run("import", str(doc))
    assert result.exit_code == 0
    assert "type 'flickr-plugin' is not installed; kept as it is, unchecked" in result.stderr
    table = tomllib.loads(config_file.read_text("utf-8"))["sources"]["good"]
    assert table["type"] == "flickr-plugin" and table["config"] == {"album": "x", "nested": {"depth": 2}}
