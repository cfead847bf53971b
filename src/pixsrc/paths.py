"""Turning a source's suggested asset path into a safe relative local path.

Remote names are hostile until proven otherwise: no absolute paths, no ``..``, no control
characters, Unicode NFC, names the local OS cannot hold replaced, components capped at 255 bytes.
Two assets that land on the same path (also case-insensitively, for macOS and Windows) get
deterministic suffixes derived from their ids, so the choice never flips between runs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping

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


def safe_name(name: str) -> str:
    """One remote *name* (a Drive file or folder name) as one path component, before it is joined
    with others: a "/" in it must not make a folder, and a name like ".." or "." (Drive allows both)
    must not climb out of or collapse into its folder; it becomes "_.." or "_.", stably."""
    name = name.replace("/", "\uff0f").replace("\\", "\uff3c")  # "／" "＼" like rclone
    if name in ("", ".", ".."):
        return "_" + name
    return name


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


# -- globs -------------------------------------------------------------------------------------------
# One syntax for --include/--exclude and the config's include/exclude lists, rclone's: `*` and `?`
# stay inside one folder, `**` crosses folders, `{a,b}` alternatives, `[0-9]` classes, `\` escapes.
# A pattern without "/" matches the file name at any depth; one with "/" the whole relative path
# (a leading "/" changes nothing: paths are relative to the source's root). A folder named without
# wildcards, or with a trailing "/", selects everything below it. Each value may hold several
# patterns separated by commas outside braces (`*.{jpg,png},*.gif` is two); `\,` is a comma.

_WILDCARDS = frozenset("*?[{")
BRACE_LIMIT = 1000  # wcmatch's default: more expanded patterns than this is a typo, not a filter


def split_globs(value: str) -> list[str]:
    """Comma-separated patterns -> patterns, blanks dropped; commas inside ``{...}`` and ``\\,`` stay."""
    items: list[str] = []
    depth = start = 0
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            if not depth:
                raise _bad_glob(value, "a '}' without its '{'")
            depth -= 1
        elif ch == "," and not depth:
            items.append(value[start:i])
            start = i + 1
    if depth:
        raise _bad_glob(value, "a '{' without its '}'")
    items.append(value[start:])
    return [item.strip() for item in items if item.strip()]


def _bad_glob(value: str, why: str) -> Exception:
    from pixsrc.errors import UsageError

    return UsageError(f"{value!r}: {why}",
                      hint="globs: '*.{jpg,png}', '2024/*' (one folder), '2024/**' (all below); a literal "
                           "'{', '}' or ',' is written '\\{', '\\}', '\\,'")


def check_globs(values: Iterable[str], option: str) -> list[str]:
    """The patterns the user typed (repeated flags, comma-separated), each checked: a bad one is a
    UsageError that names ``option`` (``--include``) before anything is listed."""
    from pixsrc.errors import UsageError

    patterns: list[str] = []
    for value in values:
        try:
            found = split_globs(value)
            _matcher((value,), False)
        except UsageError as exc:
            raise UsageError(f"{option} {exc.message}", hint=exc.hint) from None
        patterns.extend(found)
    return patterns


@functools.lru_cache(maxsize=64)
def _matcher(values: tuple[str, ...], ignore_case: bool) -> Callable[[str], bool] | None:
    """One compiled matcher for a list of values (None: no patterns, so no filter). Cached: the
    engine asks once per asset with the same lists, and compiling is far slower than matching."""
    from wcmatch import glob
    from wcmatch._wcparse import PatternLimitException  # documented, though not re-exported

    flags = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.FORCEUNIX
    if ignore_case:
        flags |= glob.IGNORECASE
    loose: list[str] = []  # no "/": the file name, at any depth
    anchored: list[str] = []  # the whole relative path
    for value in values:
        for pattern in split_globs(value):
            if "/" not in pattern:
                loose.append(pattern)
                continue
            pattern = pattern.lstrip("/")
            if pattern.endswith("/"):
                pattern += "**"
            elif not _WILDCARDS & set(pattern):
                anchored.append(pattern + "/**")  # "2024/summer": the file, or the folder's files
            anchored.append(pattern)
    tests: list[Callable[[str], bool]] = []
    try:
        for patterns, extra in ((loose, glob.MATCHBASE), (anchored, 0)):
            if patterns:
                tests.append(glob.compile(patterns, flags=flags | extra, limit=BRACE_LIMIT).match)
    except PatternLimitException:
        culprit = next(v for v in values if _expands_too_far(v, flags))
        raise _bad_glob(culprit, f"expands to more than {BRACE_LIMIT} patterns") from None
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    first, second = tests
    return lambda path: first(path) or second(path)


def _expands_too_far(value: str, flags: int) -> bool:
    from wcmatch import glob
    from wcmatch._wcparse import PatternLimitException

    try:
        glob.compile(split_globs(value) or [""], flags=flags, limit=BRACE_LIMIT)
    except PatternLimitException:
        return True
    return False


def glob_match(path: str, pattern: str, *, ignore_case: bool = False) -> bool:
    """Whether ``path`` (relative, "/"-separated) matches ``pattern`` (see the rules above)."""
    test = _matcher((pattern,), ignore_case)
    return test is not None and test(path)


def selected(path: str, include: Iterable[str], exclude: Iterable[str], *, ignore_case: bool = False) -> bool:
    """Kept if it matches some include pattern (or there are none) and no exclude pattern.

    wcmatch is imported only here, and only when a list is not empty: most runs have no filter."""
    include, exclude = tuple(include), tuple(exclude)
    if include:
        test = _matcher(include, ignore_case)
        if test is not None and not test(path):
            return False
    if exclude:
        test = _matcher(exclude, ignore_case)
        if test is not None and test(path):
            return False
    return True
