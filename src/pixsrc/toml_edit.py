"""Edit a TOML file's text in place: change only what differs, keep every comment, blank line and space.

tomlkit does the parsing and rendering. What it leaves to its users is which table owns a comment:
it keeps the comment lines above a ``[header]`` at the end of the table before it, so deleting a
table would take the next one's comment. ``_TomlFile`` re-homes them first. Each edited text is read
back by the caller; one that does not say exactly what was asked is never used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any


def same(a: Any, b: Any) -> bool:
    """Equal and of the same TOML type (``1 == True`` in Python, not in the file)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # `nan` in the file: unchanged, though nan != nan
    return type(a) is type(b) and bool(a == b)


def apply(text: str, old: dict[str, Any], new: dict[str, Any],
          read_back: Callable[[str], dict[str, Any] | None]) -> str | None:
    """``text`` (which says ``old``) made to say ``new``, or None when no way of editing it reads back right.

    First key by key with the comments re-homed (see ``_TomlFile``); if tomlkit lays a file out in a
    way that this does not reproduce, with tomlkit's own placement; last, each changed table of a
    table (a whole ``[sources.<id>]``) written anew.
    """
    for rehome, whole in ((True, False), (False, False), (True, True)):
        try:
            toml_file = _TomlFile(text, rehome)
            if toml_file.text() != text:
                continue
            toml_file.apply(toml_file.document, old, new, whole)
            edited = toml_file.text()
        except Exception:  # tomlkit's own slips (IndexError, KeyError...) too: the next way, or stop
            continue
        if (seen := read_back(edited)) is not None and same(seen, new):
            return edited
    return None


class _TomlFile:
    """A tomlkit document edited in place, with each table owning the comments that introduce it.

    tomlkit keeps the blank and comment lines above a ``[header]`` at the end of the table before
    it: deleting that table would take the next one's comment, and a key added to it would land
    under that comment. So, when ``rehome``, each such run of lines is moved onto the header it ends
    at (into its indent, which is rendered just before it: the text is only moved, never changed).
    The comment lines directly above a header, and the blank lines just before them, are the
    header's own and go if it goes; the lines before those (``kept``) pass to the next header. The
    run at the end of the file is taken out as ``trailer`` and put back last, after any new table.
    """

    def __init__(self, text: str, rehome: bool) -> None:
        import tomlkit

        self.document = tomlkit.parse(text)
        self.trailer = ""
        self.kept: dict[int, str] = {}  # id(header table) -> the start of its indent that is not its own
        if rehome:
            self._rehome()

    def text(self) -> str:
        body = self.document.as_string()
        if self.trailer and body and not body.endswith("\n"):
            body += "\n"
        return body + self.trailer

    def _rehome(self) -> None:
        from tomlkit.items import Comment, Null

        run: list[tuple[list[Any], int, Any]] = []
        seen_content = False
        for kind, body, index, item in list(_layout(self.document.body)):
            if kind == "gap":
                run.append((body, index, item))
                continue
            if kind == "header" and run:
                start = len(run)  # the comment lines directly above, then the blank lines before them
                while start and isinstance(run[start - 1][2], Comment):
                    start -= 1
                while start and not isinstance(run[start - 1][2], Comment):
                    start -= 1
                if not seen_content:  # the file's opening comments stay at the top
                    run = run[start:]
                    start = 0
                texts = [gap.as_string() for _, _, gap in run]
                item.trivia.indent = "".join(texts) + item.trivia.indent
                self.kept[id(item)] = "".join(texts[:start])
                for gap_body, gap_index, _ in run:
                    gap_body[gap_index] = (None, Null())
            run, seen_content = [], True
        if seen_content and run:
            self.trailer = "".join(gap.as_string() for _, _, gap in run)
            for gap_body, gap_index, _ in run:
                gap_body[gap_index] = (None, Null())

    def _headers(self) -> list[Any]:
        return [item for kind, _, _, item in _layout(self.document.body) if kind == "header"]

    def _delete(self, container: Any, key: str) -> None:
        """Delete ``container[key]``; the comments its headers held that were not theirs go to the next header."""
        before = self._headers()
        del container[key]
        left = {id(header) for header in self._headers()}
        handed = ""
        for header in before:
            if id(header) not in left:
                handed += self.kept.pop(id(header), "")
            elif handed:
                header.trivia.indent = handed + header.trivia.indent
                self.kept[id(header)] = handed + self.kept.get(id(header), "")
                handed = ""
        self.trailer = handed + self.trailer

    def apply(self, container: Any, old: dict[str, Any], new: dict[str, Any], whole: bool = False,
              depth: int = 0) -> None:
        """Make the tomlkit ``container`` say ``new`` where it says ``old``, touching only what differs;
        ``whole``: a changed table one level down (``[sources.<id>]``) is replaced, not edited."""
        from tomlkit.items import AoT, InlineTable, Table

        inline = isinstance(container, InlineTable)
        for key in [key for key in old if key not in new]:
            if key in container:
                self._delete(container, key)
        for key, value in new.items():
            if key in old and same(old[key], value):
                continue  # also a default the file leaves out (`enabled`): it stays left out
            if whole and depth == 1 and key in container:
                self._delete(container, key)
            if key not in container:
                item = _toml_item(value, inline)
                indent = "" if inline or isinstance(item, Table | AoT) else _key_indent(container)
                container[key] = item
                if not inline:  # tomlkit copies any space of the header's indent, which may now hold comments
                    item.trivia.indent = item.trivia.indent.rstrip(" \t") + indent
            elif key in old and isinstance(value, dict) and isinstance(old[key], dict) and isinstance(
                    container[key], dict):
                self.apply(container[key], old[key], value, whole, depth + 1)
            else:
                _replace(container, key, _toml_item(value, inline))


def _replace(container: Any, key: str, item: Any) -> None:
    """``container[key] = item``, which keeps the line's comment; also keep the comment's column."""
    from tomlkit.container import Container
    from tomlkit.items import AoT, Table

    # container[key] of a boolean is a plain bool: ask the container for the item itself
    owner = container.value if isinstance(container, Table) else container
    current: Any = owner.item(key) if isinstance(owner, Container) else None
    was = current.as_string() if hasattr(current, "trivia") and current.trivia.comment else None
    container[key] = item
    if was is None or isinstance(item, Table | AoT) or "\n" in was + item.as_string():
        return
    space = item.trivia.comment_ws
    if space.strip(" ") == "":
        item.trivia.comment_ws = " " * max(1, len(space) + len(was) - len(item.as_string()))


def _layout(body: list[tuple[Any, Any]]) -> Iterator[tuple[str, list[Any], int, Any]]:
    """The items of a tomlkit body in the order they are rendered: "gap" (a blank or comment line),
    "value" (a key and its value) or "header" (a table that opens with its own ``[header]`` line)."""
    from tomlkit.items import AoT, Comment, Null, Table, Whitespace

    for index, (key, item) in enumerate(body):
        if isinstance(item, Null):
            continue
        if key is None and isinstance(item, Whitespace | Comment):
            yield "gap", body, index, item
        elif isinstance(item, AoT):
            for element in item.body:
                yield "header", body, index, element
                yield from _layout(element.value.body)
        elif isinstance(item, Table):
            if not item.is_super_table():
                yield "header", body, index, item
            yield from _layout(item.value.body)
        else:
            yield "value", body, index, item


def _key_indent(container: Any) -> str:
    """How the last key of a table is indented (``  name = ...``), for a key added after it."""
    from tomlkit.items import AoT, Null, Table

    body = container.value.body if isinstance(container, Table) else getattr(container, "body", [])
    values = [item for key, item in body if key is not None and not isinstance(item, Table | AoT | Null)]
    indent: str = values[-1].trivia.indent if values else ""
    return indent if indent.strip(" \t") == "" else ""


def _toml_item(value: Any, inline: bool = False) -> Any:
    """A new tomlkit item for ``value``: dates in the documented RFC 3339 form (``...T10:00:00Z``),
    tables as ``[header]`` tables (inline inside an inline table or an array)."""
    import tomlkit

    if isinstance(value, datetime):
        return tomlkit.value(value.isoformat().replace("+00:00", "Z"))
    if isinstance(value, dict):
        if inline:
            table: Any = tomlkit.inline_table()
        else:  # a table of tables (`sources`) opens no header of its own: `[sources.<id>]` does
            table = tomlkit.table(is_super_table=bool(value) and all(isinstance(v, dict) for v in value.values()))
        for key, item in value.items():
            table[key] = _toml_item(item, inline)
        return table
    if isinstance(value, list):
        array = tomlkit.array()
        array.extend(_toml_item(item, True) for item in value)
        return array
    return tomlkit.item(value)
