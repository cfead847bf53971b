"""Turning a source's suggested asset path into a safe relative local path.

Remote names are hostile until proven otherwise: no absolute paths, no ``..``, no control
characters, Unicode NFC, names the local OS cannot hold replaced, components capped at 255 bytes.
Two assets that land on the same path (also case-insensitively, for macOS and Windows) get
deterministic suffixes derived from their ids, so the choice never flips between runs.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Mapping

# C0 and C1 controls, and bidi overrides that make "gpj.exe" look like "exe.jpg"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_WINDOWS_BAD = re.compile(r'[<>:"\\|?*]')
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)] + [f"lpt{i}" for i in range(1, 10)]
)
MAX_COMPONENT_BYTES = 255


def _cap(component: str, limit: int = MAX_COMPONENT_BYTES) -> str:
    if len(component.encode("utf-8")) <= limit:
        return component
    stem, ext = posixpath.splitext(component)
    if len(ext.encode("utf-8")) > 16:
        stem, ext = component, ""
    tag = "~" + hashlib.sha1(component.encode("utf-8")).hexdigest()[:8]
    room = limit - len(ext.encode("utf-8")) - len(tag)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
    return stem + tag + ext


def sanitize_component(name: str, windows: bool) -> str:
    name = unicodedata.normalize("NFC", name)
    name = _CONTROL.sub("_", name)
    if windows:
        name = _WINDOWS_BAD.sub("_", name).rstrip(" .")
        stem = name.split(".", 1)[0]
        if stem.lower() in _WINDOWS_RESERVED:
            name = stem + "_" + name[len(stem):]
    if name in ("", ".", ".."):
        return ""
    return _cap(name)


# Paths made of these characters only need no rewriting on any OS (checked per component below)
_C = r"[A-Za-z0-9_+=@,()\[\]-][A-Za-z0-9 ._+=@,()\[\]-]{0,254}"
_PLAIN = re.compile(f"(?:{_C}/)*{_C}")


def sanitize_path(path: str, windows: bool | None = None) -> str:
    """A relative POSIX path that stays inside the destination; "_" if nothing is left."""
    if windows is None:
        windows = os.name == "nt"
    if not windows and _PLAIN.fullmatch(path):
        return path  # the common case, 10x faster than the general rules below
    parts = []
    for raw in path.replace("\\", "/").split("/"):
        component = sanitize_component(raw, windows)
        if component:
            parts.append(component)
    return "/".join(parts) or "_"


def with_suffix_tag(path: str, asset_id: str) -> str:
    stem, ext = posixpath.splitext(path)
    if "/" in ext:
        stem, ext = path, ""
    tag = hashlib.sha1(asset_id.encode("utf-8")).hexdigest()[:8]
    directory, _, base = stem.rpartition("/")
    base = _cap(f"{base}~{tag}{ext}")
    return f"{directory}/{base}" if directory else base


def assign_paths(wanted: Iterable[tuple[str, str]], previous: Mapping[str, str]) -> dict[str, str]:
    """Map asset id -> unique local path.

    ``wanted`` holds (asset id, sanitised path); ``previous`` maps asset id -> the path it had
    last run. In a clash the asset that already held the path keeps it, else the smallest id;
    the others get an id-derived ``~xxxxxxxx`` tag before the extension. Only clashes build
    groups: a 50,000-asset listing without any stays one dict.
    """
    result: dict[str, str] = {}
    taken: dict[str, tuple[str, str]] = {}  # casefolded path -> the first (id, path) that wanted it
    clashes: dict[str, list[tuple[str, str]]] = {}
    for asset_id, path in wanted:
        key = path.casefold()
        first = taken.get(key)
        if first is None:
            taken[key] = (asset_id, path)
            result[asset_id] = path
        else:
            clashes.setdefault(key, [first]).append((asset_id, path))
    for members in clashes.values():
        members.sort(key=lambda m: (previous.get(m[0], "").casefold() != m[1].casefold(), m[0]))
        keeper, *others = members
        result[keeper[0]] = keeper[1]
        for asset_id, path in others:
            tagged = with_suffix_tag(path, asset_id)
            while tagged.casefold() in taken:
                tagged = with_suffix_tag(tagged, asset_id)
            taken[tagged.casefold()] = (asset_id, tagged)
            result[asset_id] = tagged
    return result


def glob_match(path: str, pattern: str) -> bool:
    """``*.jpg`` matches the file name anywhere; a pattern with ``/`` matches the whole path."""
    from fnmatch import fnmatchcase

    if "/" in pattern:
        return fnmatchcase(path, pattern.lstrip("/")) or fnmatchcase(path, pattern.lstrip("/") + "/*")
    return fnmatchcase(posixpath.basename(path), pattern)


def selected(path: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Kept if it matches some include pattern (or there are none) and no exclude pattern."""
    include = list(include)
    if include and not any(glob_match(path, p) for p in include):
        return False
    return not any(glob_match(path, p) for p in exclude)
