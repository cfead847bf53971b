"""Durations as people type them: ``30m``, ``6h``, ``7d``, ``2w``, ``1h30m``, ``1.5h``.

One syntax for every flag and setting that takes a span of time (``stats --since``, a source's
``interval``), and one compact way to print one. No months or years: their length varies. Sizes
too are written one way everywhere (``human_size``): decimal units, as fetch, stats and doctor show them;
and moments (``rfc3339``): UTC to the second, as every ``--json`` field and status line shows them.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import overload

from pixsrc.errors import UsageError

UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
FORMS = "30m, 6h, 7d, 2w"
HINT = "a number and a unit (s, m, h, d, w), or several of them: 1h30m"
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
LONGEST = timedelta(weeks=100 * 52)  # a century: any longer, dates computed from it leave the calendar


def parse_duration(text: str, name: str = "duration") -> timedelta:
    """``text`` as a positive timedelta; ``name`` (a flag or a setting) leads the error message."""
    seconds = 0.0
    pos = 0
    stripped = text.strip()
    while pos < len(stripped):
        match = _PART.match(stripped, pos)
        if match is None:
            break
        seconds += float(match[1]) * UNITS[match[2].lower()]
        pos = match.end()
    if not stripped or pos < len(stripped):
        raise UsageError(f"{name} {text!r}: not a duration (use e.g. {FORMS})", hint=HINT)
    if seconds <= 0:
        raise UsageError(f"{name} {text!r}: must be longer than zero (use e.g. {FORMS})", hint=HINT)
    if seconds > LONGEST.total_seconds():
        raise UsageError(f"{name} {text!r}: too long, at most 100 years (use e.g. {FORMS})", hint=HINT)
    return timedelta(seconds=seconds)


def format_duration(span: timedelta | float) -> str:
    """Compact and readable: ``0.4s``, ``12s``, ``1m 5s``, ``3h 2m``, ``2d 4h``, ``2w 1d``.

    Under 10 s to a tenth, else the largest unit and the next one down; always rounded down: a
    glance, not a stopwatch. From 0.1 s up the result parses back with ``parse_duration``."""
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 10:
        return f"{sign}{math.floor(seconds * 10) / 10:.1f}s"
    whole = int(seconds)
    units = list(UNITS.items())
    for i, (unit, size) in enumerate(units):
        if whole >= size:
            count, rest = divmod(whole, size)
            text = f"{count}{unit}"
            if i + 1 < len(units) and (second := rest // units[i + 1][1]):
                text += f" {second}{units[i + 1][0]}"
            return sign + text
    raise AssertionError("unreachable: 10 s or more has a unit")  # pragma: no cover


@overload
def rfc3339(when: None) -> None: ...
@overload
def rfc3339(when: datetime | float) -> str: ...
def rfc3339(when: datetime | float | None) -> str | None:
    """``2026-12-02T05:07:29Z``: a moment (an aware datetime, or seconds since the epoch) in UTC."""
    if when is None:
        return None
    moment = when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def human_size(n: float) -> str:
    """``512 B``, ``1.5 KB``, ``20.5 MB``: decimal units (1 KB = 1000 B), as disks and networks count."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover
