"""Which files count as images and videos: a fixed table, the same on every machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pixsrc.sources import is_media, media_type


@pytest.mark.parametrize("name", ["a.jpg", "B.JPEG", "c.png", "d.heic", "e.webp", "f.jfif", "g.cr3", "h.mp4",
                                  "i.MOV", "j.mkv", "k.flv", "l.wmv", "m.3gp", "dir.d/n.tiff", "o.svg"])
def test_images_and_videos_count(name: str) -> None:
    assert is_media(name)
    kind = media_type(name)
    assert kind is not None and kind.split("/")[0] in ("image", "video")


@pytest.mark.parametrize("name", ["a.txt", "b.html", "c.pdf", "d.json", "noext", "e.", ".jpg.part", "f.jpg/"])
def test_other_files_do_not(name: str) -> None:
    assert not is_media(name)


def test_other_types_still_come_from_mimetypes() -> None:
    assert media_type("notes.txt") == "text/plain" and media_type("README") is None


def test_deciding_reads_no_system_mime_table() -> None:
    """mimetypes.init() reads /etc/mime.types & co (~28 ms, and a different answer per OS): a
    listing of images and videos must not trigger it. In a fresh interpreter: others may have here."""
    code = ("from pixsrc.sources import is_media, media_type\n"
            "assert is_media('a.jpg') and media_type('b.mp4') == 'video/mp4' and not is_media('c.txt')\n"
            "import mimetypes\n"
            "print(mimetypes.inited)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("path", ["a.jpg", "a/b.JPG", ".jpg", "..jpg", "a/.jpg", "a/..b.jpg", "noext", "a.", "a.b/c",
                                  "a.b/c.d", "...", ".a.b", "x/.hidden.png", "", "/", "a/b/"])
def test_extension_agrees_with_splitext(path: str) -> None:
    import posixpath

    from pixsrc.sources import extension

    assert extension(path) == posixpath.splitext(path)[1].lower()
