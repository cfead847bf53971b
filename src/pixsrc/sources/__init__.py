"""Built-in source types. Each module defines ``SOURCE_TYPE`` and is imported only when used."""

from __future__ import annotations

import functools
import mimetypes
import posixpath
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

# Formats mimetypes does not know everywhere.
_EXTRA_MEDIA = {".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif", ".jxl": "image/jxl",
                ".webp": "image/webp", ".dng": "image/x-adobe-dng", ".cr2": "image/x-canon-cr2",
                ".nef": "image/x-nikon-nef", ".arw": "image/x-sony-arw", ".mkv": "video/x-matroska",
                ".webm": "video/webm", ".m4v": "video/x-m4v", ".psd": "image/vnd.adobe.photoshop"}


def media_type(path: str) -> str | None:
    return _media_type_of(posixpath.splitext(path)[1].lower())


@functools.lru_cache(maxsize=512)
def _media_type_of(ext: str) -> str | None:
    """By extension, cached: a 50,000-file listing asks for a handful of extensions."""
    return _EXTRA_MEDIA.get(ext) or mimetypes.guess_type("x" + ext, strict=False)[0]


def is_media(path: str) -> bool:
    kind = media_type(path)
    return kind is not None and kind.split("/", 1)[0] in ("image", "video")


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time from an API or index ("Z" allowed); a time without an offset is UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int] | None:
    """An http(s) URL's origin (scheme, host, port; RFC 6454), None for anything else.

    Credentials are bound to an origin: ``http://h`` and ``https://h``, or ``h:80`` and ``h:8080``,
    are different places, and a key for one must not travel to the other.
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, an unbalanced IPv6 bracket
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def describe_invalid(exc: ValidationError) -> str:
    """The first problem of an API answer that is not the documented shape (a pydantic model's
    ValidationError), in a few words and never its data."""
    error = exc.errors(include_url=False, include_input=False)[0]
    if error["type"] == "json_invalid":
        return f"invalid JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
    where = ".".join(str(part) for part in error["loc"]) or "the document"
    return f"a document of an unexpected shape ({where}: {error['msg']})"
