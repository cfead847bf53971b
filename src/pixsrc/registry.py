"""Where source types come from: a table of built-ins (imported lazily) and plugins.

Plugins register a ``SourceType`` object under the entry-point group ``pixsrc.source_types``;
the entry-point name is the type id. A plugin that fails to import is remembered as a problem
(``pixsrc types`` shows it) and never breaks other commands; a plugin cannot replace a built-in.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from pixsrc.errors import UsageError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

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


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"plugin {dist.name} {dist.version}" if dist is not None else f"plugin {ep.value}"


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
        raise UsageError(f"unknown source type {type_id!r}", hint=suggest(type_id, known_ids(), "pixsrc types"))
    return _load(type_id)


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


def suggest(word: str, choices: list[str], listing_command: str) -> str:
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.5)
    if close:
        match = next(c for c in choices if c.lower() == close[0])
        return f"did you mean {match!r}? (see `{listing_command}`)"
    return f"see `{listing_command}`"
