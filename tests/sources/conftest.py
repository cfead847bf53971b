"""Fixtures of the source tests: a real HTTP gallery server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gallery_server import GalleryServer


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[GalleryServer]:
    """A running gallery: put files in ``gallery.root``; it answers at ``gallery.url``."""
    root = tmp_path / "served"
    root.mkdir()
    with GalleryServer(root) as server:
        yield server


@pytest.fixture
def other_host(tmp_path: Path) -> Iterator[GalleryServer]:
    """A second server (another host:port), to check that nothing crawls over to it."""
    root = tmp_path / "other-host"
    root.mkdir()
    (root / "stolen.jpg").write_bytes(b"other host")
    with GalleryServer(root) as server:
        yield server
