"""What the run history says about each source: the core of ``pixsrc stats``.

Every fetch that is not a dry run records a run (``State.add_run``); ``collect`` sums them per
source over a window and adds each source's latest run, success and error of all time, so that
"when did this last work?" has an answer whatever the window. It returns the ``--json`` object;
the CLI draws its table and chart from the same object. Error messages were masked when they
were recorded and are masked again here (a secret this process knows may be in an old one).
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pixsrc.config import state_dir
from pixsrc.durations import rfc3339
from pixsrc.errors import UsageError
from pixsrc.redact import redact

if TYPE_CHECKING:
    from pixsrc.config import Config
    from pixsrc.state import RunSummary, RunTotals

SCHEMA = 1


def collect(config: Config, ref: str | None = None, since: timedelta | None = None,
            now: float | None = None) -> dict[str, Any]:
    """The stats of one source (``ref``: id or name) or of all, for the runs started in the last ``since``.

    All of them means every configured source, and every removed one that ran in the window. A
    removed source is also found by its id when named; a name nobody ever used is exit 2.
    """
    from pixsrc.state import State

    now = time.time() if now is None else now
    start = now - since.total_seconds() if since is not None else None
    db = state_dir() / "state.db"
    totals: list[RunTotals] = []
    last: dict[str, RunSummary] = {}
    last_ok: dict[str, RunSummary] = {}
    last_bad: dict[str, RunSummary] = {}
    state = State(db) if db.exists() else None  # stats alone never creates the state folder
    try:
        if state is not None:
            totals, last = state.run_totals(start), state.last_runs()
            last_ok, last_bad = state.last_runs("ok"), state.last_runs("not-ok")
        ids = _chosen(config, ref, set(last), {t.source for t in totals})
        per_day = state.runs_per_day(ids, start) if state is not None else []
    finally:
        if state is not None:
            state.close()
    sources = [_source(config, source_id, [t for t in totals if t.source == source_id], last.get(source_id),
                       last_ok.get(source_id), last_bad.get(source_id)) for source_id in ids]
    return {"schema": SCHEMA, "since": rfc3339(start), "until": rfc3339(now), "sources": sources,
            "days": _days(per_day, start, now)}


def _chosen(config: Config, ref: str | None, known: set[str], in_window: set[str]) -> list[str]:
    if ref is not None:
        try:
            return [config.find(ref).id]
        except UsageError:
            if ref in known:  # removed from the config; its history is still there
                return [ref]
            raise
    return [*config.sources, *sorted(in_window - set(config.sources))]


def _source(config: Config, source_id: str, totals: list[RunTotals], last: RunSummary | None,
            last_ok: RunSummary | None, last_bad: RunSummary | None) -> dict[str, Any]:
    source = config.sources.get(source_id)
    runs = sum(t.runs for t in totals)
    successes = sum(t.runs for t in totals if t.status == "ok")
    seconds = sum(t.seconds for t in totals)
    return {
        "id": source_id,
        "name": source.name if source else None,
        "type": source.type if source else None,
        "configured": source is not None,
        "enabled": source.enabled if source else None,
        "runs": runs,
        "successes": successes,
        "failures": runs - successes,
        "by_status": {t.status: t.runs for t in sorted(totals, key=lambda t: (t.status != "ok", t.status))},
        "assets": {key: sum(getattr(t, key) for t in totals)
                   for key in ("downloaded", "updated", "failed", "deleted", "pruned")},
        "bytes": sum(t.bytes for t in totals),
        "mean_seconds": round(seconds / runs, 3) if runs else None,
        "last_run": _run(last, status=True) if last else None,
        "last_success": _run(last_ok) if last_ok else None,
        "last_error": {**_run(last_bad, status=True), "message": redact(last_bad.error or "") or None}
        if last_bad else None,
    }


def _run(run: RunSummary, status: bool = False) -> dict[str, Any]:
    shown: dict[str, Any] = {"at": rfc3339(run.started_at), "seconds": round(run.ended_at - run.started_at, 3)}
    if status:
        shown["status"] = run.status
    return shown


def _days(per_day: list[tuple[str, int, int]], start: float | None, now: float) -> list[dict[str, Any]]:
    """Every local date of the window, gaps as zeros; from the first recorded day when the window has
    no start or is longer than a year (`--since 100w` lists no decades of zeros)."""
    found = {day: (runs, size) for day, runs, size in per_day}
    today = datetime.fromtimestamp(now).date()
    recorded = date.fromisoformat(per_day[0][0]) if per_day else None
    first = datetime.fromtimestamp(start).date() if start is not None else recorded
    if first is not None and (today - first).days > 366:
        first = recorded
    if first is None:
        return []
    days = []
    for n in range((today - first).days + 1):
        day = (first + timedelta(days=n)).isoformat()
        runs, size = found.get(day, (0, 0))
        days.append({"date": day, "runs": runs, "bytes": size})
    return days
