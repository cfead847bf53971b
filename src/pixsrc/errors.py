"""Errors that pixsrc reports to the user, each carrying its exit code.

    PixsrcError                    exit 1  (base; a bare one is a bug)
    ├── UsageError                 exit 2  bad flags, unknown source or type, missing field
    │   └── ConfigError            exit 2  the config file cannot be read or is invalid
    ├── AuthRequired               exit 3  not logged in, credential rejected, no keyring
    ├── SourceUnavailable          exit 4  the source could not be listed
    └── AssetError                 (per asset; recorded in the report, never ends a run)

Exit 5 (partial), 6 (busy: another process holds the source's fetch lock) and 130 (interrupted)
are outcomes of a run, not exceptions.
Every message is one line; ``hint`` names the fix ("run: pixsrc auth login x").
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_UNAVAILABLE = 4
EXIT_PARTIAL = 5
EXIT_BUSY = 6
EXIT_INTERRUPTED = 130
# Where several sources (or checks) end differently, a command exits with the most severe code:
# a bug, then Ctrl-C, then what the person must fix (config, credentials), then the world (a host
# down, a lock held), then a partial run.
SEVERITY = (EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, EXIT_AUTH, EXIT_UNAVAILABLE, EXIT_BUSY, EXIT_PARTIAL)


def worst(codes: Iterable[int]) -> int:
    """The most severe of ``codes`` (in ``SEVERITY``'s order); 0 when there is none or all are 0."""
    found = set(codes)
    return next((code for code in SEVERITY if code in found), EXIT_OK)


class PixsrcError(Exception):
    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(PixsrcError):
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    pass


class AuthRequired(PixsrcError):
    exit_code = EXIT_AUTH


class SourceUnavailable(PixsrcError):
    exit_code = EXIT_UNAVAILABLE


class AssetError(PixsrcError):
    """One asset could not be fetched; the run goes on.

    ``retryable`` tells the engine's retry loop whether trying again may help.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
