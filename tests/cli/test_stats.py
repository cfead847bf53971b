"""``pixsrc stats`` over a history made by real fetches: a local folder, a gallery on 127.0.0.1 with
a broken file, a folder that is not there; a database from the 0.1.0 schema; the chart on a real pty."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from support.cli import pixsrc_exe, run
from support.gallery_server import GalleryServer

from pixsrc.state import SCHEMA_VERSION, State

# pixsrc 0.1.0's schema, as its state.py created it (no user_version, runs written by position)
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    source TEXT NOT NULL, asset_id TEXT NOT NULL, version TEXT NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, fetched_at REAL NOT NULL,
    PRIMARY KEY (source, asset_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    source TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL NOT NULL, status TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    listed INTEGER, downloaded INTEGER, updated INTEGER, unchanged INTEGER,
    skipped INTEGER, failed INTEGER, bytes INTEGER
);
CREATE TABLE IF NOT EXISTS source_meta (
    source TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (source, key)
) WITHOUT ROWID;
"""
OLD_INSERT = "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # 0.1.0's add_run


def ok(*args: str) -> Any:
    result = run(*args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def stats_json(*args: str) -> dict[str, Any]:
    data = json.loads(ok("stats", "--json", *args).stdout)
    assert data["schema"] == 1
    return data


def by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in data["sources"]}


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name, size in (("a.png", 100), ("b.png", 250), ("c.jpg", 1000)):
        (folder / name).write_bytes(b"x" * size)
    return folder


@pytest.fixture
def history(pictures: Path, config_file: Path, tmp_path: Path) -> Path:
    """inbox: 3 ok runs (3 new, then nothing, then 1 new and 1 updated); broken: 2 unavailable runs."""
    ok("add", "local-fs", "--name", "Inbox", "--set", f"path={pictures}")
    ok("add", "local-fs", "--name", "Broken", "--set", f"path={tmp_path / 'not-there'}")
    dest = tmp_path / "out"
    ok("fetch", "inbox", "--dest", str(dest))
    ok("fetch", "inbox", "--dest", str(dest))
    (pictures / "d.png").write_bytes(b"y" * 40)
    (pictures / "a.png").write_bytes(b"z" * 120)
    ok("fetch", "inbox", "--dest", str(dest))
    for _ in range(2):
        assert run("fetch", "broken", "--dest", str(tmp_path / "out2")).exit_code == 4
    return dest


def test_json_counts_the_runs_fetch_recorded(history: Path) -> None:
    data = stats_json()
    assert data["since"] is None
    assert [s["id"] for s in data["sources"]] == ["inbox", "broken"]  # config order
    inbox, broken = data["sources"]
    assert inbox["configured"] is True and inbox["enabled"] is True and inbox["type"] == "local-fs"
    assert (inbox["runs"], inbox["successes"], inbox["failures"], inbox["by_status"]) == (3, 3, 0, {"ok": 3})
    assert inbox["assets"] == {"downloaded": 4, "updated": 1, "failed": 0, "deleted": 0, "pruned": 0}
    assert inbox["bytes"] == 100 + 250 + 1000 + 40 + 120
    assert inbox["last_error"] is None
    assert inbox["last_success"]["at"] == inbox["last_run"]["at"] and inbox["last_run"]["status"] == "ok"
    assert inbox["mean_seconds"] > 0 and inbox["last_run"]["seconds"] > 0
    assert (broken["runs"], broken["successes"], broken["failures"]) == (2, 0, 2)
    assert broken["by_status"] == {"unavailable": 2}
    assert broken["last_success"] is None
    assert broken["last_error"]["status"] == "unavailable"
    assert broken["last_error"]["message"].startswith("folder ") and "does not exist" in broken["last_error"]["message"]
    assert not broken["last_error"]["message"].startswith("broken:")  # the source is named once, by its row
    assert sum(d["runs"] for d in data["days"]) == 5
    assert sum(d["bytes"] for d in data["days"]) == inbox["bytes"]

    one = stats_json("Inbox")  # by name, like every command
    assert [s["id"] for s in one["sources"]] == ["inbox"]
    assert one["sources"] == [inbox]
    assert sum(d["runs"] for d in one["days"]) == 3  # the chart is of the sources shown


def test_text_table_and_last_error(history: Path) -> None:
    result = ok("stats")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "RUNS", "OK", "FAILED", "FETCHED", "BYTES", "MEAN", "LAST", "RUN", "LAST",
                                "SUCCESS"]
    inbox = lines[1].split()
    assert inbox[:7] == ["inbox", "3", "3", "-", "5", "1.5", "KB"]
    broken = lines[2].split()
    assert broken[:7] == ["broken", "2", "0", "2", "unavailable", "0", "0"]
    assert lines[2].rstrip().endswith("never")  # no success ever
    [error] = [line for line in lines if "last error" in line]
    assert error.startswith("broken: last error ") and "(unavailable): folder " in error
    assert "Bytes fetched per day" not in result.stdout  # not a terminal: no chart
    assert "\x1b[" not in result.stdout


def test_since_window_keeps_the_latest_of_all_time(history: Path, state_path: Path) -> None:
    state = State(state_path / "state.db")
    ten_days_ago = time.time() - 10 * 86400
    state.add_run("inbox", ten_days_ago, "partial", 5, {"downloaded": 7, "failed": 1, "bytes": 9000,
                                                        "errors": [{"path": "x.png", "error": "HTTP 500"}]})
    state.add_run("broken", ten_days_ago - 60, "ok", 0, {"downloaded": 1, "bytes": 5})
    state.close()

    everything = by_id(stats_json())
    assert everything["inbox"]["runs"] == 4 and everything["inbox"]["by_status"] == {"ok": 3, "partial": 1}
    assert everything["inbox"]["last_error"]["message"] == "x.png: HTTP 500"
    assert everything["broken"]["last_success"] is not None

    week = stats_json("--since", "7d")
    assert week["since"] is not None and len(week["days"]) == 8  # seven days back, today included
    recent = by_id(week)
    assert recent["inbox"]["runs"] == 3 and recent["inbox"]["bytes"] == 1510  # the old run is outside
    assert recent["inbox"]["last_error"]["message"] == "x.png: HTTP 500"  # ... but still its last error
    assert recent["broken"]["runs"] == 2 and recent["broken"]["successes"] == 0
    assert recent["broken"]["last_success"]["at"] < recent["broken"]["last_run"]["at"]  # 10 days ago, still shown
    assert sum(d["runs"] for d in stats_json("--since", "2w")["days"]) == 7
    decades = stats_json("--since", "5000w")["days"]  # longer than a year: from the first recorded day
    assert len(decades) in (11, 12) and sum(d["runs"] for d in decades) == 7  # 12: the runs straddle midnight


@pytest.mark.parametrize("bad", ["7", "7x", "0d", "-1d", "1 week", ""])
def test_bad_since_is_a_usage_error(config_file: Path, bad: str) -> None:
    result = run("stats", "--since", bad)
    assert result.exit_code == 2
    assert f"error: --since {bad!r}:" in result.stderr and "30m, 6h, 7d, 2w" in result.stderr
    assert result.stdout == ""


def test_unknown_source_is_exit_2(history: Path) -> None:
    result = run("stats", "inbx")
    assert result.exit_code == 2
    assert "no source named 'inbx'" in result.stderr and "did you mean 'inbox'" in result.stderr


def test_removed_source_keeps_its_history(history: Path, state_path: Path) -> None:
    ok("remove", "inbox", "--yes")
    state = State(state_path / "state.db")
    state.add_run("long-gone", time.time() - 30 * 86400, "ok", 0, {"downloaded": 1, "bytes": 10})
    state.close()
    data = by_id(stats_json())
    assert data["inbox"]["configured"] is False and data["inbox"]["name"] is None
    assert data["inbox"]["runs"] == 3
    assert list(data) == ["broken", "inbox", "long-gone"]  # configured first, then removed ones
    assert "inbox (removed)" in ok("stats").stdout
    assert [s["id"] for s in stats_json("inbox")["sources"]] == ["inbox"]  # asked by id: still found
    assert list(by_id(stats_json("--since", "1w"))) == ["broken", "inbox"]  # nothing in the window: not listed
    assert by_id(stats_json("long-gone", "--since", "1w"))["long-gone"]["runs"] == 0  # unless asked for
    assert run("stats", "Inbox").exit_code == 2  # its name is gone with its config


def test_partial_gallery_run_records_a_failed_asset(tmp_path: Path, config_file: Path) -> None:
    with GalleryServer(tmp_path / "gallery") as gallery:
        gallery.write("good.png", b"g" * 300)
        gallery.write("old.png", b"o" * 7)
        ok("add", "remote-gallery", "--name", "Gallery", "--set", f"url={gallery.url}", "--no-input")
        ok("fetch", "gallery", "--dest", str(tmp_path / "out"))
        (tmp_path / "gallery" / "old.png").unlink()  # a note ("deleted at the source"), not the failure
        for name in ("bad1.png", "bad2.png"):
            gallery.write(name, b"b" * 10)
            gallery.set_status(name, 404)
        assert run("fetch", "gallery", "--dest", str(tmp_path / "out")).exit_code == 5
    [source] = stats_json("gallery")["sources"]
    assert source["by_status"] == {"ok": 1, "partial": 1} and source["failures"] == 1
    assert source["assets"] == {"downloaded": 2, "updated": 0, "failed": 2, "deleted": 1, "pruned": 0}
    assert source["bytes"] == 307
    error = source["last_error"]
    assert error["status"] == "partial"
    assert re.fullmatch(r"bad[12]\.png: .*404.* \(and 1 more failed\)", error["message"]), error["message"]


def test_error_messages_are_stored_redacted(state_path: Path, config_file: Path) -> None:
    state = State(state_path / "state.db")
    state.add_run("x", time.time(), "auth", 3, {"message": "x: refresh failed: access_token=ya29.abcdefghijklmnop"})
    state.close()
    raw = sqlite3.connect(state_path / "state.db").execute("SELECT error FROM run_details").fetchone()[0]
    assert raw == "refresh failed: access_token=[redacted]"
    assert by_id(stats_json("x"))["x"]["last_error"]["message"] == raw


def test_no_history_no_sources(config_file: Path, state_path: Path) -> None:
    result = ok("stats")
    assert result.stdout == "" and "no sources and no run history" in result.stderr
    assert stats_json() == {"schema": 1, "since": None, "until": stats_json()["until"], "sources": [], "days": []}
    assert not state_path.exists()  # a read-only look creates no state folder


def test_database_from_the_old_schema_is_migrated(pictures: Path, config_file: Path, state_path: Path,
                                                  tmp_path: Path) -> None:
    state_path.mkdir(mode=0o700)
    old = sqlite3.connect(state_path / "state.db")
    old.executescript(OLD_SCHEMA)
    started = time.time() - 3600
    old.execute(OLD_INSERT, ("inbox", started, started + 2.5, "unavailable", 4, None, None, None, None, None,
                             None, None))
    old.execute(OLD_INSERT, ("inbox", started + 60, started + 62, "ok", 0, 3, 3, 0, 0, 0, 0, 1350))
    old.commit()
    assert old.execute("PRAGMA user_version").fetchone()[0] == 0
    old.close()
    ok("add", "local-fs", "--name", "Inbox", "--set", f"path={pictures}")

    [before] = stats_json()["sources"]
    assert (before["runs"], before["successes"], before["bytes"]) == (2, 1, 1350)
    assert before["by_status"] == {"ok": 1, "unavailable": 1}
    assert before["assets"]["deleted"] == 0  # not recorded then: counted as none
    assert before["last_error"]["message"] is None and before["last_error"]["seconds"] == 2.5
    assert before["mean_seconds"] == 2.25

    ok("fetch", "inbox", "--dest", str(tmp_path / "out"))  # the new pixsrc records into the migrated database
    [after] = stats_json()["sources"]
    assert after["runs"] == 3 and after["successes"] == 2 and after["assets"]["downloaded"] == 6

    db = sqlite3.connect(state_path / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # pixsrc 0.1.0, run again on this database (a downgrade), still records its runs
    db.execute(OLD_INSERT, ("inbox", time.time(), time.time(), "ok", 0, 3, 0, 0, 3, 0, 0, 0))
    db.commit()
    db.close()
    assert stats_json()["sources"][0]["runs"] == 4


def test_migration_is_idempotent(state_path: Path) -> None:
    for _ in range(2):
        state = State(state_path / "state.db")
        state.add_run("s", time.time(), "ok", 0, {"deleted": 2, "pruned": 1})
        state.close()
    db = sqlite3.connect(state_path / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT COUNT(*), SUM(deleted), SUM(pruned) FROM run_details").fetchone() == (2, 4, 2)
    db.execute("PRAGMA user_version = 99")  # as a newer pixsrc may leave it: used as it is, not "migrated" back
    db.close()
    state = State(state_path / "state.db")
    assert len(state.runs("s")) == 2
    state.close()
    assert sqlite3.connect(state_path / "state.db").execute("PRAGMA user_version").fetchone()[0] == 99


def test_chart_on_a_terminal(history: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    exe, *pre = pixsrc_exe()
    child = pexpect.spawn(exe, [*pre, "stats", "--since", "2d"], encoding="utf-8", timeout=30,
                          dimensions=(40, 100), env={**os.environ, "NO_COLOR": "1", "TERM": "xterm"})
    child.expect(pexpect.EOF)
    output = child.before.replace("\r\n", "\n")
    child.close()
    assert child.exitstatus == 0, output
    assert "SOURCE" in output and "broken: last error" in output  # the table, as without a terminal
    title, *rows = output[output.index("Bytes fetched per day"):].rstrip("\n").split("\n")
    assert "(1.5 KB in all; local dates)" in title
    assert len(rows) == 3  # two days back, today included
    bars = {row.split()[0]: row.count("█") for row in rows}
    full = [day for day, width in bars.items() if width]
    assert len(full) >= 1 and max(bars.values()) == 50  # the busiest day's bar is the whole column
    assert rows[-1].rstrip().endswith(("KB", " B"))


def test_deleted_and_pruned_files_are_counted(pictures: Path, config_file: Path, tmp_path: Path) -> None:
    ok("add", "local-fs", "--name", "Inbox", "--set", f"path={pictures}")
    dest = str(tmp_path / "out")
    ok("fetch", "inbox", "--dest", dest)
    (pictures / "a.png").unlink()
    ok("fetch", "inbox", "--dest", dest)  # gone at the source, kept here
    (pictures / "b.png").unlink()
    ok("fetch", "inbox", "--dest", dest, "--prune", "--max-delete", "5")
    [source] = stats_json()["sources"]
    assert source["runs"] == 3
    assert (source["assets"]["deleted"], source["assets"]["pruned"]) == (1, 2)


def test_help_has_an_example() -> None:
    result = ok("stats", "--help")
    assert "Usage: pixsrc stats" in result.stdout and "Example" in result.stdout and "--since" in result.stdout
