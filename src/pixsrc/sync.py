"""The sync engine, shared by every source type: list, plan, transfer, install, record.

- *plan* (``plan.py``, pure): the listing and the manifest in, one action per asset out;
  ``--dry-run`` stops there.
- *transfer* (``transfer.py``): one libcurl multi loop moves the bytes of every Fetch into its
  ``.part`` file, hashing on the way only what will be checked or compared (``_hash_for``).
- *safe tree* (``tree.py``): folders below dest, symlink guards, ``.part`` -> final name.
- *record*: finished assets go to the manifest in batches (every 256 or every second), and
  whatever finished is recorded when the run is interrupted.

A run yields one ``Outcome`` per asset, so the CLI can draw progress and tests can collect them;
its hooks (``on_found``, ``on_plan``, ``on_start``, ``on_bytes``) say what happens in between, on the
loop's thread, so each must only count (the CLI draws from its counters at most ten times a second).
The run owns its cancel event: Ctrl-C or SIGTERM sets it, the loop stops adding transfers,
aborts those in flight (their ``.part`` files stay for the next run) and the run raises
KeyboardInterrupt once what finished is recorded.
"""

from __future__ import annotations

import contextlib
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

from pixsrc.errors import AssetError, PixsrcError, SourceUnavailable
from pixsrc.paths import assign_paths, sanitize_path, selected
from pixsrc.plan import Adopt, Fetch, Gone, Rename, Settled, conditional_headers, decide, learned_version
from pixsrc.state import Entry, State
from pixsrc.tree import SafeTree, intact, lstat
from pixsrc.types import Asset, Controller, Transfer

Action = Literal["downloaded", "updated", "unchanged", "renamed", "skipped", "conflict", "failed",
                 "deleted", "pruned"]
RECORD_BATCH = 256


@dataclass
class Options:
    dest: Path
    jobs: int = 8
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    dry_run: bool = False
    prune: bool = False
    force: bool = False
    retries: int | None = None
    """Attempts per asset after the first (default: the retry policy's)."""
    max_delete: int | None = None
    """--prune deletes at most this many files (default: 100, or half of what pixsrc has, fewer)."""


@dataclass(frozen=True)
class Outcome:
    asset_id: str
    path: str
    action: Action
    bytes: int = 0
    error: str | None = None
    size: int | None = None
    """The file's size once in place (``bytes`` counts the wire: a resume moves less, a copy nothing)."""
    adopted: bool = False
    """An "unchanged" file that was in place unrecorded and is pixsrc's now."""


@dataclass
class Report:
    source: str
    status: str = "ok"  # ok | partial | unavailable | auth | busy | interrupted | invalid
    found: int = 0  # assets the source listed (after its own config filters), before --include/--exclude
    listed: int = 0  # ... and after them: the ones this run considers
    downloaded: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    conflicts: int = 0
    deleted: int = 0
    pruned: int = 0
    kept: int = 0  # files --prune would have deleted, held back by the --max-delete guard
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


@dataclass
class _Pending:
    """A Fetch on its way: where it lands, what it is checked against, how often it was retried."""

    fetch: Fetch
    target: Path
    part: Path
    copy_of: Entry | None = None  # asset.same_as's file, copied instead of downloaded
    mismatches: int = 0


class _PathsOf(dict[str, str]):
    """The manifest's paths by asset id, looked up only for the few assets whose paths clash."""

    def __init__(self, manifest: dict[str, Entry]) -> None:
        super().__init__()
        self.manifest = manifest

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.manifest.get(key)
        return entry.path if entry is not None else default


class _Recorder:
    """Manifest writes in batches: one SQLite transaction per 256 assets or per second."""

    def __init__(self, state: State, source_id: str) -> None:
        self.state, self.source_id = state, source_id
        self.entries: list[Entry] = []
        self.last = time.monotonic()

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        if len(self.entries) >= RECORD_BATCH or time.monotonic() - self.last > 1.0:
            self.flush()

    def flush(self) -> None:
        self.state.record(self.source_id, self.entries)
        self.entries, self.last = [], time.monotonic()


class SyncRun:
    """One source's fetch. Iterate it to run; ``report`` holds the counts afterwards.

    ``limit`` (a ``pixsrc.api.RateLimit``) and ``policy`` (a ``RetryPolicy``) gate the transfer
    loop as they gate the source's API calls.

    Hooks: ``on_found(n)`` as the listing yields assets (n so far, repeated ids counted once);
    ``on_plan(files, bytes)`` once, with what is to be transferred; ``on_start(path, size)`` as each
    transfer starts (at most ``jobs`` are started and not ended; its Outcome ends it); ``on_bytes(n)``
    per chunk received.
    """

    def __init__(self, source_id: str, controller: Controller, state: State, options: Options,
                 on_bytes: Callable[[int], None] | None = None,
                 on_plan: Callable[[int, int], None] | None = None, *,
                 on_found: Callable[[int], None] | None = None,
                 on_start: Callable[[str, int | None], None] | None = None,
                 cancel: threading.Event | None = None, limit: Any = None, policy: Any = None,
                 user_agent: str | None = None) -> None:
        self.source_id = source_id
        self.controller = controller
        self.state = state
        self.options = options
        self.dest = options.dest
        self.on_bytes = on_bytes
        self.on_plan = on_plan
        self.on_found = on_found
        self.on_start = on_start
        self.cancel = cancel or threading.Event()
        self.limit = limit
        self.policy = policy
        self.user_agent = user_agent
        self.report = Report(source_id, dry_run=options.dry_run)
        self.tree = SafeTree(options.dest)

    def __iter__(self) -> Iterator[Outcome]:
        started = time.monotonic()
        try:
            yield from self._run()
        finally:
            self.report.seconds = time.monotonic() - started

    # -- listing and planning ---------------------------------------------------------------

    def _list(self) -> dict[str, Asset]:
        """The listing by asset id (the first of repeated ids wins): one dict, no list beside it."""
        from pixsrc.api import ApiError, Cancelled

        unique: dict[str, Asset] = {}
        on_found = self.on_found
        try:
            for asset in self.controller.list_assets():
                unique.setdefault(asset.id, asset)
                if on_found is not None:
                    on_found(len(unique))
            return unique
        except PixsrcError:
            raise
        except Cancelled:
            raise KeyboardInterrupt from None
        except (ApiError, OSError) as exc:
            raise SourceUnavailable(f"{self.source_id}: listing failed: {exc}") from None

    def _run(self) -> Iterator[Outcome]:
        unique = self._list()
        wanted = [a for a in unique.values() if selected(a.path, self.options.include, self.options.exclude)]
        self.report.found, self.report.listed = len(unique), len(wanted)
        manifest = self.state.manifest(self.source_id)
        paths = assign_paths(((a.id, sanitize_path(a.path)) for a in wanted), _PathsOf(manifest))
        fetches: list[Fetch] = []
        dest = str(self.dest)
        for asset in wanted:
            action = decide(asset, paths[asset.id], manifest.get(asset.id), dest, self.options.force,
                            self.tree.plain_parents)
            if isinstance(action, Fetch):
                fetches.append(action)
            elif isinstance(action, Settled):
                yield self._emit(Outcome(asset.id, action.path, action.action, error=action.error))
            elif isinstance(action, Rename):
                yield self._emit(self._rename(action))
            elif isinstance(adopted := self._adopt(action), Fetch):
                fetches.append(adopted)
            else:
                yield self._emit(adopted)
        gone = [Gone(asset_id, entry) for asset_id, entry in manifest.items() if asset_id not in unique]
        held = self._prune_guard(len(unique), len(gone), len(manifest))
        for vanished in gone:
            if held is None:
                yield self._emit(self._gone(vanished))
            else:
                self.report.kept += 1
                yield self._emit(Outcome(vanished.asset_id, vanished.entry.path, "deleted", error=held))
        if self.on_plan:
            self.on_plan(len(fetches), sum(f.asset.size or 0 for f in fetches))
        if self.options.dry_run:
            for item in fetches:
                action_name: Action = "unchanged" if item.check is not None or item.adopt else item.action
                yield self._emit(Outcome(item.asset.id, item.path, action_name, item.asset.size or 0))
            return
        # assets with the content of another listed asset (same_as) go after the others, then copy
        # that asset's file if it is intact; otherwise they are downloaded like any other
        first = [f for f in fetches if not (f.asset.same_as and f.asset.same_as in unique)]
        later = [f for f in fetches if f.asset.same_as and f.asset.same_as in unique]
        yield from self._transfer_all(first, {})
        if later:
            yield from self._transfer_all(later, self.state.manifest(self.source_id))

    def _emit(self, outcome: Outcome) -> Outcome:
        self.report.count(outcome)
        return outcome

    def _adopt(self, action: Adopt) -> Outcome | Fetch:
        """A file already in place with the asset's content becomes pixsrc's without being rewritten
        (a CI cache miss, a new state folder, another --dest): by the source's checksum where it has
        one, else by a download to the ``.part`` compared with the file. Only a difference conflicts."""
        from pixsrc.transfer import hash_file

        asset, target = action.asset, self.dest / action.path
        st = lstat(target)
        if st is None or not stat.S_ISREG(st.st_mode) or asset.size not in (None, st.st_size):
            return self._in_the_way(asset, action.path)
        if asset.checksum is None:
            return Fetch(asset, action.path, "downloaded", adopt=True)
        try:
            same = hash_file(target, asset.checksum.algorithm) == asset.checksum.value.lower()
        except (OSError, ValueError):
            same = False
        if not same:
            return self._in_the_way(asset, action.path)
        if not self.options.dry_run:
            known = asset.checksum.value.lower() if asset.checksum.algorithm == "sha256" else ""
            self.state.record(self.source_id, [self._entry(asset, action.path, target, known, touch=False)])
        return Outcome(asset.id, action.path, "unchanged", size=st.st_size, adopted=True)

    @staticmethod
    def _in_the_way(asset: Asset, path: str) -> Outcome:
        return Outcome(asset.id, path, "conflict",
                       error="a different file pixsrc did not write is in the way; use --force to replace it")

    def _rename(self, action: Rename) -> Outcome:
        entry = action.entry
        if not self.options.dry_run:
            target = self.dest / action.path
            try:
                self.tree.safe_parent(target)
                (self.dest / entry.path).replace(target)
            except (AssetError, OSError) as exc:
                return Outcome(action.asset.id, action.path, "failed", error=str(exc))
            self.state.record(self.source_id, [Entry(action.asset.id, entry.version, action.path, entry.size,
                                                     entry.mtime_ns, entry.sha256, time.time())])
        return Outcome(action.asset.id, action.path, "renamed")

    def _prune_guard(self, listed: int, gone: int, known: int) -> str | None:
        """Why --prune must not delete this time (an unmounted share, a wrong path), or None.

        An empty listing never prunes; nor does one that would delete more than ``max_delete`` files
        (default: 100 or half of the files pixsrc has, whichever is fewer), as rclone's --max-delete.
        """
        if not self.options.prune or not gone:
            return None
        if listed == 0:
            reason = "the source listed nothing (unmounted? wrong path?)"
        else:
            limit = self.options.max_delete
            if limit is None:
                limit = min(100, known // 2)
            if gone <= limit:
                return None
            reason = f"pruning would delete {gone} of {known} files, more than --max-delete {limit}"
        self.report.message = f"kept {gone} files --prune would delete: {reason}; pass --max-delete N to allow more"
        return f"kept: {reason}"

    def _gone(self, gone: Gone) -> Outcome:
        asset_id, entry = gone.asset_id, gone.entry
        if not self.options.prune:
            return Outcome(asset_id, entry.path, "deleted", error="deleted at the source; --prune removes it")
        target = self.dest / entry.path
        if not self.tree.plain_parents(target):  # never delete through a symlink the user put there
            if not self.options.dry_run:
                self.state.forget(self.source_id, [asset_id])
            return Outcome(asset_id, entry.path, "deleted")
        if self.options.dry_run:
            return Outcome(asset_id, entry.path, "pruned")
        action: Action = "deleted"  # changed or gone locally: not ours any more, keep it
        if intact(lstat(target), entry):
            self.tree.remove(target)
            action = "pruned"
        self.state.forget(self.source_id, [asset_id])
        return Outcome(asset_id, entry.path, action)

    # -- transferring -------------------------------------------------------------------------

    def _transfer_all(self, fetches: list[Fetch], done: dict[str, Entry]) -> Iterator[Outcome]:
        if not fetches:
            return
        from pixsrc.api import USER_AGENT, RetryPolicy, default_policy
        from pixsrc.transfer import TransferLoop

        self.tree.make_dest()
        policy = self.policy or default_policy()
        if self.options.retries is not None:
            policy = RetryPolicy(retries=self.options.retries, base=policy.base, cap=policy.cap,
                                 deadline=policy.deadline, max_retry_after=policy.max_retry_after)
        on_start = self.on_start
        started = None if on_start is None else (lambda job: on_start(job.key.fetch.path, job.key.fetch.asset.size))
        loop = TransferLoop(jobs=self.options.jobs, limit=self.limit, policy=policy, cancel=self.cancel,
                            on_bytes=self.on_bytes, on_start=started,
                            user_agent=self.user_agent or USER_AGENT,
                            auth_hint=f"run: pixsrc auth login {self.source_id}")
        recorder = _Recorder(self.state, self.source_id)
        failures: list[Outcome] = []
        jobs = self._jobs(fetches, done, failures)
        try:
            with _cancel_on_signals(self.cancel):
                for result in loop.run(jobs):
                    yield from self._drain(failures)
                    outcome, entry = self._finish(result, loop)
                    if entry is not None:
                        recorder.add(entry)
                    if outcome is not None:
                        yield self._emit(outcome)
                yield from self._drain(failures)
        finally:
            recorder.flush()
            loop.close()

    def _drain(self, failures: list[Outcome]) -> Iterator[Outcome]:
        while failures:
            yield self._emit(failures.pop(0))

    def _jobs(self, fetches: list[Fetch], done: dict[str, Entry], failures: list[Outcome]) -> Iterator[Any]:
        """The transfer loop's jobs, made as it asks for them (a huge listing stays small in memory).
        An asset the controller cannot describe, or whose folder is unsafe, fails on its own."""
        for item in fetches:
            try:
                yield self._job(item, done)
            except AssetError as exc:
                failures.append(Outcome(item.asset.id, item.path, "failed", error=str(exc)))
            except OSError as exc:
                failures.append(Outcome(item.asset.id, item.path, "failed", error=f"{exc.strerror}: {exc.filename}"))

    def _job(self, item: Fetch, done: dict[str, Entry]) -> Any:
        from pixsrc.transfer import Job

        asset = item.asset
        target = self.dest / item.path
        part = self.tree.part_for(target, asset.id, asset.version, drop_others=item.action == "updated")
        pending = _Pending(item, target, part)
        copy_of = done.get(asset.same_as or "")
        if copy_of is not None and self._copyable(asset, copy_of):
            pending.copy_of = copy_of
            transfer = Transfer(local_path=str(self.dest / copy_of.path))
        else:
            transfer = self.controller.transfer(asset)
        conditional = conditional_headers(item.check) if item.check is not None else {}
        return Job(pending, transfer, part, conditional, asset.size, _hash_for(item), pinned=bool(asset.version))

    def _copyable(self, asset: Asset, entry: Entry) -> bool:
        source = self.dest / entry.path
        return ((asset.size is None or asset.size == entry.size) and self.tree.plain_parents(source)
                and intact(lstat(source), entry))

    def _finish(self, result: Any, loop: Any) -> tuple[Outcome | None, Entry | None]:
        """Verify a finished transfer, put it in place; an Outcome, and the Entry to record."""
        from pixsrc.transfer import hash_file

        pending: _Pending = result.key
        item, asset = pending.fetch, pending.fetch.asset
        wire = 0 if pending.copy_of is not None else result.received
        if result.kind == "failed":
            if pending.copy_of is not None:
                return self._download_again(pending, loop)
            return Outcome(asset.id, item.path, "failed", wire, error=result.error), None
        if result.kind == "not-modified":
            check = item.check
            if check is not None and asset.version and check.version != asset.version:
                # still current, and now the listing versions it: record that, so the next run asks nothing
                return Outcome(asset.id, item.path, "unchanged", wire), replace(check, version=asset.version)
            return Outcome(asset.id, item.path, "unchanged", wire), None
        problem = self._verify(asset, result, pending)
        if problem is not None:
            pending.part.unlink(missing_ok=True)
            if pending.copy_of is not None:
                return self._download_again(pending, loop)
            pending.mismatches += 1
            if problem[1] and pending.mismatches < 2:  # once may be a glitch; twice, the source is wrong
                return self._download_again(pending, loop)
            return Outcome(asset.id, item.path, "failed", wire, error=problem[0]), None
        # the .part's sha256 when it was hashed on the way (_hash_for), else "" (not needed, not known)
        sha256 = result.checksum if _hash_for(item) == "sha256" else ""
        version = asset.version or learned_version(result.etag, result.last_modified)
        if not version:  # a server with no validator at all: the content is the version
            try:
                sha256 = sha256 or hash_file(pending.part)
            except OSError as exc:
                return Outcome(asset.id, item.path, "failed", wire, error=f"{exc.strerror}: {item.path}"), None
            version = f"sha256:{sha256}"
        if item.adopt:
            return self._compare(pending, result.size, sha256, version, wire)
        check = item.check
        if check is not None and sha256 and result.size == check.size:
            try:
                same = sha256 == (check.sha256 or hash_file(pending.target))
            except OSError:  # our file went away meanwhile: the new one goes in its place
                same = False
            if same:
                pending.part.unlink(missing_ok=True)  # new validators, same bytes: keep our file
                entry = Entry(asset.id, version, item.path, check.size, check.mtime_ns, sha256, time.time())
                return Outcome(asset.id, item.path, "unchanged", wire), entry
        try:
            self.tree.install(pending.part, pending.target, item.path)
            entry = self._entry(asset, item.path, pending.target, sha256, version, result.last_modified)
        except AssetError as exc:
            return Outcome(asset.id, item.path, "failed", wire, error=str(exc)), None
        except OSError as exc:
            return Outcome(asset.id, item.path, "failed", wire, error=f"{exc.strerror}: {item.path}"), None
        if item.replaces is not None:  # renamed and changed at the source: drop our old copy
            old = self.dest / item.replaces.path
            if self.tree.plain_parents(old) and intact(lstat(old), item.replaces):
                self.tree.remove(old)
        return Outcome(asset.id, item.path, item.action, wire, size=entry.size), entry

    def _compare(self, pending: _Pending, size: int, sha256: str, version: str,
                 wire: int) -> tuple[Outcome, Entry | None]:
        """The downloaded ``.part`` (``size`` bytes, hashed on the way) against the unrecorded file in
        place: the file is never touched, and read only when its size matches."""
        from pixsrc.transfer import hash_file

        item, target = pending.fetch, pending.target
        pending.part.unlink(missing_ok=True)
        st = lstat(target)
        try:
            same = (st is not None and stat.S_ISREG(st.st_mode) and st.st_size == size
                    and hash_file(target) == sha256)
        except OSError:
            same = False
        if not same or st is None:
            return self._in_the_way(item.asset, item.path), None
        entry = Entry(item.asset.id, version, item.path, st.st_size, st.st_mtime_ns, sha256, time.time())
        return Outcome(item.asset.id, item.path, "unchanged", wire, size=st.st_size, adopted=True), entry

    def _verify(self, asset: Asset, result: Any, pending: _Pending) -> tuple[str, bool] | None:
        """(problem, worth retrying) or None when the bytes are what the source promised."""
        if asset.size is not None and result.size != asset.size:
            return f"size mismatch: got {result.size} bytes, the source said {asset.size}", True
        copy_of = pending.copy_of
        if copy_of is not None and (result.size != copy_of.size
                                    or not intact(lstat(self.dest / copy_of.path), copy_of)):
            return "the local copy changed while it was copied", False
        if asset.checksum is not None:
            actual = result.checksum
            if actual != asset.checksum.value.lower():
                return (f"{asset.checksum.algorithm} mismatch: got {actual}, the source said "
                        f"{asset.checksum.value}", True)
        return None

    def _download_again(self, pending: _Pending, loop: Any) -> tuple[Outcome | None, Entry | None]:
        """Queue a download of the asset: after a refused local copy (same_as) or one bad checksum."""
        pending.copy_of = None
        try:
            transfer = self.controller.transfer(pending.fetch.asset)
        except AssetError as exc:
            return Outcome(pending.fetch.asset.id, pending.fetch.path, "failed", error=str(exc)), None
        loop.push(self._retry_job(pending, transfer))
        return None, None

    def _retry_job(self, pending: _Pending, transfer: Transfer) -> Any:
        from pixsrc.transfer import Job

        asset = pending.fetch.asset
        return Job(pending, transfer, pending.part, {}, asset.size, _hash_for(pending.fetch),
                   pinned=bool(asset.version))

    def _entry(self, asset: Asset, path: str, target: Path, sha256: str, version: str | None = None,
               last_modified: str | None = None, touch: bool = True) -> Entry:
        import os

        modified = asset.modified
        if modified is None and last_modified:
            with contextlib.suppress(TypeError, ValueError):
                modified = parsedate_to_datetime(last_modified)
        if modified is not None and touch:
            mtime_ns = int(modified.timestamp() * 1e9)
            os.utime(target, ns=(mtime_ns, mtime_ns))
        st = target.stat()
        return Entry(asset.id, version or asset.version, path, st.st_size, st.st_mtime_ns, sha256, time.time())


def _hash_for(item: Fetch) -> str | None:
    """What a transfer hashes on the way: the source's own checksum, to verify; sha256 when the
    bytes will be compared with a file (a re-check answered 200, an adoption); else nothing."""
    if item.asset.checksum is not None:
        return item.asset.checksum.algorithm
    return "sha256" if item.check is not None or item.adopt else None


@contextlib.contextmanager
def _cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """While bytes move, Ctrl-C and SIGTERM set the run's cancel event instead of raising inside a
    libcurl callback; the loop then stops cleanly and raises KeyboardInterrupt itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in _signals()}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _signals() -> list[signal.Signals]:
    return [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
