"""The controller contract (pixsrc.testing) against every type we ship or test with.

Adding a type: write a ``make_controller`` (and, if you can, a ``mutate``) and call
``check_controller``; see ``test_remote_gallery_contract`` for a served one.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pixsrc import registry
from pixsrc.testing import ContractError, check_controller, context_for, read_asset
from pixsrc.types import Asset, Checksum, Controller

FILES = {
    "a.jpg": b"\xff\xd8 first " * 300,
    "b c.png": b"\x89PNG second" * 7,
    "sub/dir/ünï.gif": b"GIF89a third",
    "sub/empty.webp": b"",
    "sub/one.jpg": b"x",
}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def controller_factory(type_id: str, config: dict[str, Any]) -> Callable[[], Controller]:
    stype = registry.get(type_id)
    return lambda: stype.factory(context_for(stype, config))


# -- local-fs ---------------------------------------------------------------------------------------


def test_local_fs_contract(tmp_path: Path) -> None:
    root = tmp_path / "pictures"
    write_tree(root, FILES)
    (root / "notes.txt").write_text("not listed")

    def mutate() -> None:
        (root / "b c.png").write_bytes(b"\x89PNG second, longer now")

    make = controller_factory("local-fs", {"path": str(root)})
    report = check_controller(make, mutate=mutate, range_checks=10)
    assert report.assets == len(FILES)
    assert report.bytes_read == sum(len(d) for d in FILES.values())
    assert report.mutated == 1


# -- the demo plugin (tests/plugins/pixsrc-demo-plugin) ---------------------------------------------


def test_demo_plugin_contract() -> None:
    if not registry.is_installed("demo-pattern"):
        pytest.skip("pixsrc-demo-plugin is not installed (pip install -e tests/plugins/pixsrc-demo-plugin)")
    config = {"prefix": "tile", "count": 5, "color": "green"}
    stype = registry.get("demo-pattern")

    def make() -> Controller:
        return stype.factory(context_for(stype, dict(config)))

    def mutate() -> None:
        config["color"] = "blue"

    report = check_controller(make, mutate=mutate)
    assert (report.assets, report.mutated) == (5, 5)


# -- remote-gallery, over a real loopback HTTP server -------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each small answer waits ~40 ms for a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served by http.server (folder listings, no Range support): (root, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _write_index(root: Path, files: dict[str, bytes]) -> None:
    entries = [{"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for rel, data in sorted(files.items())]
    (root / "index.json").write_text(json.dumps({"assets": entries}))


@pytest.mark.parametrize("index", ["html", "json"])
def test_remote_gallery_contract(served: tuple[Path, str], index: str) -> None:
    root, url = served
    files = dict(FILES)
    del files["sub/dir/ünï.gif"]  # http.server's listing of non-ASCII names is covered by the gallery tests
    write_tree(root / "g", files)
    _write_index(root / "g", files)
    gallery_url = url + ("g/index.json" if index == "json" else "g/")

    def mutate() -> None:
        files["a.jpg"] = b"\xff\xd8 rewritten, and longer " * 300
        write_tree(root / "g", files)
        _write_index(root / "g", files)

    report = check_controller(controller_factory("remote-gallery", {"url": gallery_url, "index": index}),
                              mutate=mutate)
    assert (report.assets, report.mutated) == (len(files), 1)


@pytest.mark.parametrize("mode", ["nginx", "apache", "python", "json"])
def test_remote_gallery_contract_with_ranges(tmp_path: Path, mode: str) -> None:
    """Against tests/support/gallery_server.py: ETags, Range + If-Range, three listing styles."""
    from support.gallery_server import GalleryServer

    files = dict(FILES)
    with GalleryServer(tmp_path / "gallery", html_style="nginx" if mode == "json" else mode) as gallery:
        for rel, data in files.items():
            gallery.write(rel, data)
        url, index = (gallery.index_url, "json") if mode == "json" else (gallery.url, "html")

        def mutate() -> None:
            gallery.write("sub/one.jpg", b"y")  # same size, other bytes

        report = check_controller(controller_factory("remote-gallery", {"url": url, "index": index}),
                                  mutate=mutate, range_checks=len(files))
        assert (report.assets, report.mutated) == (len(files), 1)
        assert any("range" in r.headers for r in gallery.requests), "the contract never asked for a range"


# -- the contract catches broken controllers ---------------------------------------------------------


class _Stream:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset, self.pos = data, offset, offset

    def read(self, size: int) -> bytes:
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class FakeController:
    """A controller over a dict; the flags break one rule each."""

    def __init__(self, files: dict[str, bytes], *, bad_offset: bool = False, lie_size: bool = False,
                 version: Callable[[str, bytes], str] = lambda rel, data: hashlib.md5(data).hexdigest(),
                 ) -> None:
        self.files, self.bad_offset, self.lie_size, self.version = files, bad_offset, lie_size, version

    def list_assets(self) -> Iterator[Asset]:
        for rel, data in self.files.items():
            digest = hashlib.sha256(data).hexdigest()
            yield Asset(id=rel.lstrip("/").split("#")[0], path=rel, version=self.version(rel, data),
                        size=len(data) + (1 if self.lie_size else 0), checksum=Checksum("sha256", digest))

    def open(self, asset: Asset, offset: int = 0) -> _Stream:
        data = self.files[asset.path]
        if self.bad_offset and offset:
            return _Shifted(data, offset)
        return _Stream(data, offset)

    def close(self) -> None:
        pass


class _Shifted(_Stream):
    """Claims to start at ``offset`` but streams from the beginning."""

    def __init__(self, data: bytes, offset: int) -> None:
        super().__init__(data, offset)
        self.pos = 0


GOOD = {"x.png": b"0123456789", "d/y.png": b"abcdef"}


def test_fake_controller_passes() -> None:
    report = check_controller(lambda: FakeController(dict(GOOD)))
    assert report.assets == 2 and report.range_checks == 2


@pytest.mark.parametrize(("files", "kwargs", "expected"), [
    ({**GOOD, "/abs.png": b"1"}, {}, "is absolute"),
    ({**GOOD, "a/../b.png": b"1"}, {}, "contains '..'"),
    ({**GOOD, "a\\b.png": b"1"}, {}, "backslash"),
    ({**GOOD, "x.png#2": b"1"}, {}, "listed twice"),
    (GOOD, {"lie_size": True}, "the asset says size="),
    (GOOD, {"bad_offset": True}, "are not the last"),
])
def test_contract_catches(files: dict[str, bytes], kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ContractError, match=expected.replace("(", r"\(").replace("?", r"\?")):
        check_controller(lambda: FakeController(dict(files), **kwargs))


def test_contract_catches_unstable_versions() -> None:
    counter = iter(range(1000))
    with pytest.raises(ContractError, match="changed between two listings"):
        check_controller(lambda: FakeController(dict(GOOD), version=lambda rel, data: str(next(counter))))


def test_contract_catches_version_not_following_content() -> None:
    files = dict(GOOD)

    def mutate() -> None:
        files["x.png"] = b"changed"

    with pytest.raises(ContractError, match="content changed but the version stayed"):
        check_controller(lambda: FakeController(files, version=lambda rel, data: "v1"), mutate=mutate)
    with pytest.raises(ContractError, match="changed nothing"):
        check_controller(lambda: FakeController(dict(GOOD)), mutate=lambda: None)


def test_read_asset_reads_until_empty(tmp_path: Path) -> None:
    write_tree(tmp_path, {"big.jpg": os.urandom(300_000)})
    make = controller_factory("local-fs", {"path": str(tmp_path)})
    controller = make()
    asset = next(iter(controller.list_assets()))
    assert read_asset(controller, asset, 100_000) == (100_000, (tmp_path / "big.jpg").read_bytes()[100_000:])
