"""Files on disk: pixsrc's folders are 0700 and its database and lock files 0600 whatever the umask,
an existing state folder that others can read is tightened, and a credentials file that others can
read is refused (as ssh refuses a private key) before a byte of it is used."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run
from support.gallery_server import GalleryServer

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "sample-assets"
SECRET = "gal-5e6f7a8b9c0d-SECRET"


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """The common default umask: without explicit modes, new folders would be 0755 and files 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def add_and_fetch(tmp_path: Path) -> None:
    added = run("add", "local-fs", "--name", "Inbox", "--set", f"path={SAMPLES}")
    assert added.exit_code == 0, added.stderr
    fetched = run("fetch", "inbox", "--dest", str(tmp_path / "out"))
    assert fetched.exit_code == 0, fetched.stderr


def test_new_folders_are_0700_and_database_and_locks_0600(
    tmp_path: Path, config_file: Path, state_path: Path
) -> None:
    add_and_fetch(tmp_path)
    assert mode(config_file.parent) == 0o700
    assert mode(config_file) == 0o600
    assert mode(config_file.with_name("sources.toml.lock")) == 0o600
    assert mode(state_path) == 0o700
    assert mode(state_path / "locks") == 0o700
    assert mode(state_path / "locks" / "inbox.lock") == 0o600
    assert mode(state_path / "state.db") == 0o600
    # SQLite's WAL side files (when still there) take the database's mode
    for side in ("state.db-wal", "state.db-shm"):
        if (state_path / side).exists():
            assert mode(state_path / side) == 0o600, side


def test_a_state_folder_created_by_a_login_is_0700(state_path: Path, config_file: Path) -> None:
    added = run("add", "remote-gallery", "--name", "Gallery", "--set", "url=http://127.0.0.1:9/", "--no-input")
    assert added.exit_code == 0, added.stderr
    login = run("auth", "login", "gallery", "--api-key-stdin", "--store", "file", input=SECRET + "\n")
    assert login.exit_code == 0, login.stderr
    assert mode(state_path) == 0o700
    assert mode(state_path / "credentials.json") == 0o600
    assert mode(state_path / "credentials.json.lock") == 0o600


def test_storing_a_credential_tightens_an_open_state_folder(state_path: Path, config_file: Path) -> None:
    state_path.mkdir()
    state_path.chmod(0o755)
    added = run("add", "remote-gallery", "--name", "Gallery", "--set", "url=http://127.0.0.1:9/", "--no-input")
    assert added.exit_code == 0, added.stderr
    login = run("auth", "login", "gallery", "--api-key-stdin", "--store", "file", input=SECRET + "\n")
    assert login.exit_code == 0, login.stderr
    assert mode(state_path) == 0o700  # the credentials file is 0600 in a folder only its owner can list
    assert mode(state_path / "credentials.json") == 0o600


def test_an_existing_open_state_folder_and_files_are_tightened(tmp_path: Path, state_path: Path) -> None:
    # what an older pixsrc (or a copy with cp -r) leaves behind
    (state_path / "locks").mkdir(parents=True)
    state_path.chmod(0o755)
    (state_path / "locks").chmod(0o755)
    add_and_fetch(tmp_path)  # creates state.db
    (state_path / "state.db").chmod(0o644)
    (state_path / "locks" / "inbox.lock").chmod(0o644)
    state_path.chmod(0o755)
    (state_path / "locks").chmod(0o755)

    fetched = run("fetch", "inbox", "--dest", str(tmp_path / "out"))
    assert fetched.exit_code == 0, fetched.stderr
    assert mode(state_path) == 0o700
    assert mode(state_path / "locks") == 0o700
    assert mode(state_path / "state.db") == 0o600
    assert mode(state_path / "locks" / "inbox.lock") == 0o600


def test_tightening_keeps_the_owner_bits(tmp_path: Path, state_path: Path) -> None:
    add_and_fetch(tmp_path)
    state_path.chmod(0o775)  # only group and other bits go; the owner's stay as they were
    fetched = run("fetch", "inbox", "--dest", str(tmp_path / "out"))
    assert fetched.exit_code == 0, fetched.stderr
    assert mode(state_path) == 0o700


def test_an_existing_user_config_folder_is_left_as_it_is(tmp_path: Path, config_file: Path) -> None:
    # PIXSRC_CONFIG / --config may point into a folder that is not pixsrc's own (a dotfiles repo)
    config_file.parent.mkdir()
    config_file.parent.chmod(0o755)
    add_and_fetch(tmp_path)
    assert mode(config_file.parent) == 0o755
    assert mode(config_file) == 0o600


def test_the_default_config_folder_is_pixsrcs_own_and_tightened(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIXSRC_CONFIG")  # the platform's folder: $XDG_CONFIG_HOME/pixsrc here
    folder = isolated / "home" / ".config" / "pixsrc"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    added = run("add", "local-fs", "--name", "Inbox", "--set", f"path={SAMPLES}")
    assert added.exit_code == 0, added.stderr
    assert (folder / "sources.toml").is_file()
    assert mode(folder) == 0o700
    assert mode(folder / "sources.toml") == 0o600


# -- the credentials file ---------------------------------------------------------------------------


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[GalleryServer]:
    with GalleryServer(tmp_path / "gallery") as server:
        server.write("a.png", b"\x89PNG secret pixels")
        server.require_bearer(SECRET)
        yield server


@pytest.fixture
def stored(gallery: GalleryServer, state_path: Path) -> Path:
    added = run("add", "remote-gallery", "--name", "Gallery", "--set", f"url={gallery.url}", "--no-input")
    assert added.exit_code == 0, added.stderr
    login = run("auth", "login", "gallery", "--api-key-stdin", "--store", "file", input=SECRET + "\n")
    assert login.exit_code == 0, login.stderr
    store = state_path / "credentials.json"
    assert mode(store) == 0o600
    return store


def test_the_credentials_file_at_0600_works(stored: Path, gallery: GalleryServer, tmp_path: Path) -> None:
    fetched = run("fetch", "gallery", "--dest", str(tmp_path / "out"))
    assert fetched.exit_code == 0, fetched.stderr
    assert (tmp_path / "out" / "a.png").read_bytes() == b"\x89PNG secret pixels"


@pytest.mark.parametrize("too_open", [0o644, 0o640, 0o604, 0o620, 0o606])
def test_a_credentials_file_others_can_use_is_refused(
    stored: Path, gallery: GalleryServer, tmp_path: Path, too_open: int
) -> None:
    stored.chmod(too_open)
    gallery.clear_requests()
    fetched = run("fetch", "gallery", "--dest", str(tmp_path / "out"))
    assert fetched.exit_code == 3, fetched.stderr
    lines = fetched.stderr.splitlines()
    error = next(line for line in lines if line.startswith("error: "))
    # one line: what is wrong, and the command that fixes it (fetch puts the hint in brackets)
    assert error == (f"error: gallery: {stored} is open to others (mode {too_open:04o}); pixsrc will not use "
                     f"the credentials in it (run: chmod 600 {stored})")
    # nothing from the file was used: the gallery never saw the key, and the key is in no output
    assert not any(r.headers.get("authorization") == f"Bearer {SECRET}" for r in gallery.requests)
    assert SECRET not in fetched.stderr + fetched.stdout
    assert not (tmp_path / "out" / "a.png").exists()

    status = run("auth", "status", "gallery")
    assert status.stdout == f"gallery: api-key: error ({stored} is open to others (mode {too_open:04o}); " \
                            "pixsrc will not use the credentials in it)\n"
    assert SECRET not in status.stdout + status.stderr

    stored.chmod(0o600)  # the fix the hint names works
    fixed = run("fetch", "gallery", "--dest", str(tmp_path / "out"))
    assert fixed.exit_code == 0, fixed.stderr


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe\x00garbage"])
def test_a_damaged_credentials_file_is_a_clear_auth_error(stored: Path, tmp_path: Path, damage: bytes) -> None:
    stored.write_bytes(damage)
    stored.chmod(0o600)
    fetched = run("fetch", "gallery", "--dest", str(tmp_path / "out"))
    assert fetched.exit_code == 3, fetched.stderr
    assert f"{stored} is damaged" in fetched.stderr and "internal error" not in fetched.stderr
    assert stored.read_bytes() == damage  # never rewritten, never guessed at
