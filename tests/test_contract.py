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
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from pixsrc import registry
from pixsrc.testing import ContractError, check_controller, context_for, fetch_transfer, read_asset
from pixsrc.types import Asset, Checksum, Controller, Transfer, TransferError

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
    made: list[Controller] = []

    def make() -> Controller:
        made.append(stype.factory(context_for(stype, dict(config))))
        return made[-1]

    def mutate() -> None:
        config["color"] = "blue"

    report = check_controller(make, mutate=mutate)
    assert (report.assets, report.mutated) == (5, 5)
    # its local_path transfers live in the controller's own temporary folder, gone after close()
    folders = {getattr(c, "_folder", None) for c in made}
    assert folders == {None}, "close() left the temporary folder behind"


# -- remote-gallery, over a real loopback HTTP server -------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each small answer waits ~40 ms for a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served by http.server (folder listings, Last-Modified only, no Range): (root, base URL)."""
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
        write_tree(root / "g", {"a.jpg": files["a.jpg"]})
        # http.server's only validator is Last-Modified, in whole seconds: move it past this second
        later = time.time() + 5
        os.utime(root / "g" / "a.jpg", (later, later))
        _write_index(root / "g", files)

    report = check_controller(controller_factory("remote-gallery", {"url": gallery_url, "index": index}),
                              mutate=mutate)
    assert (report.assets, report.mutated) == (len(files), 1)
    # html: versions are unknown at listing time; every file was re-checked with If-Modified-Since
    assert report.conditional_checks == (len(files) if index == "html" else 0)


@pytest.mark.parametrize("mode", ["nginx", "apache", "python", "json"])
def test_remote_gallery_contract_with_ranges(tmp_path: Path, mode: str) -> None:
    """Against tests/support/gallery_server.py: ETags, Range + If-Range, 304s, three listing styles."""
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
        assert report.range_checks == len(files)
        assert any("range" in r.headers for r in gallery.requests), "the contract never asked for a range"
        assert gallery.heads() == []
        if index == "html":
            assert report.conditional_checks == len(files)
            assert any("if-none-match" in r.headers for r in gallery.requests)


# -- the contract catches broken controllers ---------------------------------------------------------


@dataclass
class Files:
    """A loopback server for FakeController: ``files`` at ``/<quoted path>``, Range and conditional
    GETs honoured, unless one of the flags breaks a rule."""

    files: dict[str, bytes]
    bad_offset: bool = False  # 206 that claims the asked offset but sends the file from byte 0
    ignore_if_range: bool = False  # a Range is honoured even when If-Range no longer matches
    validators: bool = True  # ETag and Last-Modified on every answer
    always_304: bool = False  # any conditional GET is answered 304
    requests: list[dict[str, str]] = field(default_factory=list)

    def etag(self, data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    def __enter__(self) -> Files:
        files = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                files.requests.append({k.lower(): v for k, v in self.headers.items()})
                data = files.files.get(unquote(urlsplit(self.path).path).lstrip("/"))
                if data is None:
                    self.answer(404, b"")
                    return
                tag = files.etag(data)
                headers = {"ETag": tag, "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"} if files.validators else {}
                conditional = self.headers.get("If-None-Match")
                if conditional is not None and (files.always_304 or conditional == tag):
                    self.answer(304, b"", headers)
                    return
                wanted = self.headers.get("Range", "")
                if_range = self.headers.get("If-Range")
                if wanted.startswith("bytes=") and (if_range in (None, tag) or files.ignore_if_range):
                    start = int(wanted[len("bytes="):].rstrip("-"))
                    if start >= len(data):
                        self.answer(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                        return
                    body = data if files.bad_offset else data[start:]
                    self.answer(206, body, {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                    return
                self.answer(200, data, headers)

            def answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"


class FakeController:
    """A controller over a ``Files`` server; the flags break one rule each."""

    def __init__(self, server: Files, *, lie_size: bool = False, unknown_version: bool = False,
                 version: Callable[[str, bytes], str] = lambda rel, data: hashlib.md5(data).hexdigest(),
                 transfer: Callable[[Transfer], Any] = lambda t: t, same_as: dict[str, str] | None = None,
                 validator: bool = False) -> None:
        self.server, self.lie_size, self.unknown_version = server, lie_size, unknown_version
        self.version, self.wrap, self.same_as, self.validator = version, transfer, same_as or {}, validator

    def list_assets(self) -> Iterator[Asset]:
        for rel, data in self.server.files.items():
            digest = hashlib.sha256(data).hexdigest()
            yield Asset(id=rel.lstrip("/").split("#")[0], path=rel,
                        version="" if self.unknown_version else self.version(rel, data),
                        size=len(data) + (1 if self.lie_size else 0), checksum=Checksum("sha256", digest),
                        same_as=self.same_as.get(rel))

    def transfer(self, asset: Asset) -> Transfer:
        data = self.server.files[asset.path]
        return self.wrap(Transfer(url=self.server.url + quote(asset.path),
                                  validator=self.server.etag(data) if self.validator else None))

    def close(self) -> None:
        pass


GOOD = {"x.png": b"0123456789", "d/y.png": b"abcdef"}


def test_fake_controller_passes() -> None:
    with Files(dict(GOOD)) as server:
        report = check_controller(lambda: FakeController(server, validator=True))
        assert report.assets == 2 and report.range_checks == 2
        ranged = [r for r in server.requests if "range" in r]
        assert ranged and all(r.get("if-range") for r in ranged)  # the validator guards every resume


def _raise(*args: Any) -> TransferError:
    raise KeyError("status")


@pytest.mark.parametrize(("files", "server_flags", "kwargs", "expected"), [
    ({**GOOD, "/abs.png": b"1"}, {}, {}, "is absolute"),
    ({**GOOD, "a/../b.png": b"1"}, {}, {}, "contains '..'"),
    ({**GOOD, "a\\b.png": b"1"}, {}, {}, "backslash"),
    ({**GOOD, "x.png#2": b"1"}, {}, {}, "listed twice"),
    (GOOD, {}, {"lie_size": True}, "the asset says size="),
    (GOOD, {"bad_offset": True}, {}, "are not the last"),
    (GOOD, {"validators": False}, {"unknown_version": True}, "neither ETag nor Last-Modified"),
    (GOOD, {"ignore_if_range": True}, {"validator": True}, "stale If-Range"),
    (GOOD, {}, {"same_as": {"d/y.png": "x.png"}}, "the bytes differ"),
    (GOOD, {}, {"same_as": {"d/y.png": "nope"}}, "is not another asset"),
    (GOOD, {}, {"transfer": lambda t: Transfer(url=t.url, headers={"Authorization": "Bearer k"})},
     "carries a credential"),
    (GOOD, {}, {"transfer": lambda t: Transfer(url=t.url, headers={"X-Bad": "a\r\nInjected: 1"})},
     "CR, LF or NUL"),
    (GOOD, {}, {"transfer": lambda t: Transfer(url="ftp://127.0.0.1/x")}, "not an http(s) URL"),
    (GOOD, {}, {"transfer": lambda t: Transfer(url=t.url, on_error=_raise)}, "raised KeyError"),
    (GOOD, {}, {"transfer": lambda t: t.url}, "not pixsrc.types.Transfer"),
])
def test_contract_catches(files: dict[str, bytes], server_flags: dict[str, Any], kwargs: dict[str, Any],
                          expected: str) -> None:
    with Files(dict(files), **server_flags) as server, \
            pytest.raises(ContractError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_controller(lambda: FakeController(server, **kwargs))


def test_contract_catches_unstable_versions() -> None:
    counter = iter(range(1000))
    with Files(dict(GOOD)) as server, pytest.raises(ContractError, match="changed between two listings"):
        check_controller(lambda: FakeController(server, version=lambda rel, data: str(next(counter))))


def test_contract_catches_version_not_following_content() -> None:
    with Files(dict(GOOD)) as server:
        def mutate() -> None:
            server.files["x.png"] = b"changed"

        with pytest.raises(ContractError, match="content changed but the version stayed"):
            check_controller(lambda: FakeController(server, version=lambda rel, data: "v1"), mutate=mutate)
        with pytest.raises(ContractError, match="changed nothing"):
            check_controller(lambda: FakeController(server), mutate=lambda: None)


def test_contract_checks_unknown_versions_with_conditional_gets() -> None:
    """version="": the engine keeps a file while a conditional GET answers 304; a server that says 304
    for changed content (or 200 for unchanged content) breaks incremental fetches."""
    with Files(dict(GOOD)) as server:
        def mutate() -> None:
            server.files["x.png"] = b"changed"

        report = check_controller(lambda: FakeController(server, unknown_version=True), mutate=mutate)
        assert (report.mutated, report.conditional_checks) == (1, 2)
        server.files = dict(GOOD)
        server.always_304 = True
        with pytest.raises(ContractError, match="content changed but the conditional GET .* answered 304"):
            check_controller(lambda: FakeController(server, unknown_version=True), mutate=mutate)


def test_fetch_transfer_refreshes_once_after_a_401() -> None:
    class Rotating:
        def __init__(self) -> None:
            self.token, self.refused = "old", []

        def headers(self) -> dict[str, str]:
            return {"X-Token": self.token}

        def unauthorized(self, sent: Mapping[str, str], /) -> None:
            self.refused.append(sent["X-Token"])
            self.token = "new"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            ok = self.headers.get("X-Token") == "new"
            body = b"secret bytes" if ok else b"no"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        auth = Rotating()
        answer = fetch_transfer(Transfer(url=f"http://127.0.0.1:{httpd.server_address[1]}/f", auth=auth))
        assert (answer.status, answer.body, auth.refused) == (200, b"secret bytes", ["old"])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_read_asset_reads_from_an_offset(tmp_path: Path) -> None:
    write_tree(tmp_path, {"big.jpg": os.urandom(300_000)})
    make = controller_factory("local-fs", {"path": str(tmp_path)})
    controller = make()
    asset = next(iter(controller.list_assets()))
    assert read_asset(controller, asset, 100_000) == (100_000, (tmp_path / "big.jpg").read_bytes()[100_000:])
