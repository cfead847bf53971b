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

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_UNAVAILABLE = 4
EXIT_PARTIAL = 5
EXIT_BUSY = 6
EXIT_INTERRUPTED = 130


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
