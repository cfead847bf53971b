"""The json-feed type against real HTTP servers on 127.0.0.1: pixsrc's contract suite, the listing, the
token's reach, broken feeds, and the installed plugin through the real ``pixsrc`` command.

(The module has a name of its own: pixsrc's CI runs these tests in the same pytest run as its own.)
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pixsrc.cli.app import app
from pixsrc.errors import AuthRequired, SourceUnavailable
from pixsrc.testing import check_controller, context_for
from pixsrc.types import Controller, SourceContext
from typer.testing import CliRunner

from pixsrc_json_feed import SOURCE_TYPE

# -- a site on 127.0.0.1, and pixsrc's user paths in tmp_path ------------------------------------


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pixsrc's config, state and credentials in tmp_path: a test never reads or writes the user's."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIXSRC_CONFIG", str(tmp_path / "config" / "sources.toml"))
    monkeypatch.setenv("PIXSRC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PIXSRC_TOKEN_STORE", "file")  # credentials in the state dir, not the OS keyring
    monkeypatch.setenv("PIXSRC_RETRY_BASE", "0.001")  # retries against a local server need not wait
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@dataclass
class Site:
    """A folder served over HTTP (Last-Modified and If-Modified-Since, as http.server does them)."""

    root: Path
    url: str = ""  # http://127.0.0.1:PORT/
    token: str | None = None
    """When set, requests for paths under ``private`` need ``Authorization: Bearer <token>``."""
    private: str = "/"
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Authorization header) of every request, in order."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    site: Site


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each small answer waits ~40 ms for a delayed ACK
    server: _Server

    def send_head(self) -> Any:
        site = self.server.site
        sent = self.headers.get("Authorization")
        site.requests.append((self.path, sent))
        if site.token and self.path.startswith(site.private) and sent != f"Bearer {site.token}":
            self.send_error(401, "a Bearer token is needed")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], Site]]:
    """``serve(name)`` starts a site for the folder ``tmp_path/name``; each site is its own origin."""
    servers: list[_Server] = []

    def start(name: str) -> Site:
        site = Site(tmp_path / name)
        site.root.mkdir()
        server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(site.root)))
        server.site = site
        site.url = f"http://127.0.0.1:{server.server_address[1]}/"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return site

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- the feed -------------------------------------------------------------------------------------

VERSION = "https://jsonfeed.org/version/1.1"
FILES = {
    "uploads/2024/cat.jpg": b"\xff\xd8\xff\xe0 a cat " * 300,
    "uploads/2024/dog.png": b"\x89PNG\r\n\x1a\n a dog " * 40,
    "uploads/banner.jpg": b"\xff\xd8\xff\xe0 a banner",
    "media/clip.mp4": b"\x00\x00\x00\x18ftypmp42 a clip " * 50,
    "media/talk.mp3": b"ID3 a talk, audio: not listed",
}
CDN_FILES = {"img/cat.jpg": b"\xff\xd8\xff\xe0 another cat, on the CDN"}


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def write_feed(feed: Site, cdn: Site) -> None:
    """Two pages: images, a banner, attachments (a video and an audio file), an image on another
    host, a malformed item, one image in two items, one image at two query strings."""
    write(feed.root, FILES)
    write(cdn.root, CDN_FILES)
    first = {"version": VERSION, "title": "Example photos", "next_url": "feed-2.json", "items": [
        {"id": "1", "image": "/uploads/2024/cat.jpg", "banner_image": "uploads/banner.jpg",
         "attachments": [{"url": "media/clip.mp4", "mime_type": "video/mp4"},
                         {"url": "media/talk.mp3", "mime_type": "audio/mpeg"}]},
        {"id": "2", "image": f"{cdn.url}img/cat.jpg"},
        {"id": "3", "content_text": "no image at all"},
        {"id": "4", "attachments": "not a list"},
    ]}
    second = {"version": VERSION, "title": "Example photos", "items": [
        {"id": "5", "image": "uploads/2024/dog.png"},
        {"id": "6", "image": "uploads/2024/cat.jpg"},
        {"id": "7", "image": "uploads/2024/dog.png?w=400"},
    ]}
    (feed.root / "feed.json").write_text(json.dumps(first))
    (feed.root / "feed-2.json").write_text(json.dumps(second))


def listing_of(config: dict[str, Any], secret: str | None = None) -> tuple[list[Any], list[str]]:
    context = context_for(SOURCE_TYPE, config, secret=secret)
    warnings: list[str] = []
    context.warn = warnings.append
    controller = SOURCE_TYPE.factory(context)
    try:
        return list(controller.list_assets()), warnings
    finally:
        controller.close()


@pytest.fixture
def sites(serve: Callable[[str], Site]) -> tuple[Site, Site]:
    feed, cdn = serve("feed"), serve("cdn")
    write_feed(feed, cdn)
    return feed, cdn


def test_contract(sites: tuple[Site, Site]) -> None:
    feed, cdn = sites
    config = {"url": f"{feed.url}feed.json", "banner_images": True}

    def make() -> Controller:
        return SOURCE_TYPE.factory(context_for(SOURCE_TYPE, config))

    def mutate() -> None:  # Last-Modified counts whole seconds: move the mtime well past the first answer
        changed = cdn.root / "img" / "cat.jpg"
        changed.write_bytes(b"\xff\xd8\xff\xe0 the CDN's cat, edited")
        later = changed.stat().st_mtime + 10
        os.utime(changed, (later, later))

    report = check_controller(make, mutate=mutate)
    assert report.assets == 6
    listed = [*(p for p in FILES if not p.endswith(".mp3")), "uploads/2024/dog.png"]  # dog.png?w=400 too
    assert report.bytes_read == sum(len(FILES[p]) for p in listed) + len(CDN_FILES["img/cat.jpg"])
    assert (report.mutated, report.conditional_checks) == (1, 6)


def test_listing(sites: tuple[Site, Site]) -> None:
    feed, cdn = sites
    assets, warnings = listing_of({"url": f"{feed.url}feed.json"})
    cdn_folder = f"127.0.0.1_{cdn.url.rsplit(':', 1)[1].rstrip('/')}"
    query = hashlib.sha256(b"w=400").hexdigest()[:8]
    assert [(a.path, a.media_type) for a in assets] == [
        ("uploads/2024/cat.jpg", "image/jpeg"),
        ("media/clip.mp4", "video/mp4"),  # the audio attachment is not listed
        (f"{cdn_folder}/img/cat.jpg", "image/jpeg"),
        ("uploads/2024/dog.png", "image/png"),
        (f"uploads/2024/dog-{query}.png", "image/png"),
    ]  # no banner (banner_images is off); the cat of item 6 is item 1's
    assert {a.version for a in assets} == {""}
    assert assets[0].id == f"{feed.url}uploads/2024/cat.jpg"
    assert len(warnings) == 1 and "item #3 skipped" in warnings[0] and "attachments" in warnings[0]

    only_first, _ = listing_of({"url": f"{feed.url}feed.json", "max_pages": 1, "attachments": False})
    assert [a.path for a in only_first] == ["uploads/2024/cat.jpg", f"{cdn_folder}/img/cat.jpg"]


def test_max_pages_says_when_the_feed_has_more(sites: tuple[Site, Site]) -> None:
    feed, _ = sites
    _, warnings = listing_of({"url": f"{feed.url}feed.json", "max_pages": 1})
    assert warnings[-1] == ("read max_pages=1 pages and stopped; the feed has more "
                            "(pixsrc edit contract --set max_pages=N)")


def test_the_token_goes_to_the_feeds_own_origin_only(sites: tuple[Site, Site]) -> None:
    feed, cdn = sites
    feed.token = "s3cret-feed-token"
    config = {"url": f"{feed.url}feed.json"}
    report = check_controller(lambda: SOURCE_TYPE.factory(context_for(SOURCE_TYPE, config, secret=feed.token)))
    assert report.assets == 5
    assert feed.requests and {sent for _, sent in feed.requests} == {f"Bearer {feed.token}"}
    assert cdn.requests and {sent for _, sent in cdn.requests} == {None}


@pytest.mark.parametrize(("secret", "why"), [(None, "needs an access token"),
                                             ("wrong", "refused the stored access token")])
def test_a_private_feed_without_the_right_token(sites: tuple[Site, Site], secret: str | None, why: str) -> None:
    feed, _ = sites
    feed.token = "s3cret-feed-token"
    with pytest.raises(AuthRequired, match=why) as caught:
        listing_of({"url": f"{feed.url}feed.json"}, secret=secret)
    assert caught.value.hint == "store its access token: pixsrc auth login contract"
    assert "s3cret" not in str(caught.value) and "wrong" not in str(caught.value)


@pytest.mark.parametrize(("body", "expected"), [
    ("<html><body>a blog</body></html>", "is not a JSON Feed (the document: Invalid JSON"),
    ('{"hello": "world"}', "is not a JSON Feed (version: Field required)"),
    ('{"version": "1.0", "items": []}', "is not a JSON Feed (version '1.0')"),
    ('{"version": "https://jsonfeed.org/version/1.1", "items": [], "next_url": "feed.json"}',
     "loops back to a page already read"),
])
def test_what_is_not_a_feed(serve: Callable[[str], Site], body: str, expected: str) -> None:
    site = serve("site")
    (site.root / "feed.json").write_text(body)
    with pytest.raises(SourceUnavailable) as caught:
        listing_of({"url": f"{site.url}feed.json"})
    assert expected in caught.value.message


def test_a_missing_feed_is_unavailable(serve: Callable[[str], Site]) -> None:
    site = serve("site")
    with pytest.raises(SourceUnavailable, match="HTTP 404"):
        listing_of({"url": f"{site.url}feed.json"})


def test_verify_names_the_feed(sites: tuple[Site, Site]) -> None:
    feed, _ = sites
    context: SourceContext = context_for(SOURCE_TYPE, {"url": f"{feed.url}feed.json"})
    controller = SOURCE_TYPE.factory(context)
    try:
        assert controller.verify() == "Example photos"  # type: ignore[attr-defined]
    finally:
        controller.close()


# -- the installed plugin through pixsrc's own command line -------------------------------------------


def pixsrc(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def test_pixsrc_adds_and_fetches_a_feed(sites: tuple[Site, Site], tmp_path: Path) -> None:
    feed, cdn = sites
    shown = pixsrc("types", "json-feed")
    assert shown.exit_code == 0 and "origin: pixsrc-json-feed 0.1.0" in shown.stdout
    added = pixsrc("add", "json-feed", "--name", "Photos", "--set", f"url={feed.url}feed.json", "--no-input")
    assert added.exit_code == 0, added.stderr
    dest = tmp_path / "out"
    fetched = pixsrc("fetch", "photos", "--dest", str(dest), "--json", "-q")
    assert fetched.exit_code == 0, fetched.stderr
    report = json.loads(fetched.stdout)["sources"][0]
    assert (report["listed"], report["downloaded"], report["failed"]) == (5, 5, 0)
    assert (dest / "uploads/2024/cat.jpg").read_bytes() == FILES["uploads/2024/cat.jpg"]
    assert (dest / "media/clip.mp4").read_bytes() == FILES["media/clip.mp4"]
    assert "item #3 skipped" in fetched.stderr  # warnings keep -q
    again = pixsrc("fetch", "photos", "--dest", str(dest), "--json", "-q")
    report = json.loads(again.stdout)["sources"][0]
    assert (report["unchanged"], report["downloaded"], report["updated"]) == (5, 0, 0)


def test_pixsrc_refuses_a_bad_config() -> None:
    bad_url = pixsrc("add", "json-feed", "--set", "url=ftp://example.org/feed.json", "--no-input")
    assert bad_url.exit_code == 2 and "url" in bad_url.stderr and "http://" in bad_url.stderr
    bad_pages = pixsrc("add", "json-feed", "--set", "url=https://example.org/feed.json", "--set", "max_pages=0",
                       "--no-input")
    assert bad_pages.exit_code == 2 and "max_pages" in bad_pages.stderr and "between 1 and 1000" in bad_pages.stderr
    unknown = pixsrc("add", "json-feed", "--set", "url=https://example.org/feed.json", "--set", "colour=red",
                     "--no-input")
    assert unknown.exit_code == 2 and "colour" in unknown.stderr


def test_pixsrc_ends_with_exit_3_when_the_files_need_a_token(sites: tuple[Site, Site], tmp_path: Path) -> None:
    feed, _ = sites
    feed.token, feed.private = "s3cret-feed-token", "/uploads/"  # a public feed, private files
    assert pixsrc("add", "json-feed", "--name", "Photos", "--set", f"url={feed.url}feed.json",
                  "--no-input").exit_code == 0
    denied = pixsrc("fetch", "photos", "--dest", str(tmp_path / "out"))
    assert denied.exit_code == 3
    assert "pixsrc auth login photos" in denied.stderr
    allowed = pixsrc("fetch", "photos", "--dest", str(tmp_path / "out"), "--json", "-q",
                     env={"PIXSRC_AUTH_PHOTOS": feed.token})
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["sources"][0]["failed"] == 0
    assert feed.token not in allowed.stdout + allowed.stderr
