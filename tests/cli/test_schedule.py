"""Per-source intervals and `fetch --due`: the pure rules of pixsrc.schedule (``now`` passed in), and the
real command against real runs recorded in the state database (their times moved back with SQL
instead of waiting)."""

from __future__ import annotations

import json
import sqlite3
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cli import run

from pixsrc.config import Source
from pixsrc.errors import UsageError
from pixsrc.schedule import History, backoff, history, parse_interval, schedule

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def ago(**span: float) -> float:
    return (NOW - timedelta(**span)).timestamp()


def src(interval: str | None = "6h", source_id: str = "a") -> Source:
    return Source(source_id, source_id.upper(), "local-fs", interval=interval)


# -- the rules, pure -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400)])
def test_intervals_parse(text: str, seconds: int) -> None:
    assert parse_interval(text).total_seconds() == seconds


@pytest.mark.parametrize(("text", "why"), [("10s", "at least 1m"), ("soon", "not a duration"),
                                           ("0m", "longer than zero"), ("", "not a duration")])
def test_bad_intervals_are_refused(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_interval(text, "--interval")


def test_never_fetched_is_due_now() -> None:
    plan = schedule(src(), None, History(), NOW)
    assert plan.due and plan.next_due == NOW and plan.reason == "due"


def test_due_once_the_interval_has_passed_since_the_last_success() -> None:
    plan = schedule(src("6h"), None, History(last_ok=ago(hours=5)), NOW)
    assert not plan.due and plan.reason == "not-yet"
    assert plan.next_due == NOW + timedelta(hours=1)
    assert plan.as_json()["next_due"] == "2026-06-01T13:00:00Z"
    assert schedule(src("6h"), None, History(last_ok=ago(hours=6)), NOW).due


def test_a_minute_early_counts_so_cron_drift_does_not_skip_a_period() -> None:
    assert schedule(src("6h"), None, History(last_ok=ago(hours=5, minutes=59, seconds=5)), NOW).due
    assert not schedule(src("6h"), None, History(last_ok=ago(hours=5, minutes=58)), NOW).due
    # at most a tenth of the interval: 6 s for 1m
    assert schedule(src("1m"), None, History(last_ok=ago(seconds=55)), NOW).due
    assert not schedule(src("1m"), None, History(last_ok=ago(seconds=50)), NOW).due


def test_no_interval_is_never_due_and_the_default_interval_applies() -> None:
    plan = schedule(src(None), None, History(), NOW)
    assert not plan.due and plan.next_due is None and plan.reason == "no-interval"
    plan = schedule(src(None), "1d", History(last_ok=ago(hours=25)), NOW)
    assert plan.due and (plan.interval, plan.interval_from) == ("1d", "defaults")
    own = schedule(src("6h"), "1d", History(last_ok=ago(hours=7)), NOW)
    assert own.due and (own.interval, own.interval_from) == ("6h", "source")


def test_history_only_ok_is_success_partial_fails_interrupted_counts_for_nothing() -> None:
    runs = [{"started_at": ago(hours=10), "ended_at": ago(hours=10), "status": "ok"},
            {"started_at": ago(hours=3), "ended_at": ago(hours=3), "status": "partial"},
            {"started_at": ago(hours=2), "ended_at": ago(hours=2), "status": "interrupted"},
            {"started_at": ago(minutes=2), "ended_at": ago(minutes=1), "status": "unavailable"}]
    assert history(runs) == History(last_ok=ago(hours=10), failures=2, last_failure=ago(minutes=1))
    assert history([*runs, {"started_at": ago(seconds=30), "ended_at": ago(seconds=1), "status": "ok"}]) == \
        History(last_ok=ago(seconds=30))  # a success resets the failures
    assert history([]) == History()


def test_failures_back_off_from_one_minute_doubling_to_an_hour() -> None:
    assert [backoff(n).total_seconds() for n in range(0, 9)] == [0, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff(10_000) == timedelta(hours=1)
    # due by interval (last success 7 h ago), but the third failure in a row ended 3 min ago: wait 4 min
    plan = schedule(src("6h"), None, History(last_ok=ago(hours=7), failures=3, last_failure=ago(minutes=3)), NOW)
    assert not plan.due and plan.reason == "backoff"
    assert plan.next_due == plan.retry_at == NOW + timedelta(minutes=1)
    later = schedule(src("6h"), None, History(last_ok=ago(hours=7), failures=3, last_failure=ago(minutes=4)), NOW)
    assert later.due
    # never a success, one failure: retried after a minute
    assert not schedule(src("6h"), None, History(failures=1, last_failure=ago(seconds=30)), NOW).due
    assert schedule(src("6h"), None, History(failures=1, last_failure=ago(seconds=61)), NOW).due
    # the interval still wins when it is later than the backoff
    recent = schedule(src("6h"), None, History(last_ok=ago(hours=1), failures=1, last_failure=ago(hours=1)), NOW)
    assert recent.next_due == NOW + timedelta(hours=5) and recent.reason == "not-yet"


# -- the setting: add, edit, --set, the file, list/show --------------------------------------------


def config_table(config_file: Path, source_id: str) -> dict:
    return tomllib.loads(config_file.read_text())["sources"][source_id]


def add_local(folder: Path, name: str, *args: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = run("add", "local-fs", "--name", name, "--set", f"path={folder}", "--no-input", *args)
    assert result.exit_code == 0, result.stderr


def test_interval_is_a_key_of_the_source_table_set_by_flag_or_reserved_set(config_file: Path, tmp_path: Path) -> None:
    add_local(tmp_path / "a", "A", "--interval", "6h")
    add_local(tmp_path / "b", "B", "--set", "interval=30m")
    assert config_table(config_file, "a")["interval"] == "6h"
    assert "interval" not in config_table(config_file, "a")["config"]
    assert config_table(config_file, "b")["interval"] == "30m"
    assert run("edit", "a", "--set", "interval=1d").exit_code == 0
    assert config_table(config_file, "a")["interval"] == "1d"
    assert run("edit", "a", "--interval", "").exit_code == 0
    assert "interval" not in config_table(config_file, "a")
    assert run("edit", "b", "--unset", "interval").exit_code == 0
    assert "interval" not in config_table(config_file, "b")
    before = config_file.read_bytes()
    contradiction = run("edit", "b", "--interval", "6h", "--unset", "interval")  # was: silently nothing
    assert contradiction.exit_code == 2 and "contradict" in contradiction.stderr
    assert config_file.read_bytes() == before

    bad = run("edit", "a", "--interval", "10s")
    assert bad.exit_code == 2 and "--interval '10s': at least 1m" in bad.stderr
    bad = run("add", "local-fs", "--name", "C", "--set", f"path={tmp_path}", "--set", "interval=often", "--no-input")
    assert bad.exit_code == 2 and "'often': not a duration" in bad.stderr
    assert "c" not in tomllib.loads(config_file.read_text())["sources"]
    both = run("edit", "a", "--interval", "1h", "--set", "interval=2h")
    assert both.exit_code == 2 and "given twice" in both.stderr


def test_a_bad_interval_in_the_file_names_file_source_and_value(config_file: Path, tmp_path: Path) -> None:
    add_local(tmp_path / "a", "A", "--interval", "6h")
    config_file.write_text(config_file.read_text().replace('interval = "6h"', 'interval = "6 hours-ish"'))
    result = run("list")
    assert result.exit_code == 2
    assert f"{config_file}: sources.a.interval '6 hours-ish': not a duration" in result.stderr
    config_file.write_text(config_file.read_text().replace('interval = "6 hours-ish"', "interval = 6"))
    result = run("fetch", "--due")
    assert result.exit_code == 2 and "sources.a.interval: must be a duration string" in result.stderr
    config_file.write_text(config_file.read_text().replace("interval = 6", 'interval = "6h"')
                           + '\n[defaults]\ninterval = "5s"\n')
    result = run("list")
    assert result.exit_code == 2 and "defaults.interval '5s': at least 1m" in result.stderr


def test_list_show_and_json_give_the_own_and_the_effective_interval(config_file: Path, tmp_path: Path) -> None:
    add_local(tmp_path / "a", "A", "--interval", "6h")
    add_local(tmp_path / "b", "B")
    table = run("list")
    assert table.stdout.splitlines()[0].split() == ["ID", "NAME", "TYPE", "ENABLED", "INTERVAL", "DEST"]
    assert table.stdout.splitlines()[1].split()[4] == "6h"
    rows = {r["id"]: r for r in json.loads(run("list", "--json").stdout)}
    assert (rows["a"]["interval"], rows["a"]["effective_interval"]) == ("6h", "6h")
    assert (rows["b"]["interval"], rows["b"]["effective_interval"]) == (None, None)

    config_file.write_text(config_file.read_text() + '\n[defaults]\ninterval = "1d"\n')
    rows = {r["id"]: r for r in json.loads(run("list", "--json").stdout)}
    assert (rows["b"]["interval"], rows["b"]["effective_interval"]) == (None, "1d")
    assert "1d (default)" in run("list").stdout
    shown = json.loads(run("show", "b", "--json").stdout)
    assert (shown["interval"], shown["effective_interval"]) == (None, "1d")
    assert "interval: 1d (default)" in run("show", "b").stdout
    assert "interval: 6h" in run("show", "a").stdout


# -- fetch --due, end to end ---------------------------------------------------------------------------


def fetch_due(*args: str, code: int = 0) -> tuple[dict[str, dict], str]:
    result = run("fetch", "--due", "--json", *args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return {entry["source"]: entry for entry in json.loads(result.stdout)["sources"]}, result.stderr


def shift_runs(state_path: Path, source_id: str, **span: float) -> None:
    """Move the source's recorded runs back in time, as if they had happened that long ago."""
    seconds = timedelta(**span).total_seconds()
    db = sqlite3.connect(state_path / "state.db")
    with db:
        for table in ("runs", "run_details"):
            columns = "started_at = started_at - ?" + (", ended_at = ended_at - ?" if table == "runs" else "")
            values = (seconds, seconds) if table == "runs" else (seconds,)
            db.execute(f"UPDATE {table} SET {columns} WHERE source = ?", (*values, source_id))
    db.close()


def test_fetch_due_fetches_what_is_due_and_reports_the_rest(config_file: Path, tmp_path: Path,
                                                           state_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.jpg").write_bytes(b"one")
    add_local(tmp_path / "a", "A", "--interval", "6h", "--dest", str(tmp_path / "out-a"))
    add_local(tmp_path / "b", "B", "--dest", str(tmp_path / "out-b"))  # no interval: never due

    first, err = fetch_due()
    assert first["a"]["status"] == "ok" and first["a"]["downloaded"] == 1
    assert first["b"] == {"source": "b", "status": "not-due", "next_due": None, "reason": "no-interval",
                          "interval": None, "interval_from": None, "last_ok": None, "failures": 0}
    assert "b: no interval, so never due (set one: pixsrc edit b --interval 6h" in err
    assert (tmp_path / "out-a" / "one.jpg").read_bytes() == b"one"

    (tmp_path / "a" / "two.jpg").write_bytes(b"two")
    second, err = fetch_due()
    assert second["a"]["status"] == "not-due" and second["a"]["reason"] == "not-yet"
    last_ok = datetime.fromisoformat(second["a"]["last_ok"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - last_ok) < timedelta(minutes=1)
    assert second["a"]["next_due"] == (last_ok + timedelta(hours=6)).isoformat().replace("+00:00", "Z")
    assert f"a: not due until {second['a']['next_due']} (every 6h)" in err
    assert not (tmp_path / "out-a" / "two.jpg").exists()

    shift_runs(state_path, "a", hours=6)
    third, _ = fetch_due()
    assert third["a"]["status"] == "ok" and third["a"]["downloaded"] == 1
    assert (tmp_path / "out-a" / "two.jpg").read_bytes() == b"two"


def test_fetch_due_with_sources_and_with_all(config_file: Path, tmp_path: Path, state_path: Path) -> None:
    for name in ("a", "b", "c"):
        add_local(tmp_path / name, name.upper(), "--interval", "1h", "--dest", str(tmp_path / f"out-{name}"))
    assert run("disable", "c").exit_code == 0
    assert set(fetch_due("a")[0]) == {"a"}  # only the named one, due: fetched
    named, _ = fetch_due("a", "b")
    assert (named["a"]["status"], named["b"]["status"]) == ("not-due", "ok")
    shift_runs(state_path, "b", hours=2)
    everything, _ = fetch_due("--all")  # --all and --due: every enabled source, if due
    assert set(everything) == {"a", "b"}  # c is disabled
    assert (everything["a"]["status"], everything["b"]["status"]) == ("not-due", "ok")
    alone, _ = fetch_due()
    assert {e["status"] for e in alone.values()} == {"not-due"}
    quiet = run("-q", "fetch", "--due")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""  # the cron line says nothing


def test_fetch_due_uses_the_default_interval(config_file: Path, tmp_path: Path, state_path: Path) -> None:
    add_local(tmp_path / "a", "A", "--dest", str(tmp_path / "out"))
    config_file.write_text(config_file.read_text() + '\n[defaults]\ninterval = "2h"\n')
    assert fetch_due()[0]["a"]["status"] == "ok"
    again = fetch_due()[0]["a"]
    assert (again["status"], again["interval"], again["interval_from"]) == ("not-due", "2h", "defaults")


def test_a_failing_source_stays_due_but_backs_off(config_file: Path, tmp_path: Path, state_path: Path) -> None:
    add_local(tmp_path / "a", "A", "--interval", "1h", "--dest", str(tmp_path / "out"))
    (tmp_path / "a").rmdir()  # the folder is gone: the fetch fails (exit 4)
    failed, _ = fetch_due(code=4)
    assert failed["a"]["status"] == "unavailable"
    waiting, err = fetch_due()  # a minute's backoff: not tried on the next cron tick
    assert (waiting["a"]["status"], waiting["a"]["reason"], waiting["a"]["failures"]) == ("not-due", "backoff", 1)
    assert "a: not due: 1 failed fetch(es) in a row; next try at" in err
    shift_runs(state_path, "a", minutes=1, seconds=1)
    assert fetch_due(code=4)[0]["a"]["status"] == "unavailable"
    shift_runs(state_path, "a", minutes=1, seconds=1)
    assert fetch_due()[0]["a"]["reason"] == "backoff"  # the second failure in a row waits 2 min
    shift_runs(state_path, "a", minutes=1)
    (tmp_path / "a").mkdir()
    assert fetch_due()[0]["a"]["status"] == "ok"  # back: the failures are forgotten
    assert fetch_due()[0]["a"]["reason"] == "not-yet"


def test_a_bug_during_a_fetch_is_recorded_as_an_error_not_a_success(config_file: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception (a bug) must not leave an "ok" run behind: `fetch --due` would skip the source."""
    from pixsrc.sources.local_fs import LocalFsController

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"a")
    added = run("add", "local-fs", "--name", "Inbox", "--interval", "1h", "--set", f"path={tmp_path / 'in'}")
    assert added.exit_code == 0, added.stderr

    def broken(self: LocalFsController) -> None:
        raise RuntimeError("a bug")

    with monkeypatch.context() as patch:
        patch.setattr(LocalFsController, "list_assets", broken)
        result = run("fetch", "inbox", "--dest", str(tmp_path / "out"))
    assert result.exit_code == 1 and "internal error: RuntimeError: a bug" in result.stderr
    due = run("fetch", "--due", "--dest", str(tmp_path / "out"), "--json")
    [report] = json.loads(due.stdout)["sources"]
    # a failure backs off for a minute; a success would have made it not due for the whole hour
    assert report["status"] == "not-due" and report["failures"] == 1, report
