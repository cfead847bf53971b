"""Where source types come from: a table of built-ins (imported lazily) and plugins.

Plugins register a ``SourceType`` object under the entry-point group ``pixsrc.source_types``;
the entry-point name is the type id (see docs/plugins.md). A plugin that fails to import is
remembered as a problem (``pixsrc types`` shows it) and never breaks other commands; a plugin cannot
replace a built-in. ``origin()`` says which distribution (name and version) provides a type.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pixsrc.errors import UsageError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from pixsrc.config import Source
    from pixsrc.types import SourceType

GROUP = "pixsrc.source_types"

BUILTINS: dict[str, str] = {
    "dropbox": "pixsrc.sources.dropbox:SOURCE_TYPE",
    "google-drive": "pixsrc.sources.google_drive:SOURCE_TYPE",
    "local-fs": "pixsrc.sources.local_fs:SOURCE_TYPE",
    "pinterest": "pixsrc.sources.pinterest:SOURCE_TYPE",
    "remote-gallery": "pixsrc.sources.remote_gallery:SOURCE_TYPE",
}


@dataclass(frozen=True)
class PluginProblem:
    type_id: str
    origin: str
    error: str


@cache
def _plugin_entry_points() -> dict[str, EntryPoint]:
    from importlib.metadata import entry_points  # ~15 ms: only when a plugin type is asked about

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known_ids() -> list[str]:
    """Every installed type id, without importing any type module (cheap: for ``pixsrc list``)."""
    return sorted(set(BUILTINS) | set(_plugin_entry_points()))


def is_installed(type_id: str) -> bool:
    return type_id in BUILTINS or type_id in _plugin_entry_points()


def _unknown(type_id: str) -> UsageError:
    return UsageError(f"unknown source type {type_id!r}", hint=suggest(type_id, known_ids(), "pixsrc types"))


@dataclass(frozen=True)
class Origin:
    """Where a type comes from: pixsrc itself, or the distribution (name, version) of a plugin.

    ``distribution`` and ``version`` are None only for an entry point that belongs to no installed
    distribution (one made by hand, never one pip installed).
    """

    builtin: bool
    distribution: str | None
    version: str | None

    @property
    def label(self) -> str:
        if self.builtin:
            return f"{self.distribution} (built-in)"
        if self.distribution is None:
            return "unknown distribution"
        return f"{self.distribution} {self.version}"

    def as_dict(self) -> dict[str, str | bool | None]:
        return {"builtin": self.builtin, "distribution": self.distribution, "version": self.version}


def _plugin_origin(ep: EntryPoint) -> Origin:
    dist = ep.dist
    if dist is None:
        return Origin(False, None, None)
    return Origin(False, dist.name, dist.version)


def _origin(ep: EntryPoint) -> str:
    """How messages name a plugin's entry point: its distribution, else the object it points to."""
    found = _plugin_origin(ep)
    return f"plugin {found.label}" if found.distribution is not None else f"plugin {ep.value}"


def origin(type_id: str) -> Origin:
    """Which distribution provides an installed type (a built-in wins over a plugin of the same id)."""
    if type_id in BUILTINS:
        from pixsrc import __version__

        return Origin(True, "pixsrc", __version__)
    if type_id not in _plugin_entry_points():
        raise _unknown(type_id)
    return _plugin_origin(_plugin_entry_points()[type_id])


class TypeLoadError(UsageError):
    """A type's module failed to import; ``reason`` is the short cause for `pixsrc types`."""

    def __init__(self, type_id: str, origin: str, reason: str) -> None:
        super().__init__(f"source type {type_id!r} ({origin}) {reason}",
                         hint="reinstall or remove that plugin; `pixsrc types` lists plugin problems")
        self.reason = reason


@cache
def _load(type_id: str) -> SourceType:
    from pixsrc.types import SourceType

    origin = "built-in" if type_id in BUILTINS else _origin(_plugin_entry_points()[type_id])
    try:
        if type_id in BUILTINS:
            module, _, attr = BUILTINS[type_id].partition(":")
            obj = getattr(importlib.import_module(module), attr)
        else:
            obj = _plugin_entry_points()[type_id].load()
    except Exception as exc:  # a broken plugin (or a bug in a built-in) must not take pixsrc down
        raise TypeLoadError(type_id, origin, f"failed to load: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, SourceType):
        raise TypeLoadError(type_id, origin, "does not point to a pixsrc.types.SourceType object")
    if obj.id != type_id:
        raise TypeLoadError(type_id, origin, f"declares the id {obj.id!r}")
    return obj


def get(type_id: str) -> SourceType:
    """Load one type by id; an unknown id suggests the closest known one."""
    if not is_installed(type_id):
        raise _unknown(type_id)
    return _load(type_id)


def of(source: Source) -> SourceType:
    """A configured source's type; one that is not installed is a usage error naming the source."""
    if not is_installed(source.type):
        raise UsageError(
            f"source {source.id!r} has type {source.type!r}, which is not installed (a removed plugin?)",
            hint="reinstall the plugin that provides it, or `pixsrc remove " + source.id + "`",
        )
    return _load(source.type)


def usable(type_id: str) -> tuple[SourceType | None, str | None]:
    """(the type, None); or (None, why it cannot be used: not installed, or its plugin fails to load)
    for the commands that must go on without it (remove, auth status, auth check, show)."""
    if not is_installed(type_id):
        return None, f"type {type_id!r} is not installed"
    try:
        return _load(type_id), None
    except TypeLoadError as exc:
        return None, exc.message


def load_all() -> tuple[list[SourceType], list[PluginProblem]]:
    """Every type that loads, and a problem for each that does not (`pixsrc types` shows both)."""
    types: list[SourceType] = []
    problems: list[PluginProblem] = []
    plugins = _plugin_entry_points()
    for type_id in sorted(set(BUILTINS) | set(plugins)):
        origin = "built-in" if type_id in BUILTINS else _origin(plugins[type_id])
        if type_id in BUILTINS and type_id in plugins:
            hijacker = _origin(plugins[type_id])
            problems.append(PluginProblem(type_id, hijacker, "tries to replace a built-in type; ignored"))
        try:
            types.append(_load(type_id))
        except TypeLoadError as exc:
            problems.append(PluginProblem(type_id, origin, exc.reason))
    return types, problems


@dataclass(frozen=True)
class Installed:
    """A loaded type and where it comes from: what `pixsrc types` shows."""

    type: SourceType
    origin: Origin

    def as_dict(self) -> dict[str, Any]:
        return {**self.type.as_dict(), "origin": self.origin.as_dict()}


def installed(type_id: str) -> Installed:
    """One type (as ``get``) with its origin."""
    return Installed(get(type_id), origin(type_id))


def installed_all() -> tuple[list[Installed], list[PluginProblem]]:
    """Every type that loads with its origin, and the problems (as ``load_all``)."""
    types, problems = load_all()
    return [Installed(t, origin(t.id)) for t in types], problems


def suggest(word: str, choices: list[str], listing_command: str) -> str:
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.5)
    if close:
        match = next(c for c in choices if c.lower() == close[0])
        return f"did you mean {match!r}? (see `{listing_command}`)"
    return f"see `{listing_command}`"
