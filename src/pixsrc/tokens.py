"""Credential storage: one entry per source, never in the config file.

Lookup order: the ``PIXSRC_AUTH_<ID>`` environment variable (CI; never written back), then the
opt-in file store (only if the user put the credential there), then the OS keyring (service
``pixsrc``). Keyring calls run on a worker thread with a deadline, because some backends block
forever waiting for an unlock prompt nobody will see. When no keyring works, the error names the
two ways out instead of silently falling back to a plaintext file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pixsrc import redact
from pixsrc.config import atomic_write, state_dir
from pixsrc.durations import rfc3339
from pixsrc.errors import AuthRequired
from pixsrc.locks import FileLock, tighten

if TYPE_CHECKING:
    from pixsrc.types import AuthSpec

SERVICE = "pixsrc"
Store = Literal["keyring", "file"]
T = TypeVar("T")


def env_var(source_id: str) -> str:
    return "PIXSRC_AUTH_" + source_id.upper().replace("-", "_")


def file_store_path() -> Path:
    return state_dir() / "credentials.json"


def default_store() -> Store:
    return "file" if os.environ.get("PIXSRC_TOKEN_STORE", "").lower() == "file" else "keyring"


class KeyringUnavailable(AuthRequired):
    pass


def _no_keyring(source_id: str, reason: str) -> KeyringUnavailable:
    return KeyringUnavailable(
        f"no usable OS keyring: {reason}",
        hint=(
            f"set {env_var(source_id)} in the environment, or opt in to a mode-0600 file at "
            f"{file_store_path()} with `pixsrc auth login {source_id} --store file` (or PIXSRC_TOKEN_STORE=file)"
        ),
    )


KEYRING_TIMEOUT = 10.0
_WORKER = "pixsrc-keyring"
_HUNG = "pixsrc-keyring-hung"  # a worker renamed so once its call outlived the timeout


def keyring_timeout() -> float:
    """Seconds to wait for the keyring: ``PIXSRC_KEYRING_TIMEOUT`` when it is a positive number."""
    try:
        value = float(os.environ.get("PIXSRC_KEYRING_TIMEOUT", KEYRING_TIMEOUT))
    except ValueError:
        return KEYRING_TIMEOUT
    return value if 0 < value < 3600 else KEYRING_TIMEOUT


def _keyring_call(source_id: str, call: Callable[[], T], timeout: float | None = None) -> T:
    if timeout is None:  # `pixsrc doctor` passes its own, shorter deadline
        timeout = keyring_timeout()
    if any(thread.name == _HUNG for thread in threading.enumerate()):
        # an earlier call timed out and its thread is still stuck in the keyring: fail at once
        # rather than wait again (the state is the thread itself, not a flag: once it returns, retry).
        # Calls merely in progress on other threads (watch's waiters) do not count.
        raise _no_keyring(source_id, "an earlier keyring call has not returned (locked or hung?)")
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # reported on the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=_WORKER, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        worker.name = _HUNG
        raise _no_keyring(source_id, f"the keyring did not answer within {timeout:g} s (locked or hung?)")
    if "error" in outcome:
        exc = outcome["error"]
        # keyrings that want a password prompt raise EOFError/ValueError without a TTY
        raise _no_keyring(source_id, f"{type(exc).__name__}: {exc}".rstrip(": "))
    return outcome["value"]  # type: ignore[return-value]


def _keyring_backend_name() -> str:
    import keyring

    backend = keyring.get_keyring()
    return f"{type(backend).__module__}.{type(backend).__name__}"


def _refuse_if_open_to_others(path: Path, mode: int) -> None:
    """As ssh refuses a private key: a credentials file others can read (or write: plant a token in)
    is not used, and the message says how to fix it. Windows keeps access in ACLs, not mode bits."""
    if os.name != "nt" and mode & 0o077:
        raise AuthRequired(f"{path} is open to others (mode {mode & 0o7777:04o}); pixsrc will not use "
                           "the credentials in it", hint=f"run: chmod 600 {path}")


def _read_file_store() -> dict[str, str]:
    path = file_store_path()
    try:
        with path.open("rb") as handle:
            # the mode of the file that is open, checked before a byte of it is read
            _refuse_if_open_to_others(path, os.fstat(handle.fileno()).st_mode)
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:  # not JSON, not UTF-8: never guess at credentials
        raise AuthRequired(f"{path} is damaged (not the JSON pixsrc writes); no credential was read from it",
                           hint=f"move it away and sign in again: mv {path} {path}.damaged") from None
    return data if isinstance(data, dict) else {}


def _update_file_store(change: Callable[[dict[str, str]], object]) -> None:
    path = file_store_path()
    tighten(path.parent)  # the state folder is pixsrc's own: a 0600 file in a folder others can list
    with FileLock(path.with_name(path.name + ".lock")):
        data = _read_file_store()
        change(data)
        atomic_write(path, json.dumps(data, indent=1).encode(), mode=0o600)


@dataclass(frozen=True)
class Credential:
    value: str
    stored_in: str  # "env PIXSRC_AUTH_X", "file <path>", "keyring <backend>"

    def __repr__(self) -> str:  # never show the secret
        return f"Credential(stored_in={self.stored_in!r})"


def _index_path() -> Path:
    return state_dir() / "credentials-index.json"


def _meta_path() -> Path:
    return state_dir() / "credentials-meta.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _indexed(source_id: str) -> bool:
    names = _read_json(_index_path())
    return isinstance(names, list | dict) and source_id in names


def _set_indexed(source_id: str, present: bool) -> None:
    """Remember which sources pixsrc put in the keyring (names only), so an optional credential
    that was never stored costs no keyring start-up (~80 ms) on every run."""
    path = _index_path()
    with FileLock(path.with_name(path.name + ".lock")):
        data = _read_json(path)
        names = set(data) if isinstance(data, list | dict) else set()
        if (source_id in names) != present:
            (names.add if present else names.discard)(source_id)
            atomic_write(path, json.dumps(sorted(names)).encode(), mode=0o600)


def stored_at(source_id: str) -> float | None:
    """When pixsrc stored the source's credential (epoch seconds); None when it was stored by a
    version that did not record it, or never."""
    data = _read_json(_meta_path())
    entry = data.get(source_id) if isinstance(data, dict) else None
    value = entry.get("stored_at") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _set_stored_at(source_id: str, when: float | None) -> None:
    """Kept apart from the secrets (names and times only), so neither store's format changes. Only a
    note: when it cannot be written (a full disk, a read-only state folder) the key is still stored,
    and its age shows as unknown."""
    path = _meta_path()
    try:
        _write_stored_at(path, source_id, when)
    except OSError:
        return


def _write_stored_at(path: Path, source_id: str, when: float | None) -> None:
    with FileLock(path.with_name(path.name + ".lock")):
        data = _read_json(path)
        data = data if isinstance(data, dict) else {}
        if when is None and source_id not in data:
            return
        if when is None:
            data.pop(source_id)
        else:
            data[source_id] = {"stored_at": round(when, 3)}
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)


def _read(value: str, stored_in: str) -> Credential:
    # registered the moment it is read: whatever a server echoes of it, or a traceback quotes, is masked
    redact.register(value)
    return Credential(value, stored_in)


def _skips_keyring(source_id: str, optional: bool) -> bool:
    """The file store was chosen, or the credential is optional (a public gallery's key) and pixsrc
    never stored one there: then the keyring is not asked at all, so cron on a server without one works."""
    return default_store() == "file" or optional and not _indexed(source_id)


def get(source_id: str, optional: bool = False) -> Credential | None:
    """The stored credential, or None. ``optional``: skip the keyring unless pixsrc stored one there."""
    if value := os.environ.get(env_var(source_id)):
        return _read(value, f"env {env_var(source_id)}")
    if (value := _read_file_store().get(source_id)) is not None:
        return _read(value, f"file {file_store_path()}")
    if _skips_keyring(source_id, optional):
        return None
    import keyring

    value = _keyring_call(source_id, lambda: keyring.get_password(SERVICE, source_id))
    if value is None:
        return None
    return _read(value, f"keyring {_keyring_call(source_id, _keyring_backend_name)}")


def put(source_id: str, value: str, store: Store | None = None) -> str:
    """Store a credential; returns where it went. Records when (see ``stored_at``)."""
    redact.register(value)  # a key typed or piped in a moment ago is as secret as one read back later
    if (store or default_store()) == "file":
        _update_file_store(lambda data: data.__setitem__(source_id, value))
        _set_stored_at(source_id, time.time())
        return f"file {file_store_path()}"
    import keyring

    _keyring_call(source_id, lambda: keyring.set_password(SERVICE, source_id, value))
    _set_indexed(source_id, True)
    _set_stored_at(source_id, time.time())
    # a credential left in the file store would shadow the new keyring entry
    if source_id in _read_file_store():
        _update_file_store(lambda data: data.pop(source_id, None))
    return f"keyring {_keyring_call(source_id, _keyring_backend_name)}"


def may_use_keyring(source_id: str, auth: AuthSpec) -> bool:
    """Whether a fetch of this source could ask the keyring: never for a type without a credential,
    nor with the file store chosen, nor for an optional key pixsrc never stored there."""
    return auth.kind != "none" and not _skips_keyring(source_id, optional=not auth.required)


def locate(source_id: str, optional: bool = False) -> Store | None:
    """Which store holds the source's credential (the environment aside); ``optional`` as in ``get``."""
    if source_id in _read_file_store():
        return "file"
    if _skips_keyring(source_id, optional):
        return None
    import keyring

    found = _keyring_call(source_id, lambda: keyring.get_password(SERVICE, source_id)) is not None
    return "keyring" if found else None


def delete(source_id: str, optional: bool = False, stores: tuple[Store, ...] = ("file", "keyring")) -> list[str]:
    """Delete the stored credential everywhere pixsrc may have put it (of ``stores``); returns where
    it was. ``optional``: the keyring is asked only if pixsrc stored one there, as in ``get``."""
    removed = []
    if "file" in stores and source_id in _read_file_store():
        _update_file_store(lambda data: data.pop(source_id, None))
        removed.append(f"file {file_store_path()}")
    if "keyring" in stores and not _skips_keyring(source_id, optional):
        import keyring
        from keyring.errors import PasswordDeleteError

        def drop() -> bool:
            try:
                keyring.delete_password(SERVICE, source_id)
                return True
            except PasswordDeleteError:
                return False

        _set_indexed(source_id, False)
        try:
            if _keyring_call(source_id, drop):
                removed.append("keyring")
        except KeyringUnavailable:
            if not removed:
                raise
            # found and deleted in the file store: a keyring that does not work (the usual reason to
            # opt in to the file) must not turn a successful logout into an error
    if set(stores) == {"file", "keyring"}:
        _set_stored_at(source_id, None)
    return removed


def forget(source_id: str, auth: AuthSpec | None) -> list[str]:
    """``delete`` for a source of this auth spec (None: its type is not installed, so look everywhere).
    A type that needs no credential has nothing stored: nothing is asked, not even the keyring."""
    if auth is not None and auth.kind == "none":
        return []
    return delete(source_id, optional=auth is not None and not auth.required)


def _age(credential: Credential, source_id: str, now: float) -> dict[str, Any]:
    """When the credential in use was stored: None for one from the environment, or stored before
    pixsrc recorded it (shown as "unknown")."""
    when = None if credential.stored_in.startswith("env ") else stored_at(source_id)
    if when is None:
        return {"stored_at": None, "age_days": None}
    return {"stored_at": rfc3339(when),
            "age_days": round(max(0.0, now - when) / 86400, 1)}


def status(source_id: str, kind: str, required: bool = True, now: float | None = None) -> dict[str, Any]:
    """Where a source's credential is and how old, never what it is:
    {kind, status, stored_in, detail, stored_at, age_days}.

    The keyring is asked only where ``get`` would ask it for a fetch: never for a type that needs no
    credential, and for an optional one only if pixsrc stored one there."""
    row: dict[str, Any] = {"kind": kind, "status": "none", "stored_in": None, "detail": "needs no credential",
                           "stored_at": None, "age_days": None}
    if kind == "none":
        return row
    try:
        credential = get(source_id, optional=not required)
    except AuthRequired as exc:
        return {**row, "status": "error", "detail": exc.message}
    if credential is None:
        detail = ("optional: none needed unless the source asks for one" if not required
                  else f"run: pixsrc auth login {source_id}")
        return {**row, "status": "missing", "detail": detail}
    return {**row, "status": "ok", "stored_in": credential.stored_in, "detail": None,
            **_age(credential, source_id, now or time.time())}


def describe(source_id: str, auth: AuthSpec, providers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The credential status for `auth status` and `show`: OAuth sources add scopes and expiry.
    ``providers``: the config's provider tables (a ``refresh_token_days`` override)."""
    if auth.kind == "oauth2" and auth.oauth is not None:
        from pixsrc import oauth

        return oauth.status(source_id, auth.oauth, oauth.refresh_limit_days(auth.oauth, providers or {}))
    return status(source_id, auth.kind, auth.required)
