"""When a source is due: its interval, its run history and the time now.

``fetch --due`` (one cron line for every source) and ``pixsrc watch`` ask the same question, so it is
answered once, here, by pure functions; ``now`` is always a parameter. Only ``load_histories`` reads
the state database.

The rules (README, "Scheduled fetches"):

* A source's ``interval`` (``[sources.<id>] interval = "6h"``), else ``[defaults] interval``; a source
  with neither is never due.
* Due when its newest fetch that ended ``ok`` *started* at least one interval ago; never fetched
  successfully: due now. A minute early counts (at most a tenth of the interval): cron starts a few
  seconds late, and being that little early must not cost a whole cron period.
* Only ``ok`` is success. A run that failed or ended ``partial`` (some assets failed) leaves the source
  due, but it is tried again only after a backoff: 1 min after the failed run ended, doubling with
  each further failure up to 1 h. So an asset that always fails, or a revoked sign-in, costs one
  fetch an hour instead of one per cron tick. Interrupted runs (Ctrl-C, SIGTERM) count for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixsrc.durations import FORMS, HINT, parse_duration, rfc3339
from pixsrc.errors import UsageError

if TYPE_CHECKING:
    from pixsrc.config import Config, IntervalOrigin, Source

MIN_INTERVAL = timedelta(minutes=1)
MAX_SLACK = timedelta(minutes=1)
FIRST_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(hours=1)
SUCCESS = "ok"
NOT_COUNTED = frozenset({"interrupted", "busy"})  # stopped by the person (or another pixsrc), not failed


def parse_interval(text: str, name: str = "interval") -> timedelta:
    """A source's interval: a duration (``30m``, ``6h``, ``1d``) of at least a minute."""
    span = parse_duration(text, name)
    if span < MIN_INTERVAL:
        raise UsageError(f"{name} {text!r}: at least 1m (for changes within seconds, use `pixsrc watch`)",
                         hint=f"use e.g. {FORMS}; {HINT}")
    return span


@dataclass(frozen=True)
class History:
    """What the run history says about one source, as far as scheduling cares (times: time.time())."""

    last_ok: float | None = None
    """When the newest run that ended ok started."""
    failures: int = 0
    """Runs after that one that failed or ended partial."""
    last_failure: float | None = None
    """When the newest of those ended."""


def history(runs: Iterable[Mapping[str, Any]]) -> History:
    """Fold runs (``State.runs`` rows: ``started_at``, ``ended_at``, ``status``; oldest first)."""
    last_ok, failures, last_failure = None, 0, None
    for run in runs:
        status = run["status"]
        if status == SUCCESS:
            last_ok, failures, last_failure = float(run["started_at"]), 0, None
        elif status not in NOT_COUNTED:
            failures += 1
            last_failure = float(run["ended_at"])
    return History(last_ok, failures, last_failure)


def backoff(failures: int, first: timedelta = FIRST_BACKOFF, cap: timedelta = MAX_BACKOFF) -> timedelta:
    """The wait after the ``failures``-th failure in a row: ``first``, doubling, at most ``cap``."""
    if failures <= 0:
        return timedelta(0)
    return min(cap, first * (1 << min(failures - 1, 32)))


def _at(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


@dataclass(frozen=True)
class Schedule:
    source: str
    interval: str | None
    interval_from: IntervalOrigin | None
    last_ok: datetime | None
    failures: int
    retry_at: datetime | None
    """Not before: the end of the backoff after failed runs (None: no failures)."""
    next_due: datetime | None
    """When it is (or was) due; None: no interval, never due."""
    due: bool

    @property
    def reason(self) -> str:
        """Why it is not due, in a few words (or "due")."""
        if self.due:
            return "due"
        if self.interval is None:
            return "no-interval"
        if self.retry_at is not None and self.retry_at == self.next_due:
            return "backoff"
        return "not-yet"

    def as_json(self) -> dict[str, Any]:
        """A ``fetch --due --json`` entry for a source that was not fetched."""
        return {"source": self.source, "status": "not-due", "next_due": rfc3339(self.next_due),
                "reason": self.reason, "interval": self.interval, "interval_from": self.interval_from,
                "last_ok": rfc3339(self.last_ok), "failures": self.failures}


def describe(plan: Schedule) -> str:
    """One line for the person about a source that is not fetched now."""
    if plan.interval is None:
        return (f"{plan.source}: no interval, so never due (set one: pixsrc edit {plan.source} --interval 6h, "
                "or [defaults] interval in the config file)")
    when = rfc3339(plan.next_due)
    if plan.reason == "backoff":
        return f"{plan.source}: not due: {plan.failures} failed fetch(es) in a row; next try at {when}"
    return f"{plan.source}: not due until {when} (every {plan.interval})"


def schedule(source: Source, default_interval: str | None, past: History, now: datetime, *,
             first_backoff: timedelta = FIRST_BACKOFF) -> Schedule:
    """Whether ``source`` is due at ``now``, and when it is next (see the module's rules)."""
    text, origin = source.effective_interval(default_interval)
    last_ok = _at(past.last_ok)
    retry_at = None
    if past.failures and past.last_failure is not None:
        retry_at = _at(past.last_failure + backoff(past.failures, first_backoff).total_seconds())
    if text is None:
        return Schedule(source.id, None, None, last_ok, past.failures, retry_at, None, False)
    interval = parse_interval(text, f"sources.{source.id}.interval")
    next_due = last_ok + interval if last_ok is not None else now
    if retry_at is not None and retry_at > next_due:
        next_due = retry_at
    slack = min(MAX_SLACK, interval / 10) if next_due != retry_at else timedelta(0)
    return Schedule(source.id, text, origin, last_ok, past.failures, retry_at, next_due, now >= next_due - slack)


def plan(config: Config, sources: Iterable[Source], histories: Mapping[str, History], now: datetime, *,
         first_backoff: timedelta = FIRST_BACKOFF) -> list[Schedule]:
    """The schedule of each of ``sources``, in their order."""
    return [schedule(s, config.default_interval, histories.get(s.id, History()), now, first_backoff=first_backoff)
            for s in sources]


def load_histories(state_dir: Path, source_ids: Iterable[str]) -> dict[str, History]:
    """Each source's History from the state database (none yet: empty ones; the file is not created)."""
    ids = list(source_ids)
    db = state_dir / "state.db"
    if not db.exists():
        return {}
    from pixsrc.state import State

    state = State(db)
    try:
        last_ok = state.last_runs("ok")
        return {sid: history(state.runs(sid, since=last_ok[sid].started_at if sid in last_ok else None))
                for sid in ids}
    finally:
        state.close()


def due_sources(config: Config, sources: list[Source], state_dir: Path,
                now: datetime | None = None) -> tuple[list[Source], list[Schedule]]:
    """``fetch --due``: of ``sources``, the ones due now, and the schedules of the others."""
    now = now or datetime.now(UTC)
    plans = plan(config, sources, load_histories(state_dir, [s.id for s in sources]), now)
    due = [s for s, p in zip(sources, plans, strict=True) if p.due]
    return due, [p for p in plans if not p.due]
