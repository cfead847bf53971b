"""What ``pixsrc fetch`` shows while it runs: a live display, plain lines, or nothing; and ``-v``'s lines.

Only when stderr is a terminal (and not ``-q``): Rich draws a live display (assets found while the
listing pages arrive; then files and bytes done of total, speed, ETA and what is in flight, as
``rclone -P``). ``NO_COLOR`` or ``TERM=dumb`` get a plain line every few seconds instead, with no
cursor movement or escape codes. A pipe or a file (cron) gets no progress at all.

The engine's hooks run on the transfer loop's thread, per asset or per received chunk, so they only
add to counters; the drawing happens at most ten times a second (Rich's refresh), or once per plain
line. Rich is imported only when a live display is drawn.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pixsrc.durations import human_size

if TYPE_CHECKING:
    from pixsrc.sync import Outcome

SPEED_WINDOW = 5.0  # seconds of samples behind the current speed
PLAIN_INTERVAL = 2.0  # seconds between plain lines; $PIXSRC_PROGRESS_INTERVAL changes it
IN_FLIGHT_NAMES = 3


def duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def plain_terminal() -> bool:
    """NO_COLOR (non-empty, as no-color.org says) or a dumb terminal: lines, never a redrawn display."""
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


def for_terminal(source_id: str) -> Tally | None:
    """The progress display this terminal gets for one source, or None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None
    if plain_terminal():
        return PlainProgress(source_id, _interval())
    return LiveProgress(source_id)


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("PIXSRC_PROGRESS_INTERVAL", PLAIN_INTERVAL)))
    except ValueError:
        return PLAIN_INTERVAL


class Tally:
    """The counters a run's hooks feed, and the numbers drawn from them.

    ``found``, ``start``, ``add_bytes`` and ``outcome`` are the engine's hooks: each only counts.
    The planned byte total follows what the transfers turn out to need (a 304 moves nothing, a
    resume only the rest), so done meets total at the end.
    """

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.listed = 0
        self.checked = 0  # settled before any transfer: unchanged, renamed, conflicts, gone
        self.planned: int | None = None  # files to transfer, once the plan is known
        self.total_bytes = 0
        self.files = 0
        self.bytes = 0
        self.in_flight: dict[str, int] = {}  # path -> planned size, oldest first
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def print(self, line: str) -> None:
        """A line for the person (``-v``), above the display where there is one."""
        from pixsrc.cli.common import warn

        warn(line)

    # -- the engine's hooks ------------------------------------------------------------------

    def found(self, n: int) -> None:
        self.listed = n

    def plan(self, files: int, size: int) -> None:
        self.planned, self.total_bytes = files, size
        self._samples.append((time.monotonic(), self.bytes))

    def start(self, path: str, size: int | None) -> None:
        self.in_flight[path] = size or 0

    def add_bytes(self, n: int) -> None:
        self.bytes += n

    def outcome(self, outcome: Outcome) -> None:
        if self.planned is None:
            self.checked += 1
            return
        self.files += 1
        planned = self.in_flight.pop(outcome.path, None)
        if planned is not None:
            self.total_bytes += outcome.bytes - planned

    # -- what is shown -----------------------------------------------------------------------

    def speed(self) -> float:
        """Bytes per second over the last few seconds (a sample is taken each time it is asked)."""
        now, samples = time.monotonic(), self._samples
        samples.append((now, self.bytes))
        while len(samples) > 1 and samples[1][0] <= now - SPEED_WINDOW:
            samples.popleft()
        then, before = samples[0]
        return (self.bytes - before) / (now - then) if now > then else 0.0

    def numbers(self) -> tuple[str, str, str, str]:
        """Files done of total, bytes done of total, speed, ETA."""
        speed = self.speed()
        planned = self.planned or 0
        total = max(self.total_bytes, self.bytes)
        files = f"{self.files}/{planned} files"
        # a web server's listing often gives no sizes: the total then only follows what is done
        sized = total > self.bytes or self.files >= planned
        size = f"{human_size(self.bytes)}/{human_size(total)}" if sized else human_size(self.bytes)
        if self.files >= planned:
            eta = "0s"
        elif sized and speed > 0:
            eta = duration((total - self.bytes) / speed)
        elif self.files:  # by files: the time per file so far
            eta = duration((planned - self.files) * (time.monotonic() - self.started) / self.files)
        else:
            eta = "-"
        return files, size, f"{human_size(speed)}/s", f"ETA {eta}"

    def listing(self) -> str:
        if self.checked:  # the listing is over: the plan settles what needs no transfer
            return f"{self.listed} found, {self.checked} checked"
        return f"listing: {self.listed} found"

    def line(self) -> str:
        if self.planned is None:
            return f"{self.source_id}: {self.listing()}"
        return f"{self.source_id}: " + ", ".join(self.numbers())


class PlainProgress(Tally):
    """A line every ``interval`` seconds, checked from the hooks: no thread, no escape codes."""

    def __init__(self, source_id: str, interval: float) -> None:
        super().__init__(source_id)
        self.interval = interval
        self._next = self.started + interval

    def _tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            print(self.line(), file=sys.stderr, flush=True)

    def found(self, n: int) -> None:
        self.listed = n
        self._tick()

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        self._tick()

    def outcome(self, outcome: Outcome) -> None:
        super().outcome(outcome)
        self._tick()


class LiveProgress(Tally):
    """Rich's live display on stderr, redrawn ten times a second by Rich's own thread.

    That thread only reads the counters; ``-v`` lines and warnings print above the display.
    """

    def __init__(self, source_id: str) -> None:
        super().__init__(source_id)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        # stdout is redirected through the display only when it is the same terminal: piped data
        # (--dry-run's lines) must stay on stdout
        self._live = Live(console=self.console, get_renderable=self._render, refresh_per_second=10,
                          transient=True, redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)

    def __enter__(self) -> LiveProgress:
        self._live.start(refresh=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def print(self, line: str) -> None:
        from pixsrc.redact import redact

        self.console.print(redact(line), markup=False, highlight=False, emoji=False, soft_wrap=True)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        elapsed = clock(time.monotonic() - self.started)
        grid = Table.grid(padding=(0, 1))
        if self.planned is None:
            grid.add_row(Spinner("dots", style="cyan"), Text(self.source_id, style="bold"),
                         Text(self.listing()), Text(elapsed, style="dim"))
            return grid
        files, size, speed, eta = self.numbers()
        bar = ProgressBar(total=max(self.planned, 1), completed=self.files, width=24)
        grid.add_row(Text(self.source_id, style="bold"), bar, Text(files), Text(size, style="green"),
                     Text(speed, style="red"), Text(eta, style="cyan"), Text(elapsed, style="dim"))
        names = list(self.in_flight)  # one C-level copy: the engine's thread may change the dict meanwhile
        if not names:
            return grid
        shown = ", ".join(names[:IN_FLIGHT_NAMES])
        more = f" and {len(names) - IN_FLIGHT_NAMES} more" if len(names) > IN_FLIGHT_NAMES else ""
        return Group(grid, Text(f"  fetching {shown}{more}", style="dim", no_wrap=True, overflow="ellipsis"))


def asset_line(source_id: str, outcome: Outcome) -> str | None:
    """``-v``'s line for one asset (``inbox: new 2024/a.jpg (1.2 MB)``); None for an unchanged one."""
    action, path = outcome.action, outcome.path
    size = outcome.size if outcome.size is not None else outcome.bytes
    sized = f" ({human_size(size)})" if size else ""
    if action == "unchanged":
        return f"{source_id}: adopted {path}{sized}" if outcome.adopted else None
    if action == "downloaded":
        return f"{source_id}: new {path}{sized}"
    if action in ("updated", "renamed"):
        return f"{source_id}: {action} {path}{sized if action == 'updated' else ''}"
    if action in ("conflict", "skipped"):
        return f"{source_id}: skipped {path}: {outcome.error or 'changed locally'}"
    if action == "deleted":  # gone at the source; the local file stays (see the reason)
        reason = outcome.error or "deleted at the source; changed locally or behind a symlink, so kept"
        return f"{source_id}: gone {path} ({reason})"
    if action == "pruned":
        return f"{source_id}: pruned {path}"
    if action == "failed":
        return f"{source_id}: failed {path}: {outcome.error}"
    return None
