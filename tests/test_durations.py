"""The one duration syntax: ``--since`` now, ``interval`` settings later."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pixsrc.durations import format_duration, parse_duration
from pixsrc.errors import EXIT_USAGE, UsageError


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", timedelta(minutes=30)),
    ("6h", timedelta(hours=6)),
    ("7d", timedelta(days=7)),
    ("2w", timedelta(weeks=2)),
    ("45s", timedelta(seconds=45)),
    ("1h30m", timedelta(minutes=90)),
    (" 1h 30m ", timedelta(minutes=90)),
    ("1.5h", timedelta(minutes=90)),
    ("2D", timedelta(days=2)),
])
def test_accepted_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("", "not a duration"),
    ("7", "not a duration"),  # a number alone: minutes? days? say so instead of guessing
    ("7x", "not a duration"),
    ("d", "not a duration"),
    ("-1d", "not a duration"),
    ("1 week", "not a duration"),
    ("7d later", "not a duration"),
    ("1e3s", "not a duration"),
    ("0d", "must be longer than zero"),
    ("0h0m", "must be longer than zero"),
    ("9" * 20 + "w", "too long"),
])
def test_rejected_forms_name_the_value_and_the_forms(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration(text, "sources.inbox.interval")
    error = caught.value
    assert error.exit_code == EXIT_USAGE
    assert error.message.startswith(f"sources.inbox.interval {text!r}: {problem}")
    assert "30m, 6h, 7d, 2w" in error.message
    assert error.hint is not None and "1h30m" in error.hint


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.04, "0.0s"),
    (0.36, "0.3s"),
    (9.99, "9.9s"),
    (12.7, "12s"),
    (65, "1m 5s"),
    (3600, "1h"),
    (3725, "1h 2m"),
    (2 * 86400 + 4 * 3600 + 59, "2d 4h"),
    (15 * 86400, "2w 1d"),
    (70 * 86400, "10w"),
])
def test_format(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
    assert format_duration(timedelta(seconds=seconds)) == shown


@pytest.mark.parametrize("seconds", [0.25, 3.2, 12, 65, 3725, 187205, 1296000])
def test_format_parses_back_to_within_its_rounding(seconds: float) -> None:
    back = parse_duration(format_duration(seconds)).total_seconds()
    assert back <= seconds < back * 1.05 + 1
