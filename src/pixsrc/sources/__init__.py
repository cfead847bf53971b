"""Built-in source types. Each module defines ``SOURCE_TYPE`` and is imported only when used."""

from __future__ import annotations

import functools
import mimetypes
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

# What counts as an image or a video, by extension: a fixed table, not the system's. mimetypes reads
# /etc/mime.types and the like on first use (~28 ms a run), and the same gallery would then list
# different files on Debian, macOS and Windows. Other files' types (for `all_files`) still come
# from mimetypes, asked only for them.
_MEDIA = {
    # images
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".jfif": "image/jpeg",
    ".png": "image/png", ".apng": "image/apng", ".gif": "image/gif", ".webp": "image/webp",
    ".avif": "image/avif", ".heic": "image/heic", ".heif": "image/heif", ".jxl": "image/jxl",
    ".jp2": "image/jp2", ".jpx": "image/jpx", ".jxr": "image/jxr", ".bmp": "image/bmp",
    ".tif": "image/tiff", ".tiff": "image/tiff", ".svg": "image/svg+xml", ".ico": "image/vnd.microsoft.icon",
    ".exr": "image/x-exr", ".hdr": "image/vnd.radiance", ".psd": "image/vnd.adobe.photoshop",
    ".xcf": "image/x-xcf", ".pcx": "image/vnd.zbrush.pcx", ".djvu": "image/vnd.djvu",
    ".pbm": "image/x-portable-bitmap", ".pgm": "image/x-portable-graymap", ".ppm": "image/x-portable-pixmap",
    ".pnm": "image/x-portable-anymap", ".xbm": "image/x-xbitmap", ".xpm": "image/x-xpixmap",
    ".pct": "image/pict", ".pic": "image/pict", ".pict": "image/pict", ".ras": "image/x-cmu-raster",
    ".rgb": "image/x-rgb", ".xwd": "image/x-xwindowdump", ".ief": "image/ief",
    # camera raw
    ".dng": "image/x-adobe-dng", ".cr2": "image/x-canon-cr2", ".cr3": "image/x-canon-cr3",
    ".crw": "image/x-canon-crw", ".nef": "image/x-nikon-nef", ".arw": "image/x-sony-arw",
    ".orf": "image/x-olympus-orf", ".raf": "image/x-fuji-raf", ".rw2": "image/x-panasonic-rw2",
    ".erf": "image/x-epson-erf",
    # video
    ".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime", ".qt": "video/quicktime",
    ".mkv": "video/x-matroska", ".webm": "video/webm", ".avi": "video/x-msvideo", ".ogv": "video/ogg",
    ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".mpe": "video/mpeg", ".mpa": "video/mpeg",
    ".m1v": "video/mpeg", ".m2v": "video/mpeg", ".mts": "video/mp2t", ".m2ts": "video/mp2t",
    ".3gp": "video/3gpp", ".3g2": "video/3gpp2", ".flv": "video/x-flv", ".wmv": "video/x-ms-wmv",
    ".dv": "video/dv", ".mng": "video/x-mng", ".movie": "video/x-sgi-movie",
}


def extension(path: str) -> str:
    """``".jpg"`` for ``a/b.JPG``, lower case; "" for none. As ``posixpath.splitext`` (a name's
    leading dots start no extension: ``.jpg`` has none)."""
    base = path[path.rfind("/") + 1:]
    dot = base.rfind(".")
    if dot <= 0 or not base[:dot].strip("."):
        return ""
    return base[dot:].lower()


def image_or_video(path: str) -> str | None:
    """The media type of an image or a video, else None (other files are not asked about)."""
    return _MEDIA.get(extension(path))


def is_media(path: str) -> bool:
    return image_or_video(path) is not None


def media_type(path: str) -> str | None:
    ext = extension(path)
    return _MEDIA.get(ext) or _other_type(ext)


@functools.lru_cache(maxsize=512)
def _other_type(ext: str) -> str | None:
    """A file that is not an image or a video, by extension (cached: a listing has a handful)."""
    return mimetypes.guess_type("x" + ext, strict=False)[0] if ext else None


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
