"""The state database (SQLite, in the state dir): what was fetched, and every run.

``assets`` is the manifest that makes fetches incremental: per source and asset id, the remote
version, the local relative path, and the size / mtime / sha256 of the file pixsrc wrote, so a
file the user changed afterwards can be told apart from ours. ``runs`` feeds a later ``stats``.
WAL mode lets several pixsrc processes (each fetching a different source) share the file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixsrc.locks import make_private_dirs, tighten

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    source TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    version TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (source, asset_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    source TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    listed INTEGER, downloaded INTEGER, updated INTEGER, unchanged INTEGER,
    skipped INTEGER, failed INTEGER, bytes INTEGER
);
CREATE TABLE IF NOT EXISTS source_meta (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Entry:
    asset_id: str
    version: str
    path: str
    size: int
    mtime_ns: int
    sha256: str
    fetched_at: float


def _open_private(path: Path) -> None:
    """The state folder 0700 and the database 0600 before SQLite opens it.

    The manifest names every file of every source and the cache holds provider cursors: nobody
    else's business. SQLite creates a new database 0644 (less the umask) and gives its -wal and
    -shm files the database's mode, so the file is created 0600 first (an empty file is a new
    database to SQLite). The state folder is pixsrc's own, so one an older pixsrc (or a copy) left
    open to others is tightened here, with its ``locks`` folder and the database's files.
    """
    folder = path.parent
    make_private_dirs(folder)
    tighten(folder)
    tighten(folder / "locks")
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        tighten(path.with_name(path.name + suffix))


class State:
    def __init__(self, path: Path) -> None:
        _open_private(path)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def manifest(self, source: str) -> dict[str, Entry]:
        rows = self.db.execute(
            "SELECT asset_id, version, path, size, mtime_ns, sha256, fetched_at FROM assets WHERE source = ?",
            (source,),
        )
        manifest = {}
        for asset_id, version, path, *rest in rows:
            # one string object where the path is the id (most types): 50,000 rows, a few MB less
            manifest[asset_id] = Entry(asset_id, version, asset_id if path == asset_id else path, *rest)
        return manifest

    def record(self, source: str, entries: list[Entry]) -> None:
        if not entries:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO assets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(source, e.asset_id, e.version, e.path, e.size, e.mtime_ns, e.sha256, e.fetched_at)
                 for e in entries],
            )

    def forget(self, source: str, asset_ids: list[str]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM assets WHERE source = ? AND asset_id = ?",
                                [(source, a) for a in asset_ids])

    def drop_source(self, source: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM assets WHERE source = ?", (source,))
            self.db.execute("DELETE FROM source_meta WHERE source = ?", (source,))

    def get_meta(self, source: str, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM source_meta WHERE source = ? AND key = ?", (source, key)).fetchone()
        return row[0] if row else None

    def set_meta(self, source: str, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO source_meta VALUES (?, ?, ?)", (source, key, value))

    def cache(self, source: str) -> SourceCacheView:
        return SourceCacheView(self, source)

    def add_run(self, source: str, started_at: float, status: str, exit_code: int, counts: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source, started_at, time.time(), status, exit_code, counts.get("listed"), counts.get("downloaded"),
             counts.get("updated"), counts.get("unchanged"), counts.get("skipped"), counts.get("failed"),
             counts.get("bytes")),
        )

    def runs(self, source: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM runs" + (" WHERE source = ?" if source else "") + " ORDER BY started_at"
        cursor = self.db.execute(query, (source,) if source else ())
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]


class SourceCacheView:
    """A source's key-value cache: reads from the database, writes held until ``commit``."""

    def __init__(self, state: State, source: str) -> None:
        self.state, self.source = state, source
        self.pending: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        if key in self.pending:
            return self.pending[key]
        return self.state.get_meta(self.source, f"cache:{key}")

    def put(self, key: str, value: str) -> None:
        self.pending[key] = value

    def commit(self) -> None:
        with self.state.db:
            self.state.db.execute("BEGIN")
            for key, value in self.pending.items():
                self.state.set_meta(self.source, f"cache:{key}", value)
        self.pending.clear()
