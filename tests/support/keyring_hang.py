"""A keyring backend that never answers, like a locked keyring waiting for an unseen prompt.

Select it with ``PYTHON_KEYRING_BACKEND=keyring_hang.HangingKeyring`` (tests/support on sys.path
or PYTHONPATH). Each call blocks forever; ``CALLS_FILE`` (env ``KEYRING_HANG_CALLS``) gets one line
per call, so a test can tell the backend was really reached.
"""

from __future__ import annotations

import os
import threading

from keyring.backend import KeyringBackend

_forever = threading.Event()


def _hang(what: str) -> None:
    if path := os.environ.get("KEYRING_HANG_CALLS"):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(what + "\n")
    _forever.wait()


class HangingKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        _hang(f"get {service} {username}")
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        _hang(f"set {service} {username}")

    def delete_password(self, service: str, username: str) -> None:
        _hang(f"delete {service} {username}")


def release_stuck_calls(thread_name: str = "pixsrc-keyring-hung") -> None:
    """End the calls hanging in this process (pixsrc fails fast while one is stuck), then hang again."""
    _forever.set()
    for thread in threading.enumerate():
        if thread.name == thread_name:
            thread.join(10)
    _forever.clear()
