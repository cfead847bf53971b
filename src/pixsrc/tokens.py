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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pixsrc import redact
from pixsrc.config import atomic_write, state_dir
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


_hung: list[float] = []  # once the keyring timed out, later calls in this process fail at once


def _keyring_call(source_id: str, call: Callable[[], T]) -> T:
    timeout = float(os.environ.get("PIXSRC_KEYRING_TIMEOUT", "10"))
    if _hung:
        raise _no_keyring(source_id, f"the keyring did not answer within {_hung[0]:g} s (locked or hung?)")
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # reported on the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="pixsrc-keyring", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        _hung.append(timeout)
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


def _indexed(source_id: str) -> bool:
    try:
        return source_id in json.loads(_index_path().read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return False


def _set_indexed(source_id: str, present: bool) -> None:
    """Remember which sources pixsrc put in the keyring (names only), so an optional credential
    that was never stored costs no keyring start-up (~80 ms) on every run."""
    path = _index_path()
    with FileLock(path.with_name(path.name + ".lock")):
        try:
            names = set(json.loads(path.read_text("utf-8")))
        except (FileNotFoundError, ValueError):
            names = set()
        if (source_id in names) != present:
            (names.add if present else names.discard)(source_id)
            atomic_write(path, json.dumps(sorted(names)).encode(), mode=0o600)


def _read(value: str, stored_in: str) -> Credential:
    # registered the moment it is read: whatever a server echoes of it, or a traceback quotes, is masked
    redact.register(value)
    return Credential(value, stored_in)


def get(source_id: str, optional: bool = False) -> Credential | None:
    """The stored credential, or None. ``optional``: skip the keyring unless pixsrc stored one there."""
    if value := os.environ.get(env_var(source_id)):
        return _read(value, f"env {env_var(source_id)}")
    if (value := _read_file_store().get(source_id)) is not None:
        return _read(value, f"file {file_store_path()}")
    if default_store() == "file" or optional and not _indexed(source_id):
        return None
    import keyring

    value = _keyring_call(source_id, lambda: keyring.get_password(SERVICE, source_id))
    if value is None:
        return None
    return _read(value, f"keyring {_keyring_call(source_id, _keyring_backend_name)}")


def put(source_id: str, value: str, store: Store | None = None) -> str:
    """Store a credential; returns where it went."""
    redact.register(value)  # a key typed or piped in a moment ago is as secret as one read back later
    if (store or default_store()) == "file":
        _update_file_store(lambda data: data.__setitem__(source_id, value))
        return f"file {file_store_path()}"
    import keyring

    _keyring_call(source_id, lambda: keyring.set_password(SERVICE, source_id, value))
    _set_indexed(source_id, True)
    # a credential left in the file store would shadow the new keyring entry
    if source_id in _read_file_store():
        _update_file_store(lambda data: data.pop(source_id, None))
    return f"keyring {_keyring_call(source_id, _keyring_backend_name)}"


def delete(source_id: str) -> list[str]:
    """Delete the stored credential everywhere pixsrc may have put it; returns where it was."""
    removed = []
    if source_id in _read_file_store():
        _update_file_store(lambda data: data.pop(source_id, None))
        removed.append(f"file {file_store_path()}")
    if default_store() == "keyring":
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
    return removed


def status(source_id: str, kind: str, required: bool = True) -> dict[str, str | None]:
    """Where a source's credential is, never what it is: {kind, status, stored_in, detail}."""
    if kind == "none":
        return {"kind": kind, "status": "none", "stored_in": None, "detail": "needs no credential"}
    try:
        credential = get(source_id)
    except AuthRequired as exc:
        return {"kind": kind, "status": "error", "stored_in": None, "detail": exc.message}
    if credential is None:
        detail = "not set (optional)" if not required else f"run: pixsrc auth login {source_id}"
        return {"kind": kind, "status": "missing", "stored_in": None, "detail": detail}
    return {"kind": kind, "status": "ok", "stored_in": credential.stored_in, "detail": None}


def describe(source_id: str, auth: AuthSpec) -> dict[str, Any]:
    """The credential status for `auth status` and `show`: OAuth sources add scopes and expiry."""
    if auth.kind == "oauth2" and auth.oauth is not None:
        from pixsrc import oauth

        return oauth.status(source_id, auth.oauth)
    return status(source_id, auth.kind, auth.required)
