"""The state database shared by processes and threads: opening a new one together must not fail."""

from __future__ import annotations

import threading
from pathlib import Path

from pixsrc.state import State


def test_several_openers_of_a_new_database_all_succeed(tmp_path: Path) -> None:
    """Switching a new database to WAL is answered "database is locked" at once when another
    connection is opening it too (watch's threads, two cron jobs): every opener must still get in."""
    failures: list[str] = []
    for attempt in range(100):
        path = tmp_path / f"{attempt}" / "state.db"
        gate = threading.Barrier(4)

        def open_and_write(n: int, path: Path = path, gate: threading.Barrier = gate) -> None:
            gate.wait()
            try:
                state = State(path)
                state.add_run(f"s{n}", float(n), "ok", 0, {})
                state.close()
            except Exception as exc:  # noqa: BLE001 - the test reports every kind of failure
                failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        state = State(path)
        assert len(state.runs()) + len(failures) >= 4
        state.close()
    assert failures == []
