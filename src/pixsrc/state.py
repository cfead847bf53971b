"""The state database (SQLite, in the state dir): what was fetched, and every run.

``assets`` is the manifest that makes fetches incremental: per source and asset id, the remote
version, the local relative path, and the size / mtime of the file pixsrc wrote, so a file the
user changed afterwards can be told apart from ours, and its sha256 once known ("" until then: a
download is hashed only by the source's own checksum, or when it had to be compared with a file).
``runs`` (with ``run_details``) is the history ``pixsrc stats`` reads.
WAL mode lets several pixsrc processes (each fetching a different source) share the file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pixsrc.errors import UsageError
from pixsrc.locks import make_private_dirs, tighten
from pixsrc.redact import redact

_FIRST_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS assets (
        source TEXT NOT NULL,
        asset_id TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (source, asset_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS runs (
        source TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER NOT NULL,
        listed INTEGER, downloaded INTEGER, updated INTEGER, unchanged INTEGER,
        skipped INTEGER, failed INTEGER, bytes INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS source_meta (
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (source, key)
    ) WITHOUT ROWID""",
)

# MIGRATIONS[i] takes a database from ``PRAGMA user_version`` i to i + 1. A new database takes
# every step too, so the current schema is built one way only. Steps only add tables and indexes:
# pixsrc 0.1.0 inserts into ``runs`` by position, so a column added there would break every fetch
# of someone who goes back to it; what later versions record about a run goes into ``run_details``.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the first schema (databases from before user_version have it: IF NOT EXISTS)
    _FIRST_SCHEMA,
    # 2: for `pixsrc stats`: why a run did not end ok, what it deleted and pruned; indexes for its queries
    ("""CREATE TABLE IF NOT EXISTS run_details (
        source TEXT NOT NULL,
        started_at REAL NOT NULL,
        error TEXT,
        deleted INTEGER, pruned INTEGER,
        PRIMARY KEY (source, started_at)
    ) WITHOUT ROWID""",
     "CREATE INDEX IF NOT EXISTS runs_by_source ON runs (source, started_at)",
     "CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at)"),
)
SCHEMA_VERSION = len(MIGRATIONS)
ERROR_CHARS = 1000  # a run's error is one line; an HTTP body quoted in it need not be kept whole
_RUNS = "runs LEFT JOIN run_details USING (source, started_at)"


def migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to SCHEMA_VERSION; a database a newer pixsrc wrote is left as it is."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    with db:
        db.execute("BEGIN IMMEDIATE")  # two pixsrc processes may open an old database at once: one migrates
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for step in MIGRATIONS[version:]:
            for statement in step:
                db.execute(statement)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


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


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """WAL mode, once per database file (it stays set in the file).

    Switching needs the database to itself, and SQLite answers "database is locked" at once instead of
    waiting (the busy timeout does not apply): two processes, or watch's threads, opening a new state
    database together would fail. The switch is retried for a while (tenacity) when that happens.
    """
    if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return  # the common case: asking needs no lock
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

    def locked(exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    for attempt in Retrying(retry=retry_if_exception(locked), stop=stop_after_delay(30),
                            wait=wait_random_exponential(multiplier=0.01, max=0.5), reraise=True):
        with attempt:
            db.execute("PRAGMA journal_mode=WAL")


def unusable(path: Path, why: str) -> UsageError:
    """Not a database, or a damaged one: never written over; without it pixsrc starts afresh."""
    return UsageError(f"{path} is not a usable pixsrc state database ({why})",
                      hint=f"move it aside (mv '{path}' '{path}.broken') and run again: the files already "
                           "downloaded are kept and taken over")


class State:
    def __init__(self, path: Path) -> None:
        _open_private(path)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            _switch_to_wal(self.db)
            self.db.execute("PRAGMA synchronous=NORMAL")
            migrate(self.db)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked past the timeout, a read-only disk, ...
                raise UsageError(f"cannot use the state database {path}: {exc}") from None
            raise unusable(path, str(exc)) from None

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
        """Record one run; ``counts`` is its report (the counters, ``message`` and ``errors``)."""
        error = None if status == "ok" else _run_error(source, status, counts)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO runs (source, started_at, ended_at, status, exit_code, listed, downloaded, updated,"
                " unchanged, skipped, failed, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (source, started_at, time.time(), status, exit_code, counts.get("listed"), counts.get("downloaded"),
                 counts.get("updated"), counts.get("unchanged"), counts.get("skipped"), counts.get("failed"),
                 counts.get("bytes")),
            )
            self.db.execute("INSERT OR REPLACE INTO run_details VALUES (?, ?, ?, ?, ?)",
                            (source, started_at, error, counts.get("deleted"), counts.get("pruned")))

    def runs(self, source: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """Every recorded run (of one source, from a time on), oldest first, with its details."""
        query = f"SELECT * FROM {_RUNS} WHERE (? IS NULL OR source = ?) AND started_at >= ? ORDER BY started_at"
        cursor = self.db.execute(query, (source, source, since or 0.0))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def run_totals(self, since: float | None = None) -> list[RunTotals]:
        """Per source and status, the runs started from ``since`` on, summed."""
        rows = self.db.execute(
            "SELECT source, status, COUNT(*), TOTAL(ended_at - started_at), TOTAL(downloaded), TOTAL(updated),"
            f" TOTAL(failed), TOTAL(bytes), TOTAL(deleted), TOTAL(pruned) FROM {_RUNS}"
            " WHERE started_at >= ? GROUP BY source, status ORDER BY source, status",
            (since or 0.0,),
        )
        return [RunTotals(source, status, runs, seconds, *(int(n) for n in sums))
                for source, status, runs, seconds, *sums in rows]

    def last_runs(self, outcome: Literal["any", "ok", "not-ok"] = "any") -> dict[str, RunSummary]:
        """Each source's newest run of all time (or newest that ended ok, or not ok)."""
        where = {"any": "", "ok": "WHERE status = 'ok'", "not-ok": "WHERE status != 'ok'"}[outcome]
        # the newest of each source from the index first: joining only those keeps it fast on a long history
        rows = self.db.execute(
            f"SELECT source, started_at, ended_at, status, error FROM {_RUNS} WHERE (source, started_at) IN"
            f" (SELECT source, MAX(started_at) FROM runs {where} GROUP BY source)")
        return {row[0]: RunSummary(*row) for row in rows}

    def runs_per_day(self, sources: list[str], since: float | None = None) -> list[tuple[str, int, int]]:
        """(local date, runs, bytes) for the days on which these sources started runs from ``since`` on."""
        marks = ", ".join("?" * len(sources))
        rows = self.db.execute(
            "SELECT date(started_at, 'unixepoch', 'localtime') AS day, COUNT(*), TOTAL(bytes) FROM runs"
            f" WHERE started_at >= ? AND source IN ({marks}) GROUP BY day ORDER BY day",
            (since or 0.0, *sources),
        )
        return [(day, runs, int(size)) for day, runs, size in rows]


@dataclass(frozen=True, slots=True)
class RunTotals:
    source: str
    status: str
    runs: int
    seconds: float
    downloaded: int
    updated: int
    failed: int  # assets
    bytes: int
    deleted: int
    pruned: int


@dataclass(frozen=True, slots=True)
class RunSummary:
    source: str
    started_at: float
    ended_at: float
    status: str
    error: str | None  # None for runs recorded before pixsrc kept it


def _run_error(source: str, status: str, report: dict[str, Any]) -> str | None:
    """Why a run did not end ok, in one line and redacted: its failed assets, else its reason."""
    message = report.get("message")
    errors, failed = report.get("errors") or [], report.get("failed") or 0
    if errors and failed and (status == "partial" or not message):
        # the engine reports settled assets (conflicts, notes on deleted ones) before it transfers
        # any, so the last error is a failed asset's
        message = f"{errors[-1].get('path')}: {errors[-1].get('error')}"
        if failed > 1:
            message += f" (and {failed - 1} more failed)"
    if not message:
        return None
    message = " ".join(str(message).split()).removeprefix(f"{source}: ")
    return redact(message)[:ERROR_CHARS]


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
