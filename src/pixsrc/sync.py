"""The sync engine, shared by every source type.

It lists through the controller, compares with the manifest, downloads with a bounded pool of
threads into hidden ``*.part`` files next to their final names, verifies size and checksum,
renames into place and records each finished asset. It yields one ``Outcome`` per asset.

Decisions per listed asset (``entry`` = the manifest row, ``file`` = what is on disk now):
    no entry, no file                 -> download ("downloaded")
    no entry, file present            -> adopt it if the source's checksum matches, else conflict
    entry, file missing               -> download again ("downloaded", a restore)
    entry, file changed by the user   -> conflict; replaced only with --force
    entry, other version              -> download ("updated")
    entry, same version, other path   -> rename the local file (a remote rename)
    entry, same version, intact       -> "unchanged"
Assets in the manifest that the source no longer lists are reported as "deleted"; with
``prune`` the local file is removed if it is still the one pixsrc wrote.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pixsrc.errors import AssetError, AuthRequired, PixsrcError, SourceUnavailable, UsageError
from pixsrc.http import Cancelled, HttpError, backoff_delay, cancelled
from pixsrc.http import wait as interruptible_wait
from pixsrc.paths import assign_paths, sanitize_path, selected
from pixsrc.state import Entry, State
from pixsrc.types import Asset, Controller, new_hasher

CHUNK = 256 * 1024
Action = Literal["downloaded", "updated", "unchanged", "renamed", "skipped", "conflict", "failed",
                 "deleted", "pruned"]


@dataclass
class Options:
    dest: Path
    jobs: int = 8
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    dry_run: bool = False
    prune: bool = False
    force: bool = False
    retries: int = 4


@dataclass(frozen=True)
class Outcome:
    asset_id: str
    path: str
    action: Action
    bytes: int = 0
    error: str | None = None


@dataclass
class Report:
    source: str
    status: str = "ok"  # ok | partial | unavailable | auth | busy | interrupted | invalid
    listed: int = 0
    downloaded: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    conflicts: int = 0
    deleted: int = 0
    pruned: int = 0
    bytes: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    message: str | None = None  # why the source ended early (unavailable, auth, busy, ...)
    errors: list[dict[str, str | None]] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        if outcome.action == "renamed":
            self.updated += 1
        elif outcome.action == "conflict":
            self.conflicts += 1
            self.skipped += 1
        elif outcome.action in ("downloaded", "updated", "unchanged", "skipped", "failed", "deleted", "pruned"):
            setattr(self, outcome.action, getattr(self, outcome.action) + 1)
        self.bytes += outcome.bytes
        if outcome.error and outcome.action in ("failed", "conflict", "skipped", "deleted"):
            self.errors.append({"id": outcome.asset_id, "path": outcome.path, "error": outcome.error})

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass(frozen=True)
class _Job:
    asset: Asset
    path: str
    action: Literal["downloaded", "updated"]
    replaces: Entry | None = None  # the previous file at another path, removed once this one lands
    copy_from: Entry | None = None  # asset.same_as's file, copied instead of downloaded if intact


def _hash_file(path: Path, algorithm: str) -> str:
    digest = new_hasher(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _part_prefix(asset: Asset) -> str:
    return ".pixsrc-" + hashlib.sha1(asset.id.encode()).hexdigest()[:12]


def _part_name(asset: Asset) -> str:
    """Hidden, per asset and version: a resumed download never mixes two versions' bytes."""
    return f"{_part_prefix(asset)}-{hashlib.sha1(asset.version.encode()).hexdigest()[:8]}.part"


class SyncRun:
    """One source's fetch. Iterate it to run; ``report`` holds the counts afterwards."""

    def __init__(self, source_id: str, controller: Controller, state: State, options: Options,
                 on_bytes: Callable[[int], None] | None = None,
                 on_plan: Callable[[int, int], None] | None = None) -> None:
        self.source_id = source_id
        self.controller = controller
        self.state = state
        self.options = options
        self.dest = options.dest
        self.on_bytes = on_bytes
        self.on_plan = on_plan
        self.report = Report(source_id, dry_run=options.dry_run)
        self._safe_dirs: set[Path] = set()
        self._dir_lock = threading.Lock()

    # -- listing and planning ---------------------------------------------------------------

    def _list(self) -> list[Asset]:
        try:
            return list(self.controller.list_assets())
        except PixsrcError:
            raise
        except (HttpError, OSError) as exc:
            raise SourceUnavailable(f"{self.source_id}: listing failed: {exc}") from None

    def __iter__(self) -> Iterator[Outcome]:
        started = time.monotonic()
        try:
            yield from self._run()
        finally:
            self.report.seconds = time.monotonic() - started

    def _run(self) -> Iterator[Outcome]:
        listing = self._list()
        listed_ids = {a.id for a in listing}
        unique: dict[str, Asset] = {}
        for asset in listing:
            unique.setdefault(asset.id, asset)
        wanted = [a for a in unique.values() if selected(a.path, self.options.include, self.options.exclude)]
        self.report.listed = len(wanted)
        manifest = self.state.manifest(self.source_id)
        paths = assign_paths(((a.id, sanitize_path(a.path)) for a in wanted),
                             {k: e.path for k, e in manifest.items()})
        jobs: list[_Job] = []
        for asset in wanted:
            outcome, job = self._decide(asset, paths[asset.id], manifest.get(asset.id))
            if outcome is not None:
                yield self._emit(outcome)
            if job is not None:
                jobs.append(job)
        for asset_id, entry in manifest.items():
            if asset_id not in listed_ids:
                yield self._emit(self._remote_deleted(asset_id, entry))
        if self.on_plan:
            self.on_plan(len(jobs), sum(j.asset.size or 0 for j in jobs))
        if self.options.dry_run:
            for job in jobs:
                yield self._emit(Outcome(job.asset.id, job.path, job.action, job.asset.size or 0))
            return
        # assets with the content of another listed asset (same_as) go after the others, then copy
        # that asset's file if it is intact; otherwise they are downloaded like any other
        first: list[_Job] = []
        later: list[_Job] = []
        for job in jobs:
            (later if job.asset.same_as is not None and job.asset.same_as in unique else first).append(job)
        yield from self._download_all(first)
        if later:
            done = self.state.manifest(self.source_id)
            yield from self._download_all([
                _Job(j.asset, j.path, j.action, j.replaces, done.get(j.asset.same_as or "")) for j in later])

    def _make_dest(self) -> None:
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use {self.dest} as the destination: {exc.strerror}",
                             hint="pass another --dest, or fix the source's dest") from None

    def _emit(self, outcome: Outcome) -> Outcome:
        self.report.count(outcome)
        return outcome

    def _intact(self, st: os.stat_result | None, entry: Entry) -> bool:
        return (st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry.size
                and st.st_mtime_ns == entry.mtime_ns)

    def _decide(self, asset: Asset, path: str, entry: Entry | None) -> tuple[Outcome | None, _Job | None]:
        target = self.dest / path
        st = _lstat(target)
        force = self.options.force
        if entry is None:
            if st is None or force:
                return None, _Job(asset, path, "downloaded")
            if self._adoptable(asset, target, st):
                return Outcome(asset.id, path, "unchanged"), None
            return Outcome(asset.id, path, "conflict",
                           error="a file pixsrc did not write is in the way; use --force to replace it"), None
        if entry.path != path:
            old = self.dest / entry.path
            if (entry.version == asset.version and st is None and self._plain_parents(old)
                    and self._intact(_lstat(old), entry)):
                return self._rename(asset, old, path, entry), None
            return None, _Job(asset, path, "updated", replaces=entry)
        if st is None:
            return None, _Job(asset, path, "downloaded")
        if not self._intact(st, entry) and not force:
            return Outcome(asset.id, path, "conflict",
                           error="changed locally since pixsrc wrote it; use --force to replace it"), None
        if entry.version != asset.version or force and not self._intact(st, entry):
            return None, _Job(asset, path, "updated")
        return Outcome(asset.id, path, "unchanged"), None

    def _adoptable(self, asset: Asset, target: Path, st: os.stat_result) -> bool:
        """A file already there with the exact published checksum is recorded, not re-downloaded."""
        if asset.checksum is None or not stat.S_ISREG(st.st_mode) or (asset.size not in (None, st.st_size)):
            return False
        try:
            if _hash_file(target, asset.checksum.algorithm) != asset.checksum.value.lower():
                return False
            if not self.options.dry_run:
                self._record_file(asset, target.relative_to(self.dest).as_posix(), target)
            return True
        except (OSError, ValueError):
            return False

    def _rename(self, asset: Asset, old: Path, path: str, entry: Entry) -> Outcome:
        if not self.options.dry_run:
            target = self.dest / path
            self._make_dest()
            self._safe_parent(target)
            os.replace(old, target)
            self.state.record(self.source_id, [Entry(asset.id, entry.version, path, entry.size, entry.mtime_ns,
                                                     entry.sha256, time.time())])
        return Outcome(asset.id, path, "renamed")

    def _remote_deleted(self, asset_id: str, entry: Entry) -> Outcome:
        if not self.options.prune:
            return Outcome(asset_id, entry.path, "deleted", error="deleted at the source; --prune removes it")
        target = self.dest / entry.path
        if not self._plain_parents(target):  # never delete through a symlink the user put there
            if not self.options.dry_run:
                self.state.forget(self.source_id, [asset_id])
            return Outcome(asset_id, entry.path, "deleted")
        if self.options.dry_run:
            return Outcome(asset_id, entry.path, "pruned")
        if self._intact(_lstat(target), entry):
            target.unlink()
            self._remove_empty_parents(target.parent)
            action: Action = "pruned"
        else:
            action = "deleted"  # changed or gone locally: not ours any more, keep it
        self.state.forget(self.source_id, [asset_id])
        return Outcome(asset_id, entry.path, action)

    def _plain_parents(self, target: Path) -> bool:
        """True if every folder between dest and ``target`` is a real folder (no symlink)."""
        current = self.dest
        for part in target.parent.relative_to(self.dest).parts:
            current = current / part
            st = _lstat(current)
            if st is None:
                return True  # nothing below a missing folder can be reached through a link
            if not stat.S_ISDIR(st.st_mode):
                return False
        return True

    def _remove_empty_parents(self, folder: Path) -> None:
        while folder != self.dest and self.dest in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            self._safe_dirs.discard(folder)
            folder = folder.parent

    # -- downloading --------------------------------------------------------------------------

    def _download_all(self, jobs: list[_Job]) -> Iterator[Outcome]:
        if not jobs:
            return
        self._make_dest()
        pending_records: list[Entry] = []
        last_flush = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.jobs), thread_name_prefix="pixsrc-fetch")
        running: dict[Future[tuple[Entry, int]], _Job] = {}
        queue = iter(jobs)
        try:
            # keep at most 2x jobs futures alive, so memory stays flat for huge listings
            for job in queue:
                running[pool.submit(self._fetch, job)] = job
                if len(running) >= 2 * self.options.jobs:
                    break
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    outcome, entry = self._result(job, future)
                    if entry is not None:
                        pending_records.append(entry)
                    yield self._emit(outcome)
                    next_job = next(queue, None)
                    if next_job is not None:
                        running[pool.submit(self._fetch, next_job)] = next_job
                if len(pending_records) >= 256 or time.monotonic() - last_flush > 1.0:
                    self.state.record(self.source_id, pending_records)
                    pending_records, last_flush = [], time.monotonic()
        except BaseException as exc:
            cancelled.set()  # stop the workers between chunks; their .part files stay for resume
            pool.shutdown(wait=True, cancel_futures=True)
            for future, job in running.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    pending_records.append(future.result()[0])
                    self.report.count(Outcome(job.asset.id, job.path, job.action, future.result()[1]))
            if isinstance(exc, PixsrcError):
                cancelled.clear()  # only this source ended (auth, quota): the next source may still run
            raise
        finally:
            self.state.record(self.source_id, pending_records)
            pool.shutdown(wait=True)

    def _result(self, job: _Job, future: Future[tuple[Entry, int]]) -> tuple[Outcome, Entry | None]:
        try:
            entry, size = future.result()
        except AuthRequired:
            raise
        except Cancelled:
            raise KeyboardInterrupt from None
        except (AssetError, HttpError, OSError) as exc:
            return Outcome(job.asset.id, job.path, "failed", error=str(exc) or type(exc).__name__), None
        if job.replaces is not None:  # renamed and changed at the source: drop our old copy
            old = self.dest / job.replaces.path
            if self._plain_parents(old) and self._intact(_lstat(old), job.replaces):
                old.unlink()
                self._remove_empty_parents(old.parent)
        return Outcome(job.asset.id, job.path, job.action, size), entry

    def _safe_parent(self, target: Path) -> None:
        """Create the folders below dest, refusing to go through a symlink or a non-folder."""
        parent = target.parent
        if parent in self._safe_dirs:
            return
        with self._dir_lock:
            current = self.dest
            for part in parent.relative_to(self.dest).parts:
                current = current / part
                if current in self._safe_dirs:
                    continue
                st = _lstat(current)
                if st is None:
                    current.mkdir(exist_ok=True)
                elif stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                    raise AssetError(f"refusing to write through {current}: not a plain folder (symlink?)")
                self._safe_dirs.add(current)

    def _fetch(self, job: _Job) -> tuple[Entry, int]:
        asset = job.asset
        target = self.dest / job.path
        self._safe_parent(target)
        part = target.parent / _part_name(asset)
        if job.action == "updated":  # parts of an older version can never be resumed
            for stale in target.parent.glob(_part_prefix(asset) + "-*.part"):
                if stale != part:
                    stale.unlink(missing_ok=True)
        attempt = 0
        mismatches = 0
        received = [0]  # bytes over the wire in this run, failed attempts included
        sha256 = self._copy_local(asset, job.copy_from, part) if job.copy_from is not None else None
        while sha256 is None:
            try:
                sha256 = self._stream_into(asset, part, received)
                break
            except ChecksumMismatch:
                mismatches += 1
                if mismatches > 1:  # once may be a glitch; twice means the source's checksum is wrong
                    raise
            except (AssetError, HttpError) as exc:
                if not exc.retryable or attempt >= self.options.retries:
                    raise
            except OSError as exc:
                if not _network_error(exc) or attempt >= self.options.retries:
                    raise AssetError(f"{type(exc).__name__}: {exc}") from None
            interruptible_wait(backoff_delay(attempt))
            attempt += 1
        st_target = _lstat(target)
        if st_target is not None and stat.S_ISDIR(st_target.st_mode):
            part.unlink(missing_ok=True)
            raise AssetError(f"a folder is in the way at {job.path}")
        os.replace(part, target)
        return self._record_file(asset, job.path, target, sha256, record=False), received[0]

    def _copy_local(self, asset: Asset, entry: Entry, part: Path) -> str | None:
        """Copy the intact local file of ``entry`` into ``part`` and return its sha256; None (download
        instead) if it is not there as pixsrc wrote it, its bytes do not hash to what was recorded, or
        ``asset`` publishes a size or checksum (any algorithm) that the copy does not match."""
        source = self.dest / entry.path
        if asset.size is not None and asset.size != entry.size:
            return None
        if not self._plain_parents(source) or not self._intact(_lstat(source), entry):
            return None
        sha256 = hashlib.sha256()
        check = new_hasher(asset.checksum.algorithm) if asset.checksum is not None else None
        try:
            with open(source, "rb") as src, open(part, "wb") as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    sha256.update(chunk)
                    if check:
                        check.update(chunk)
        except OSError:
            part.unlink(missing_ok=True)
            return None
        if sha256.hexdigest() != entry.sha256 or (
                check and asset.checksum and check.hexdigest() != asset.checksum.value.lower()):
            part.unlink(missing_ok=True)
            return None
        return entry.sha256

    def _record_file(self, asset: Asset, path: str, target: Path, sha256: str | None = None,
                     record: bool = True) -> Entry:
        if asset.modified is not None:
            mtime_ns = int(asset.modified.timestamp() * 1e9)
            os.utime(target, ns=(mtime_ns, mtime_ns))
        st = target.stat()
        entry = Entry(asset.id, asset.version, path, st.st_size, st.st_mtime_ns,
                      sha256 or _hash_file(target, "sha256"), time.time())
        if record:
            self.state.record(self.source_id, [entry])
        return entry

    def _stream_into(self, asset: Asset, part: Path, counter: list[int] | None = None) -> str:
        """Download (or resume) into ``part``; verify; return its sha256.

        ``counter[0]`` is increased as bytes arrive, so an attempt that fails half-way still counts.
        """
        offset = part.stat().st_size if part.exists() else 0
        if asset.size is not None and offset > asset.size:
            offset = 0
        stream = self.controller.open(asset, offset)
        try:
            sha256 = hashlib.sha256()
            check = None
            if asset.checksum is not None and asset.checksum.algorithm != "sha256":
                check = new_hasher(asset.checksum.algorithm)
            with open(part, "r+b" if stream.offset and part.exists() else "wb") as out:
                if stream.offset:
                    out.truncate(stream.offset)
                    while chunk := out.read(CHUNK):  # re-hash the part we keep
                        sha256.update(chunk)
                        if check:
                            check.update(chunk)
                while chunk := stream.read(CHUNK):
                    if cancelled.is_set():
                        raise Cancelled()
                    out.write(chunk)
                    sha256.update(chunk)
                    if check:
                        check.update(chunk)
                    if counter is not None:
                        counter[0] += len(chunk)
                    if self.on_bytes:
                        self.on_bytes(len(chunk))
                size = out.tell()
        finally:
            stream.close()
        if asset.size is not None and size != asset.size:
            if size < asset.size:
                raise AssetError(f"truncated: got {size} of {asset.size} bytes", retryable=True)
            part.unlink(missing_ok=True)
            raise AssetError(f"size mismatch: got {size} bytes, the source said {asset.size}", retryable=True)
        if asset.checksum is not None:
            actual = (check or sha256).hexdigest()
            if actual != asset.checksum.value.lower():
                part.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{asset.checksum.algorithm} mismatch: got {actual}, the source said "
                                 f"{asset.checksum.value}", retryable=True)
        return sha256.hexdigest()


class ChecksumMismatch(AssetError):
    pass


def _network_error(exc: OSError) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError) or exc.__class__ is OSError and exc.errno is None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
