"""`pixsrc watch`: the real command as a subprocess (signals matter) against the fake Dropbox (its
long poll) and the fake Google Drive (its Changes API), and the controllers' wait_for_change on
their own. Every wait is a poll of the file system, the fake's log or the state database with a
deadline; the sleeps in the slow server are a rate limit, not synchronisation."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.dropbox import DropboxFake
from fakes.google_drive import DriveFake
from support.cli import pixsrc_exe, run
from support.controllers import FakeBearer, FastContext
from support.slow_gallery import SlowGallery

from pixsrc import oauth, tokens
from pixsrc.sources import dropbox, google_drive
from pixsrc.types import MemoryCache, can_wait_for_change

JPEG = b"\xff\xd8\xff\xe0 jpeg "
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive.readonly"


def poll(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> float:
    """Check ``condition`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def tree(folder: Path) -> dict[str, bytes]:
    """The files under their final names (a ``.part`` file may come and go while a fetch runs)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(".part"):
            with contextlib.suppress(FileNotFoundError):
                files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def runs_of(state_path: Path, source_id: str) -> list[tuple[float, float, str]]:
    db = state_path / "state.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return list(con.execute("SELECT started_at, ended_at, status FROM runs WHERE source = ? ORDER BY started_at",
                                (source_id,)))
    except sqlite3.OperationalError:  # the watch has not created the schema yet
        return []
    finally:
        con.close()


class Watching:
    """`pixsrc watch ARGS` as a subprocess; its output lines are collected as they come, so a test can
    wait for a line (``said``) before it signals."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*pixsrc_exe(), "watch", *args], stdin=subprocess.DEVNULL, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def lines(self, source_id: str) -> list[dict[str, Any]]:
        """The JSON lines (--json) printed so far about one source."""
        return [entry for line in list(self.out) if (entry := json.loads(line))["source"] == source_id]

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, list[dict[str, Any]], str]:
        assert self.proc.poll() is None, "".join(self.err)
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=30)
        for reader in self.readers:
            reader.join(10)
        return code, [json.loads(line) for line in self.out], "".join(self.err)


@contextlib.contextmanager
def watching(*args: str) -> Iterator[Watching]:
    watch = Watching(*args)
    try:
        yield watch
    except BaseException:
        print(f"pixsrc watch said:\n{''.join(watch.out)}\n{''.join(watch.err)}")  # shown with the failure
        raise
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()


# -- Dropbox: the long poll ---------------------------------------------------------------------------


@pytest.fixture
def dbx() -> Iterator[DropboxFake]:
    with DropboxFake() as fake:
        fake.longpoll_cap = 5.0  # the fake's long polls end within seconds, not minutes
        yield fake


def dropbox_providers(dbx: DropboxFake) -> dict[str, Any]:
    return {"client_id": dbx.oauth.client_id, "authorize_url": dbx.authorize_url, "token_url": dbx.token_url,
            "revoke_url": dbx.revoke_url, "api_base_url": dbx.api_url, "content_base_url": dbx.content_url,
            "notify_base_url": dbx.notify_url, "redirect_port": 53682, "requests_per_second": 1000}


def dropbox_source(dbx: DropboxFake, config_file: Path, monkeypatch: pytest.MonkeyPatch, dest: Path) -> None:
    lines = ["version = 1", "[providers.dropbox]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in dropbox_providers(dbx).items()]
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("\n".join(lines) + "\n")
    # a fresh access token in the keyring: the fake refreshes only PKCE grants without a secret
    token = dbx.oauth.issue_tokens(["files.metadata.read", "files.content.read"])
    tokens.put("dbx", oauth.TokenSet("dropbox", token["access_token"], token["refresh_token"], time.time() + 3600,
                                     token.get("scope")).to_json())
    added = run("add", "dropbox", "--id", "dbx", "--set", "path=/Photos", "--interval", "6h", "--dest", str(dest),
                "--no-input")
    assert added.exit_code == 0, added.stderr


def test_watch_fetches_a_dropbox_change_within_seconds_while_a_broken_source_backs_off(
        dbx: DropboxFake, config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        state_path: Path) -> None:
    dest = tmp_path / "dbx"
    dbx.add_file("/Photos/a.jpg", JPEG + b"a")
    dropbox_source(dbx, config_file, monkeypatch, dest)
    (tmp_path / "gone").mkdir()
    added = run("add", "local-fs", "--id", "broken", "--set", f"path={tmp_path / 'gone'}", "--interval", "1h",
                "--dest", str(tmp_path / "broken"), "--no-input")
    assert added.exit_code == 0, added.stderr
    (tmp_path / "gone").rmdir()  # every fetch of it fails (exit 4)

    longpolls = lambda: dbx.notify.requests_to("/2/files/list_folder/longpoll")  # noqa: E731
    with watching("--json", "--backoff", "0.5s") as proc:
        poll(lambda: tree(dest) == {"a.jpg": JPEG + b"a"}, what="the first fetch")
        poll(lambda: longpolls(), what="a long poll after the first fetch")  # noqa: PLW0108

        dbx.add_file("/Photos/new.jpg", JPEG + b"new")
        latency = poll(lambda: (dest / "new.jpg").exists(), timeout=5, what="the change to be fetched")
        poll(lambda: "".join(proc.err).count("error: broken:") >= 3, what="the broken source to be retried")
        poll(lambda: len(proc.lines("dbx")) == 2, what="the fetch to end")
        code, lines, err = proc.stop()

    assert code == 0, err  # SIGTERM: a requested stop
    assert "stopped" in err and "Traceback" not in err
    assert latency < 3, f"the change took {latency:.1f} s to arrive"
    assert tree(dest) == {"a.jpg": JPEG + b"a", "new.jpg": JPEG + b"new"}  # whole files under final names only
    assert all("authorization" not in r.headers for r in longpolls())  # the notify host takes no credential
    mine = [line for line in lines if line["source"] == "dbx"]
    assert [(line["trigger"], line["status"], line["downloaded"]) for line in mine[:2]] == [
        ("due", "ok", 1), ("change", "ok", 1)]
    assert all(line["schema"] == 1 and line["next_due"] for line in lines)

    failed = runs_of(state_path, "broken")
    assert {status for _, _, status in failed} == {"unavailable"}
    gaps = [later[0] - earlier[1] for earlier, later in zip(failed, failed[1:], strict=False)]
    assert len(gaps) >= 2
    for n, gap in enumerate(gaps):  # 0.5 s, 1 s, 2 s: doubling, never hammering
        assert 0.5 * 2**n - 0.05 <= gap < 0.5 * 2**n + 1.5, gaps
    # one line per failure, each naming the next try; the other source was not held up
    assert err.count("error: broken: folder") == len([line for line in lines if line["source"] == "broken"])
    assert "next try at" in err


def test_dropbox_wait_for_change_long_polls_the_saved_cursor_and_honours_backoff(dbx: DropboxFake) -> None:
    dbx.add_file("/Photos/a.jpg", JPEG)
    cache = MemoryCache()
    settings = oauth.settings_for(dropbox.PROVIDER, {"dropbox": dropbox_providers(dbx)})

    def controller(path: str = "/Photos") -> dropbox.DropboxController:
        model = dropbox.SOURCE_TYPE.validate({"path": path}, "sources.dbx.config")
        context = FastContext("dbx", "dbx", model, auth=FakeBearer(dbx.issue_token), provider=settings,
                              cache=cache)
        made = dropbox.SOURCE_TYPE.factory(context)
        assert isinstance(made, dropbox.DropboxController) and can_wait_for_change(made)
        return made

    waiter, cancel = controller(), threading.Event()
    assert waiter.wait_for_change(cancel, 30) is True  # never listed: nothing to wait on, fetch first
    assert dbx.longpolls == []
    lister = controller()
    list(lister.list_assets())
    lister.close()

    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(waiter.wait_for_change(cancel, 30)))
    thread.start()
    poll(lambda: dbx.notify.requests, what="the long poll")
    dbx.add_file("/Elsewhere/x.jpg", b"outside the folder")  # not under the cursor's folder
    dbx.add_file("/Photos/b.jpg", JPEG + b"b")
    thread.join(5)
    assert result == [True]
    assert dbx.longpolls[-1][2] is True
    (request,) = dbx.notify.requests
    assert json.loads(request.body) == {"cursor": json.loads(cache.get("dropbox-cursor") or "")["cursor"],
                                        "timeout": 30}
    assert "authorization" not in request.headers

    # the listing's cursor is still the one saved: the waiter never moves it, so it keeps reporting
    assert waiter.wait_for_change(cancel, 30) is True

    # backoff: the next long poll waits it out; a timeout shorter than the backoff returns False
    list(controller().list_assets())  # a new cursor, after b.jpg
    dbx.longpoll_cap, dbx.longpoll_backoff = 0.2, 1
    assert waiter.wait_for_change(cancel, 30) is False
    answered = dbx.longpolls[-1][1]
    assert waiter.wait_for_change(cancel, 0.3) is False  # still backing off: no request
    assert dbx.longpolls[-1][1] == answered
    assert waiter.wait_for_change(cancel, 30) is False
    assert dbx.longpolls[-1][0] - answered >= 1.0  # the backoff was waited out

    dbx.expire_cursors()  # ListFolderLongpollError.reset: a fetch must list again
    dbx.longpoll_backoff = None
    assert waiter.wait_for_change(cancel, 30) is True
    other = controller("/Other")  # a cursor of another folder is not this source's
    assert other.wait_for_change(cancel, 30) is True
    waiter.close()
    other.close()


# -- Google Drive: the Changes API ----------------------------------------------------------------------


@pytest.fixture
def drive() -> Iterator[DriveFake]:
    with DriveFake() as fake:
        yield fake


def drive_context(drive: DriveFake, cache: MemoryCache, **config: Any) -> google_drive.GoogleDriveController:
    settings = oauth.settings_for(google_drive.PROVIDER, {"google": {
        "client_id": drive.oauth.client_id, "api_base_url": drive.base_url, "requests_per_second": 10_000}})
    model = google_drive.SOURCE_TYPE.validate(config, "sources.gd.config")
    context = FastContext("gd", "gd", model, auth=FakeBearer(drive.issue_token), provider=settings, cache=cache,
                          poll_every=0.05)
    made = google_drive.SOURCE_TYPE.factory(context)
    assert isinstance(made, google_drive.GoogleDriveController)
    return made


def test_drive_wait_for_change_polls_from_the_saved_token_without_moving_it(drive: DriveFake) -> None:
    photos = drive.add_folder("Photos")
    drive.add_file("a.jpg", JPEG, parent=photos)
    cache, cancel = MemoryCache(), threading.Event()
    waiter = drive_context(drive, cache, folder_id=photos)
    assert waiter.wait_for_change(cancel, 1) is True  # no snapshot yet: a fetch first
    lister = drive_context(drive, cache, folder_id=photos)
    list(lister.list_assets())
    lister.close()
    saved = cache.get(google_drive.SNAPSHOT_KEY)

    changes = lambda: drive.server.requests_to("/drive/v3/changes", "GET")  # noqa: E731
    before = len(changes())
    started = time.monotonic()
    assert waiter.wait_for_change(cancel, 0.3) is False  # nothing changed
    took = time.monotonic() - started
    polls = len(changes()) - before
    assert 0.3 <= took < 1.0
    assert 2 <= polls <= 0.3 / 0.05 + 2  # every poll_every, not in a tight loop

    drive.add_file("elsewhere.jpg", JPEG, parent="root")  # outside the tree: no fetch for that
    assert waiter.wait_for_change(cancel, 0.2) is False
    drive.add_file("b.jpg", JPEG + b"b", parent=photos)
    assert waiter.wait_for_change(cancel, 1) is True
    assert waiter.wait_for_change(cancel, 1) is True  # still unlisted: still reported
    assert cache.get(google_drive.SNAPSHOT_KEY) == saved  # the listing's token did not move
    assert drive.violations == []
    cancel.set()
    assert waiter.wait_for_change(cancel, 5) is True  # a change is known at once, even when cancelled
    waiter.close()


def test_watch_fetches_a_drive_change_on_the_next_poll(drive: DriveFake, config_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    photos = drive.add_folder("Photos")
    drive.add_file("a.jpg", JPEG + b"a", parent=photos)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    table = {"client_id": drive.oauth.client_id, "authorize_url": drive.authorize_url, "token_url": drive.token_url,
             "revoke_url": drive.revoke_url, "api_base_url": drive.base_url, "requests_per_second": 1000}
    config_file.write_text("\n".join(["version = 1", "[providers.google]",
                                      *(f"{k} = {json.dumps(v)}" for k, v in table.items())]) + "\n")
    monkeypatch.setenv("PIXSRC_GOOGLE_CLIENT_SECRET", drive.oauth.client_secret)
    token = drive.oauth.issue_tokens([DRIVE_SCOPE])
    monkeypatch.setenv("PIXSRC_AUTH_GD", oauth.TokenSet("google", None, token["refresh_token"], None, None).to_bundle())
    dest = tmp_path / "gd"
    added = run("add", "google-drive", "--id", "gd", "--set", f"folder_id={photos}", "--set", "interval=1h",
                "--dest", str(dest), "--no-input")
    assert added.exit_code == 0, added.stderr

    changes = lambda: drive.server.requests_to("/drive/v3/changes", "GET")  # noqa: E731
    with watching("--poll", "0.2s", "--json") as proc:
        started = time.monotonic()
        poll(lambda: tree(dest) == {"a.jpg": JPEG + b"a"}, what="the first fetch")
        poll(lambda: changes(), what="the first poll")  # noqa: PLW0108
        drive.add_file("b.jpg", JPEG + b"b", parent=photos)
        latency = poll(lambda: (dest / "b.jpg").exists(), timeout=5, what="the change to be fetched")
        elapsed = time.monotonic() - started
        poll(lambda: len(proc.lines("gd")) == 2, what="the fetch to end")
        code, lines, err = proc.stop()
    assert code == 0, err
    assert latency < 3
    assert tree(dest) == {"a.jpg": JPEG + b"a", "b.jpg": JPEG + b"b"}
    assert [(line["trigger"], line["downloaded"]) for line in lines[:2]] == [("due", 1), ("change", 1)]
    assert len(changes()) <= elapsed / 0.2 + 6  # the fetches' own reads plus one poll per period
    assert drive.violations == []


# -- stopping --------------------------------------------------------------------------------------------


def test_sigterm_mid_fetch_stops_between_assets_and_exits_0(config_file: Path, tmp_path: Path,
                                                            state_path: Path) -> None:
    files = {"a-first.png": b"\x89PNG first" * 100}
    files |= {f"slow-{n}.png": hashlib.sha256(bytes([n])).digest() * 32768 for n in range(4)}  # 1 MiB each
    gallery = SlowGallery(files)
    dest = tmp_path / "out"
    added = run("add", "remote-gallery", "--id", "slow", "--set", f"url={gallery.url}", "--set", "index=json",
                "--interval", "1h", "--dest", str(dest), "--no-input")
    assert added.exit_code == 0, added.stderr
    try:
        with watching("-q", "--jobs", "2") as proc:
            poll(lambda: (dest / "a-first.png").exists(), what="the first file to land")
            code, _, err = proc.stop(signal.SIGTERM)
    finally:
        gallery.close()
    assert code == 0, err
    finals = {p.name for p in dest.iterdir() if not p.name.endswith(".part")}
    assert "a-first.png" in finals and len(finals) < len(files)  # it stopped early ...
    assert all((dest / name).read_bytes() == files[name] for name in finals)  # ... with whole files only
    assert [status for _, _, status in runs_of(state_path, "slow")] == ["interrupted"]


def test_ctrl_c_exits_130_and_sources_without_an_interval_are_skipped(config_file: Path, tmp_path: Path,
                                                                      state_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(JPEG)
    for name, extra in (("timed", ["--interval", "1h"]), ("untimed", [])):
        added = run("add", "local-fs", "--id", name, "--set", f"path={tmp_path / 'in'}", "--dest",
                    str(tmp_path / name), "--no-input", *extra)
        assert added.exit_code == 0, added.stderr
    with watching() as proc:
        poll(lambda: proc.said("(due) timed: ok"), what="the first fetch")
        code, _, err = proc.stop(signal.SIGINT)
    assert code == 130, err
    assert "warning: untimed: not watched: it has no interval (set one: pixsrc edit untimed --interval 6h" in err
    assert "(due) timed: ok: 1 listed, 1 new" in err
    assert not (tmp_path / "untimed").exists()

    alone = run("watch", "untimed")
    assert alone.exit_code == 2
    assert "nothing to watch: none of the sources has an interval" in alone.stderr
    bad = run("watch", "--poll", "often")
    assert bad.exit_code == 2 and "--poll 'often': not a duration" in bad.stderr
