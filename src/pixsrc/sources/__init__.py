"""Built-in source types. Each module defines ``SOURCE_TYPE`` and is imported only when used."""

from __future__ import annotations

import mimetypes
import posixpath
from datetime import UTC, datetime

# Formats mimetypes does not know everywhere.
_EXTRA_MEDIA = {".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif", ".jxl": "image/jxl",
                ".webp": "image/webp", ".dng": "image/x-adobe-dng", ".cr2": "image/x-canon-cr2",
                ".nef": "image/x-nikon-nef", ".arw": "image/x-sony-arw", ".mkv": "video/x-matroska",
                ".webm": "video/webm", ".m4v": "video/x-m4v", ".psd": "image/vnd.adobe.photoshop"}


def media_type(path: str) -> str | None:
    ext = posixpath.splitext(path)[1].lower()
    return _EXTRA_MEDIA.get(ext) or mimetypes.guess_type(path, strict=False)[0]


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
