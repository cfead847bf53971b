"""``pixsrc watch``: stay in the foreground and fetch each source when it is due, or when it changes.

When a source is due is ``pixsrc.schedule``'s question (its interval, the run history, a backoff after
failures, with the first wait of ``--backoff``). A source whose controller can wait for changes (the
optional ``wait_for_change`` of ``pixsrc.types.ChangeWaiter``: Dropbox's long poll, Google Drive's
Changes API) also gets a background thread that waits for the provider and only *signals* the main
thread. Every fetch runs on the main thread, through the same ``fetch_source`` as ``pixsrc fetch``
(its lock, its libcurl loop, its run record), one source at a time.

The signal carries a generation: each fetch of a source starts a new one, and a signal from an older
generation is dropped (that fetch already saw the change, or the waiter sees it again: it never
moves the saved cursor, so a change after the last listing keeps being reported until a fetch
lists it).

Stopping: Ctrl-C and SIGTERM raise KeyboardInterrupt on the main thread. A running fetch ends as
``fetch`` ends on Ctrl-C (between assets; ``.part`` files kept, what finished recorded); the watch
then returns 130 for Ctrl-C and 0 for SIGTERM (a requested stop: systemd's ``stop``). Waiter threads
are daemons blocked in HTTP calls; they are told to stop and not waited for.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pixsrc.errors import EXIT_INTERRUPTED, EXIT_OK, PixsrcError
from pixsrc.schedule import MAX_BACKOFF, History, Schedule, backoff, load_histories, schedule

if TYPE_CHECKING:
    from pixsrc.config import Config, Source
    from pixsrc.sync import Report

WAIT_TIMEOUT = 300.0  # seconds one wait_for_change may block (Dropbox long polls 30..480 s)
MAX_SLEEP = 300.0  # the main thread looks at the clock at least this often (a suspended laptop wakes up)
Trigger = Literal["due", "change", "retry"]


@dataclass(frozen=True)
class WatchOptions:
    poll: float = 30.0
    """Seconds between two polls of a provider that can only be polled (Google Drive's Changes API)."""
    first_backoff: timedelta = timedelta(minutes=1)
    """The wait after a failure; it doubles with each failure in a row, up to an hour."""
    jobs: int = 8
    wait_timeout: float = WAIT_TIMEOUT


@dataclass(frozen=True)
class Fetched:
    """One fetch the watch ran: what started it, its report, and the source's schedule after it."""

    source: Source
    trigger: Trigger
    report: Report
    reason: str | None
    dest: Path
    started: datetime
    after: Schedule


@dataclass
class _Slot:
    source: Source
    past: History
    generation: int = 0  # bumped by each fetch; a change signal of an older one is stale
    changed: bool = False
    hold_until: datetime | None = None  # busy (another pixsrc has its lock) or a crash: no record to back off on


@dataclass
class Watch:
    """The loop. ``on_fetch`` hears every fetch, ``on_warning`` every problem (one line each)."""

    config: Config
    sources: list[Source]
    options: WatchOptions
    on_fetch: Callable[[Fetched], None]
    on_warning: Callable[[str], None]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    stop: threading.Event = field(default_factory=threading.Event)
    terminated: bool = False  # stopped by SIGTERM, not Ctrl-C
    _signals: queue.Queue[tuple[str, str, int | str]] = field(default_factory=queue.Queue)
    _turn: threading.Condition = field(default_factory=threading.Condition)
    _slots: dict[str, _Slot] = field(default_factory=dict)

    def run(self) -> int:
        """Watch until Ctrl-C (130) or SIGTERM (0)."""
        from pixsrc.config import state_dir

        root = state_dir()
        past = load_histories(root, [s.id for s in self.sources])
        self._slots = {s.id: _Slot(s, past.get(s.id, History())) for s in self.sources}
        previous = self._install_sigterm()
        try:
            for slot in self._slots.values():
                threading.Thread(target=self._wait_for_changes, args=(slot, root), daemon=True,
                                 name=f"pixsrc-watch-{slot.source.id}").start()
            while True:
                if self._turn_once():
                    break
        except KeyboardInterrupt:
            pass
        finally:
            self.stop.set()
            with self._turn:
                self._turn.notify_all()
            self._restore_sigterm(previous)
        return EXIT_OK if self.terminated else EXIT_INTERRUPTED

    # -- the main thread ----------------------------------------------------------------------

    def _plan(self, slot: _Slot, now: datetime) -> Schedule:
        return schedule(slot.source, self.config.default_interval, slot.past, now,
                        first_backoff=self.options.first_backoff)

    def _turn_once(self) -> bool:
        """Fetch what is due or changed, then sleep until the next thing to do; True: stop."""
        self._drain(block=False)
        for slot in self._slots.values():
            now = self.clock()
            trigger = self._trigger(slot, now)
            if trigger is not None and self._fetch(slot, trigger):
                return True
            self._drain(block=False)
        now = self.clock()
        wake = [t for slot in self._slots.values() if (t := self._next_time(slot, now)) is not None]
        seconds = min([MAX_SLEEP, *((t - now).total_seconds() for t in wake)])
        if seconds > 0:
            self._drain(block=True, timeout=seconds)
        return False

    def _trigger(self, slot: _Slot, now: datetime) -> Trigger | None:
        if slot.hold_until is not None and now < slot.hold_until:
            return None
        plan = self._plan(slot, now)
        if slot.changed and (plan.retry_at is None or now >= plan.retry_at):
            return "change"
        if plan.due:
            return "retry" if plan.failures else "due"
        return None

    def _next_time(self, slot: _Slot, now: datetime) -> datetime | None:
        plan = self._plan(slot, now)
        times = [plan.next_due] if plan.next_due is not None else []
        if slot.changed:
            times.append(plan.retry_at or now)
        if slot.hold_until is not None:
            times = [max(t, slot.hold_until) for t in times]
        return min(times) if times else None

    def _drain(self, *, block: bool, timeout: float = 0.0) -> None:
        """Take the waiters' signals: a change (unless stale) and warnings to show."""
        try:
            kind, source_id, value = self._signals.get(block=block, timeout=timeout if block else None)
        except queue.Empty:
            return
        while True:
            slot = self._slots[source_id]
            if kind == "change" and value == slot.generation:
                slot.changed = True
            elif kind == "warning":
                self.on_warning(str(value))
            try:
                kind, source_id, value = self._signals.get_nowait()
            except queue.Empty:
                return

    def _fetch(self, slot: _Slot, trigger: Trigger) -> bool:
        """One fetch on this thread; True when it was interrupted (the watch stops)."""
        from pixsrc.config import state_dir
        from pixsrc.fetch import destination, fetch_source
        from pixsrc.sync import Options, Report

        source = slot.source
        started = self.clock()
        dest = destination(self.config, source, None, False)
        try:
            report, reason = fetch_source(source, Options(dest=dest, jobs=self.options.jobs), wait=False,
                                          providers=self.config.providers())
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a bug in one source must not end the watch of the others
            report, reason = Report(source.id, status="error"), f"internal error: {type(exc).__name__}: {exc}"
            slot.hold_until = self.clock() + self.options.first_backoff
        with _signals_held():  # a finished fetch is booked and reported whole; a stop comes after
            if report.status == "busy":  # not recorded as a run: wait a little before trying again
                slot.hold_until = self.clock() + self.options.first_backoff
            try:
                slot.past = load_histories(state_dir(), [source.id]).get(source.id, History())
            except Exception as exc:  # the state database is unreadable: the next try waits its backoff
                self.on_warning(f"warning: {source.id}: cannot read its run history: {exc}")
                slot.hold_until = self.clock() + self.options.first_backoff
            slot.changed = False
            with self._turn:  # signals of the waiter from before this fetch are stale now
                slot.generation += 1
                self._turn.notify_all()
            self.on_fetch(Fetched(source, trigger, report, reason, dest, started, self._plan(slot, self.clock())))
        return report.status == "interrupted"

    def _install_sigterm(self) -> tuple[object, int, int, int] | None:
        """SIGTERM raises KeyboardInterrupt like Ctrl-C. While bytes move, the sync engine takes both
        signals over (they set its cancel event), so which one it was is read afterwards from the
        signal wakeup fd, to which Python writes the number of every signal it handles."""
        import signal

        if os.name == "nt" or threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # the running fetch ends as on Ctrl-C: between assets, recorded

        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        old_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        return signal.signal(signal.SIGTERM, handler), old_fd, read_end, write_end

    def _restore_sigterm(self, saved: tuple[object, int, int, int] | None) -> None:
        import signal

        if saved is None:
            return
        previous, old_fd, read_end, write_end = saved
        signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]
        signal.set_wakeup_fd(old_fd)
        with contextlib.suppress(BlockingIOError):  # no signal at all: nothing written
            self.terminated = signal.SIGTERM in os.read(read_end, 4096)
        os.close(read_end)
        os.close(write_end)

    # -- a waiter thread ----------------------------------------------------------------------

    def _post(self, kind: str, source_id: str, value: int | str) -> None:
        self._signals.put((kind, source_id, value))

    def _wait_for_changes(self, slot: _Slot, root: Path) -> None:
        """Run the source's wait_for_change again and again on a controller of its own; signal changes."""
        from pixsrc.fetch import open_controller
        from pixsrc.state import State
        from pixsrc.types import can_wait_for_change

        source_id = slot.source.id
        try:
            state = State(root / "state.db")
        except Exception as exc:
            self._post("warning", source_id, f"warning: {source_id}: cannot read the state database to wait "
                                             f"for changes ({exc}); fetching on its interval only")
            return
        try:
            controller, context = open_controller(slot.source, 1, self.config.providers(), state.cache(source_id),
                                                  self.stop)
        except PixsrcError as exc:
            self._post("warning", source_id, f"warning: {source_id}: cannot wait for changes: {exc.message}; "
                                             "fetching on its interval only")
            state.close()
            return
        try:
            if not can_wait_for_change(controller):
                return
            context.poll_every = self.options.poll
            failures = 0
            while not self.stop.is_set():
                generation = slot.generation
                try:
                    changed = controller.wait_for_change(self.stop, self.options.wait_timeout)  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001 - any failure: say it once, back off, go on
                    if self.stop.is_set():
                        return
                    failures += 1
                    delay = backoff(failures, self.options.first_backoff, MAX_BACKOFF)
                    message = exc.message if isinstance(exc, PixsrcError) else f"{type(exc).__name__}: {exc}"
                    self._post("warning", source_id,
                               f"warning: {source_id}: waiting for changes failed: "
                               f"{message.removeprefix(f'{source_id}: ')}; trying again in "
                               f"{_short(delay)} (fetches go on at the interval)")
                    self.stop.wait(delay.total_seconds())
                    continue
                failures = 0
                if changed and not self.stop.is_set():
                    self._post("change", source_id, generation)
                    self._until_fetched(slot, generation)
        finally:
            controller.close()
            state.close()

    def _until_fetched(self, slot: _Slot, generation: int) -> None:
        """Block a waiter until a fetch of its source has run (it will see the change), or the stop."""
        with self._turn:
            while not self.stop.is_set() and slot.generation == generation:
                self._turn.wait()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait (blocked, then delivered) while the block runs, on the main thread."""
    import signal

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def watchable(config: Config, refs: list[str]) -> tuple[list[Source], list[str]]:
    """The sources to watch (the named ones, else every enabled one) that have an interval, their own
    or ``[defaults] interval``; and a warning for each left out for having none."""
    from pixsrc import registry
    from pixsrc.errors import UsageError
    from pixsrc.fetch import select_sources

    chosen = select_sources(config, refs, all_enabled=not refs)
    kept, warnings = [], []
    for source in chosen:
        registry.of(source)  # a type that is not installed: exit 2 now, not an error every interval
        if source.effective_interval(config.default_interval)[0] is None:
            warnings.append(f"warning: {source.id}: not watched: it has no interval (set one: pixsrc edit "
                            f"{source.id} --interval 6h, or [defaults] interval = \"6h\" in {config.path})")
        else:
            kept.append(source)
    if not kept:
        raise UsageError("nothing to watch: " + ("no enabled sources" if not chosen else
                                                 "none of the sources has an interval"),
                         hint="set one: pixsrc edit SOURCE --interval 6h" if chosen else "see `pixsrc list`")
    return kept, warnings


def _short(span: timedelta) -> str:
    from pixsrc.durations import format_duration

    return format_duration(span).replace(" ", "")
