"""The user's sources file: where it lives, how it is read, validated and (atomically) written.

Users own this file. It is only written by add/edit/enable/disable/remove, through
``edit_config``, which holds an exclusive lock, re-reads the file under it, and replaces it
atomically. Tables pixsrc does not know (``[providers.*]``, anything else) are kept as they are.
A write changes only the keys and tables whose values changed (tomlkit edits the text in place):
comments, blank lines, key order and spacing of everything else stay byte for byte.
A file that does not parse is reported with its location and never rewritten. A sources file that
is a symlink (stow, chezmoi, a dotfiles repo) is written through: the link's final target is
replaced atomically and locked, and the link stays a link.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pixsrc.errors import ConfigError, UsageError
from pixsrc.locks import FileLock, make_private_dirs, tighten
from pixsrc.toml_edit import same

CONFIG_VERSION = 1
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def config_path(override: str | os.PathLike[str] | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if env := os.environ.get("PIXSRC_CONFIG"):
        return Path(env).expanduser()
    return default_config_dir() / "sources.toml"


def default_config_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("pixsrc"))


MAX_LINK_HOPS = 40  # what Linux allows (MAXSYMLINKS) before ELOOP


def real_file(path: Path) -> Path:
    """The file that ``path`` names once every symlink in the chain is followed; ``path`` if none.

    Each relative link is taken from the folder of the link itself, as the kernel does; the result
    need not exist (a dangling link names the file to create). Parent folders are left as they are
    spelled: replacing the file there lands in the same real folder.
    """
    current, hops = path, 0
    while current.is_symlink():
        if hops == MAX_LINK_HOPS:
            raise ConfigError(f"{path}: too many levels of symbolic links (a link loop?)",
                              hint=f"point {path} at a file: ls -l {path}")
        try:
            target = current.readlink()
        except OSError as exc:
            raise ConfigError(f"cannot read the link {current}: {exc.strerror}") from None
        current = target if target.is_absolute() else current.parent / target
        hops += 1
    return current


def state_dir() -> Path:
    if env := os.environ.get("PIXSRC_STATE_DIR"):
        return Path(env).expanduser()
    from platformdirs import user_state_dir

    return Path(user_state_dir("pixsrc"))


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


IntervalOrigin = Literal["source", "defaults"]  # where a source's effective interval comes from


@dataclass
class Source:
    id: str
    name: str
    type: str
    enabled: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    dest: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys pixsrc does not know, kept as they are
    interval: str | None = None  # as the user wrote it ("6h"); checked by pixsrc.schedule.parse_interval

    def effective_interval(self, default: str | None) -> tuple[str | None, IntervalOrigin | None]:
        """Its own interval, else the default one (``[defaults] interval``); and where it came from."""
        if self.interval:
            return self.interval, "source"
        if default:
            return default, "defaults"
        return None, None

    def to_toml(self) -> dict[str, Any]:
        table: dict[str, Any] = {"name": self.name, "type": self.type, "enabled": self.enabled}
        if self.created_at:
            table["created_at"] = self.created_at
        if self.updated_at:
            table["updated_at"] = self.updated_at
        if self.dest:
            table["dest"] = self.dest
        if self.interval:
            table["interval"] = self.interval
        for key, value in self.extra.items():
            table.setdefault(key, value)
        table["config"] = dict(self.config)
        return table

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "enabled": self.enabled,
            "dest": self.dest,
            "interval": self.interval,
            "config": self.config,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


@dataclass
class Config:
    path: Path
    document: dict[str, Any]
    sources: dict[str, Source]

    @property
    def default_dest(self) -> str | None:
        defaults = self.document.get("defaults", {})
        return defaults.get("dest") if isinstance(defaults, dict) else None

    @property
    def default_interval(self) -> str | None:
        """``[defaults] interval``: the interval of every source that has none of its own."""
        defaults = self.document.get("defaults", {})
        value = defaults.get("interval") if isinstance(defaults, dict) else None
        return value if isinstance(value, str) else None

    def providers(self) -> dict[str, Any]:
        value = self.document.get("providers", {})
        return value if isinstance(value, dict) else {}

    def find(self, ref: str) -> Source:
        """A source by id, or by exact name (case-insensitive); unknown ones suggest the closest."""
        if ref in self.sources:
            return self.sources[ref]
        if (source := self.named(ref)) is not None:
            return source
        from pixsrc.registry import suggest

        choices = list(self.sources) + [s.name for s in self.sources.values()]
        raise UsageError(f"no source named {ref!r} in {self.path}", hint=suggest(ref, choices, "pixsrc list"))

    def named(self, name: str, but: str | None = None) -> Source | None:
        """The source with this name, compared as names are kept unique: stripped, case-insensitively
        (`fetch "client assets"` must mean one source); ``but`` is the id of a source to leave out."""
        folded = name.strip().casefold()
        return next((s for s in self.sources.values() if s.name.strip().casefold() == folded and s.id != but), None)

    def name_taken(self, name: str, but: str | None = None) -> bool:
        return self.named(name, but) is not None

    def check_name(self, name: str, but: str | None = None) -> str:
        """A name the user chose, stripped; empty or taken ones are refused."""
        name = name.strip()
        if not name:
            raise UsageError("the name must not be empty")
        if self.name_taken(name, but):
            raise UsageError(f"a source is already named {name!r}", hint="pick another --name")
        return name

    def free_name(self, base: str) -> str:
        """A default name that is free: "Local folder", else "Local folder 2", ..."""
        name, n = base.strip(), 1
        while self.name_taken(name):
            n += 1
            name = f"{base.strip()} {n}"
        return name

    def unique_id(self, name: str) -> str:
        base = slugify(name)
        candidate, n = base, 2
        while candidate in self.sources:
            candidate = f"{base[:60]}-{n}"
            n += 1
        return candidate


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:64].rstrip("-") or "source"


_SOURCE_KEYS = frozenset({"name", "type", "enabled", "config", "dest", "interval", "created_at", "updated_at"})

_LOCATION = re.compile(r"\(at line (\d+), column (\d+)\)")


def load_config(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path, {"version": CONFIG_VERSION}, {})
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8",
                          hint="fix or replace the file; pixsrc will not touch it") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if match := _LOCATION.search(message):
            message = _LOCATION.sub("", message).strip()
            where = f"{path}:{match[1]}:{match[2]}"
        else:
            where = str(path)
        raise ConfigError(
            f"{where}: invalid TOML: {message}", hint="fix the file by hand; pixsrc never rewrites a broken file"
        ) from None
    return Config(path, document, _parse_sources(path, document))


def _parse_sources(path: Path, document: dict[str, Any]) -> dict[str, Source]:
    def bad(where: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {where}: {why}")

    version = document.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise bad("version", f"unsupported config version {version!r}; this pixsrc reads version {CONFIG_VERSION}")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise bad("defaults", "must be a table")
    if "dest" in defaults and not isinstance(defaults["dest"], str):
        raise bad("defaults.dest", "must be a string")
    if "interval" in defaults:
        _check_interval(path, "defaults.interval", defaults["interval"],
                        'fix it in the file: [defaults] interval = "6h" (s, m, h, d, w)')
    tables = document.get("sources", {})
    if not isinstance(tables, dict):
        raise bad("sources", "must be a table of [sources.<id>] tables")
    sources: dict[str, Source] = {}
    for source_id, table in tables.items():
        where = f"sources.{source_id}"
        if not SLUG_RE.match(source_id):
            raise bad(where, "a source id is lower-case letters, digits and '-', at most 64 characters")
        if not isinstance(table, dict):
            raise bad(where, "must be a table")
        name, type_id = table.get("name"), table.get("type")
        if not isinstance(name, str) or not name.strip():
            raise bad(f"{where}.name", "required, a non-empty string")
        if not isinstance(type_id, str) or not type_id:
            raise bad(f"{where}.type", "required, a source type id (see `pixsrc types`)")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise bad(f"{where}.enabled", "must be true or false")
        config = table.get("config", {})
        if not isinstance(config, dict):
            raise bad(f"{where}.config", "must be a table")
        dest = table.get("dest")
        if dest is not None and not isinstance(dest, str):
            raise bad(f"{where}.dest", "must be a string")
        stamps = {}
        for key in ("created_at", "updated_at"):
            value = table.get(key)
            if value is not None and not isinstance(value, datetime):
                raise bad(f"{where}.{key}", "must be a TOML date-time such as 2026-11-25T10:00:00Z")
            stamps[key] = value
        interval = table.get("interval")
        if interval is not None:
            _check_interval(path, f"{where}.interval", interval,
                            f'fix it in the file: [sources.{source_id}] interval = "6h" (s, m, h, d, w)')
        extra = {key: value for key, value in table.items() if key not in _SOURCE_KEYS}
        sources[source_id] = Source(source_id, name, type_id, enabled, config, dest, **stamps, extra=extra,
                                    interval=interval)
    return sources


def _check_interval(path: Path, where: str, value: object, fix: str) -> None:
    """An ``interval`` in the file: a duration string such as "6h" (see pixsrc.schedule)."""
    from pixsrc.schedule import parse_interval

    if not isinstance(value, str):
        raise ConfigError(f"{path}: {where}: must be a duration string such as \"6h\"", hint=fix)
    try:
        parse_interval(value, f"{path}: {where}")
    except UsageError as exc:
        raise ConfigError(exc.message, hint=fix) from None


def save_config(config: Config, real: Path | None = None) -> None:
    """Write what changed in ``config`` to its file; ``real``: the link's target already resolved (and locked).

    The file as it is now is the base: only the tables and keys whose values differ from it are
    touched (through tomlkit), so comments, blank lines, key order and spacing everywhere else stay
    byte for byte. Nothing differs: nothing is written. A broken file raises, untouched.
    """
    target = real if real is not None else real_file(config.path)
    on_disk = load_config(target)
    try:
        text: str | None = target.read_text("utf-8")
    except FileNotFoundError:
        text = None
    wanted = _view(config)
    if same(_view(on_disk), wanted):
        return
    # a new file starts from nothing, so that `version = 1` is written too
    new_text = _edited_text(text or "", _view(on_disk) if text is not None else {}, wanted, config)
    # the default folder is pixsrc's own; a folder named by --config / PIXSRC_CONFIG (or holding a
    # link's target) may be a dotfiles repo that is the user's to set: only new folders are 0700
    if target.parent == default_config_dir():
        tighten(target.parent)
    try:
        atomic_write(target, new_text.encode("utf-8"))
    except OSError as exc:  # a full disk, a read-only folder: the old file is still there, unchanged
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}; the file was not changed",
                          hint="free some space or fix the folder's permissions, then run the command again") from None


def _view(config: Config) -> dict[str, Any]:
    """The file's content as pixsrc sees it: the document, with each source as it would write it."""
    view = {key: value for key, value in config.document.items() if key != "sources"}
    if config.sources:
        view["sources"] = {sid: source.to_toml() for sid, source in config.sources.items()}
    return view


def _edited_text(text: str, old: dict[str, Any], new: dict[str, Any], config: Config) -> str:
    """``text`` with the difference between ``old`` and ``new`` applied, the rest kept as written;
    a result that does not read back as exactly what ``config`` says is never written."""
    from pixsrc import toml_edit

    def read_back(edited: str) -> dict[str, Any] | None:
        try:
            written = tomllib.loads(edited)
            return _view(Config(config.path, written, _parse_sources(config.path, written)))
        except (tomllib.TOMLDecodeError, ConfigError):
            return None

    edited = toml_edit.apply(text, old, new, read_back)
    if edited is None:
        raise ConfigError(f"cannot update {config.path} without rewriting parts of it you wrote; "
                          "the file was not changed",
                          hint="make this change by hand in the file (and please report the file's layout as a bug)")
    return edited


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, rename, fsync the folder.

    ``path`` must not be a symlink (renaming over it would replace the link): pass ``real_file()``.
    Folders it creates are 0700.
    """
    make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode) if hasattr(os, "fchmod") else os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name != "nt":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextmanager
def edit_config(path: Path) -> Iterator[Config]:
    """Read-modify-write under an exclusive lock; nothing is written if the block raises.

    The lock sits beside the real file, so every name that reaches it (the link, the target, another
    link) takes the same lock; it is read from and written to that file. ``Config.path`` keeps the
    name the user gave, for messages.
    """
    real = real_file(path)
    with FileLock(real.with_name(real.name + ".lock")):
        config = load_config(real)
        config.path = path
        yield config
        save_config(config, real)
