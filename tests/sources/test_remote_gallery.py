"""remote-gallery end to end: the real CLI against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.cli import run
from support.gallery_server import STYLES, GalleryServer

from pixsrc.types import Asset, SourceContext

MEDIA = {
    "a.jpg": b"\xff\xd8\xff\xe0 jpeg one",
    "b.png": b"\x89PNG\r\n\x1a\n png two" * 50,
    "sub/c.gif": b"GIF89a three",
    "sub/my photo \u00e9 #1.jpg": b"\xff\xd8 spaces, unicode and a hash",
    "sub/deeper/d.webp": b"RIFF....WEBP four",
}


def populate(gallery: GalleryServer, files: dict[str, bytes] = MEDIA) -> None:
    for rel, data in files.items():
        gallery.write(rel, data)


def tree(folder: Path) -> dict[str, bytes]:
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def add(url: str, *sets: str, source_id: str = "gal") -> None:
    args = ["add", "remote-gallery", "--id", source_id, "--name", source_id, "--set", f"url={url}"]
    for item in sets:
        args += ["--set", item]
    result = run(*args, "--no-input")
    assert result.exit_code == 0, result.stderr


def fetch(dest: Path, *args: str, source_id: str = "gal", code: int = 0) -> dict:
    result = run("fetch", source_id, "--dest", str(dest), "--json", *args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    document = json.loads(result.stdout)
    assert document["schema"] == 1
    (report,) = document["sources"]
    return report


def etag_of(data: bytes) -> str:
    """The gallery server's strong ETag for ``data``."""
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


# -- JSON index ---------------------------------------------------------------------------------


def test_json_index_downloads_everything_then_nothing(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery, {**MEDIA, "notes.txt": b"json indexes list any file"})
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"

    report = fetch(dest)
    assert tree(dest) == tree(gallery.root)
    assert (report["status"], report["listed"], report["downloaded"], report["failed"]) == ("ok", 6, 6, 0)
    assert report["bytes"] == sum(len(v) for v in tree(gallery.root).values())
    assert len(gallery.file_gets()) == 6
    assert all(r.headers.get("accept", "").startswith("application/json")
               for r in gallery.requests if r.rel == "index.json")

    gallery.clear_requests()
    again = fetch(dest)
    assert (again["listed"], again["unchanged"], again["downloaded"], again["updated"]) == (6, 6, 0, 0)
    assert again["bytes"] == 0
    assert gallery.file_gets() == []
    assert [r.rel for r in gallery.requests] == ["index.json"]
    assert tree(dest) == tree(gallery.root)


def test_json_index_paging_follows_next(gallery: GalleryServer, tmp_path: Path) -> None:
    files = {f"p{n:02}.jpg": f"page item {n}".encode() for n in range(7)}
    populate(gallery, files)
    gallery.page_size = 3
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"

    report = fetch(dest)
    assert (report["listed"], report["downloaded"]) == (7, 7)
    assert tree(dest) == files
    index_requests = [r.path for r in gallery.requests if r.rel == "index.json"]
    assert index_requests == ["/gallery/index.json", "/gallery/index.json?page=2",
                              "/gallery/index.json?page=3"]


def test_json_index_entries_without_url_use_the_path(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery)
    gallery.index_urls = False
    add(gallery.index_url, "index=auto")  # auto: the index answers JSON, so it is read as one
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert report["downloaded"] == len(MEDIA)
    assert tree(dest) == MEDIA


# -- HTML listings -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["html", "auto"])
@pytest.mark.parametrize("style", STYLES)
def test_html_listing_styles(gallery: GalleryServer, tmp_path: Path, style: str, mode: str) -> None:
    populate(gallery, {**MEDIA, "readme.txt": b"not media: skipped without all_files"})
    gallery.html_style = style
    add(gallery.url, f"index={mode}")
    dest = tmp_path / "dest"

    report = fetch(dest)
    assert tree(dest) == MEDIA
    assert (report["status"], report["listed"], report["downloaded"]) == ("ok", len(MEDIA), len(MEDIA))
    # every listing page was read, the deepest one included; the text file was never touched
    listing_pages = {r.rel for r in gallery.requests
                     if r.method == "GET" and (r.rel == "" or r.rel.endswith("/"))}
    assert listing_pages == {"", "sub/", "sub/deeper/"}
    assert not [r for r in gallery.requests if r.rel == "readme.txt"]
    assert sorted(r.rel for r in gallery.file_gets()) == sorted(MEDIA)

    assert gallery.heads() == []  # a fresh fetch learns each version from its GET's ETag
    assert all(gallery.status_of(r) == 200 for r in gallery.file_gets())

    gallery.clear_requests()
    again = fetch(dest)
    assert (again["unchanged"], again["downloaded"], again["updated"]) == (len(MEDIA), 0, 0)
    assert again["bytes"] == 0
    assert gallery.heads() == []
    # one conditional GET per file, with the ETag the first GET answered; all 304, no body sent
    rechecks = gallery.file_gets()
    assert sorted(r.rel for r in rechecks) == sorted(MEDIA)
    assert {r.rel: r.headers.get("if-none-match") for r in rechecks} == {
        rel: etag_of(data) for rel, data in MEDIA.items()}
    assert [gallery.status_of(r) for r in rechecks] == [304] * len(MEDIA)


def settled(gallery: GalleryServer, files: dict[str, bytes] = MEDIA, age: float = 2 * 86400) -> None:
    """Files last changed ``age`` seconds ago: an nginx listing's dates then version them."""
    when = time.time() - age
    for rel, data in files.items():
        gallery.write(rel, data, mtime=when)


def test_dated_listing_versions_files_so_a_re_fetch_asks_nothing(gallery: GalleryServer, tmp_path: Path) -> None:
    settled(gallery)
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert (report["downloaded"], report["bytes"]) == (len(MEDIA), sum(map(len, MEDIA.values())))
    assert tree(dest) == MEDIA

    gallery.clear_requests()
    again = fetch(dest)
    assert (again["unchanged"], again["downloaded"], again["updated"]) == (len(MEDIA), 0, 0)
    assert gallery.file_gets() == []  # the listings alone: size and date unchanged
    assert gallery.heads() == []

    # changed on the server (another size and date): only that file is asked for, whole
    gallery.write("sub/c.gif", b"GIF89a three, edited", mtime=time.time() - 86400)
    gallery.clear_requests()
    changed = fetch(dest)
    assert (changed["updated"], changed["unchanged"]) == (1, len(MEDIA) - 1)
    (get,) = gallery.file_gets()
    assert (get.rel, get.headers.get("if-none-match"), gallery.status_of(get)) == ("sub/c.gif", None, 200)
    assert (dest / "sub/c.gif").read_bytes() == b"GIF89a three, edited"


def test_files_changed_in_the_last_12_hours_are_still_rechecked(gallery: GalleryServer, tmp_path: Path) -> None:
    """A listing's date is to the minute, and may be local time up to 12 h behind UTC: a file changed
    within the last 12 hours (a moment ago, or 3 hours ago read as UTC) gets a conditional GET."""
    settled(gallery, {"old.jpg": b"old one"})
    settled(gallery, {"recent.jpg": b"changed a moment ago"}, age=0)
    settled(gallery, {"today.jpg": b"changed this morning"}, age=3 * 3600)
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    fetch(dest)
    gallery.clear_requests()
    again = fetch(dest)
    assert again["unchanged"] == 3
    rechecks = {r.rel: (gallery.status_of(r), r.headers.get("if-none-match")) for r in gallery.file_gets()}
    assert rechecks == {"recent.jpg": (304, etag_of(b"changed a moment ago")),
                        "today.jpg": (304, etag_of(b"changed this morning"))}


def test_a_manifest_of_learned_versions_moves_to_listed_ones_with_one_check(gallery: GalleryServer,
                                                                              tmp_path: Path) -> None:
    """recheck=true keeps the ETag versions (as before dated listings); turned off, each file is
    asked once with a conditional GET (304, nothing downloaded again), then never."""
    settled(gallery)
    add(gallery.url, "index=html", "recheck=true")
    dest = tmp_path / "dest"
    fetch(dest)
    gallery.clear_requests()
    assert fetch(dest)["unchanged"] == len(MEDIA)
    assert [gallery.status_of(r) for r in gallery.file_gets()] == [304] * len(MEDIA)

    assert run("edit", "gal", "--set", "recheck=false").exit_code == 0
    gallery.clear_requests()
    moved = fetch(dest)
    assert (moved["unchanged"], moved["downloaded"], moved["updated"], moved["bytes"]) == (len(MEDIA), 0, 0, 0)
    assert sorted((r.rel, gallery.status_of(r)) for r in gallery.file_gets()) == sorted(
        (rel, 304) for rel in MEDIA)
    gallery.clear_requests()
    assert fetch(dest)["unchanged"] == len(MEDIA)
    assert gallery.file_gets() == []


def test_files_no_longer_dated_are_asked_if_modified_since_not_downloaded_again(gallery: GalleryServer,
                                                                               tmp_path: Path) -> None:
    """Versions read from the listing carry no ETag: once the listing stops dating the files (here
    recheck=true; also a file touched, or another server), each is asked If-Modified-Since its
    recorded Last-Modified (the file's mtime), answered 304; nothing comes back whole."""
    settled(gallery)
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    fetch(dest)
    assert run("edit", "gal", "--set", "recheck=true").exit_code == 0
    gallery.clear_requests()
    report = fetch(dest)
    assert (report["unchanged"], report["bytes"]) == (len(MEDIA), 0)
    assert sorted((r.rel, gallery.status_of(r), "if-modified-since" in r.headers) for r in gallery.file_gets()) == \
        sorted((rel, 304, True) for rel in MEDIA)


@pytest.mark.parametrize("style", ["apache", "python"])
def test_listings_without_exact_dates_keep_conditional_gets(gallery: GalleryServer, tmp_path: Path,
                                                             style: str) -> None:
    """Apache's table listing (rounded sizes, local time) and Python's http.server (no dates) have no
    nginx rows: nothing is versioned by them, every file is re-checked."""
    settled(gallery)
    gallery.html_style = style
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    fetch(dest)
    gallery.clear_requests()
    assert fetch(dest)["unchanged"] == len(MEDIA)
    assert [gallery.status_of(r) for r in gallery.file_gets()] == [304] * len(MEDIA)


def test_html_all_files_includes_other_files(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery, {"a.jpg": b"img", "doc/readme.txt": b"text"})
    add(gallery.url, "index=html", "all_files=true")
    dest = tmp_path / "dest"
    fetch(dest)
    assert tree(dest) == {"a.jpg": b"img", "doc/readme.txt": b"text"}


def test_a_touched_file_answering_the_same_bytes_is_kept_not_rewritten(gallery: GalleryServer,
                                                                        tmp_path: Path) -> None:
    """Last-Modified only: a touched file answers 200 to the conditional GET. Its bytes are compared
    with the local file (hashed only now: downloads without a checksum are not hashed) and, equal, the
    local file stays as it was; the new validator is recorded, so the next check is a 304."""
    import os

    from pixsrc.state import State

    gallery.etags = False
    populate(gallery, {"a.jpg": b"same bytes", "b.jpg": b"other"})
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    fetch(dest)
    before = (dest / "a.jpg").stat()
    later = time.time() + 5
    os.utime(gallery.root / "a.jpg", (later, later))

    gallery.clear_requests()
    report = fetch(dest)
    assert (report["unchanged"], report["updated"], report["bytes"]) == (2, 0, len(b"same bytes"))
    assert {r.rel: gallery.status_of(r) for r in gallery.file_gets()} == {"a.jpg": 200, "b.jpg": 304}
    after = (dest / "a.jpg").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    state = State(Path(os.environ["PIXSRC_STATE_DIR"]) / "state.db")
    try:
        entries = {e.path: e for e in state.manifest("gal").values()}
    finally:
        state.close()
    assert entries["a.jpg"].sha256 == hashlib.sha256(b"same bytes").hexdigest()
    assert entries["b.jpg"].sha256 == ""  # never compared: never hashed

    gallery.clear_requests()
    fetch(dest)
    assert {r.rel: gallery.status_of(r) for r in gallery.file_gets()} == {"a.jpg": 304, "b.jpg": 304}


@pytest.mark.parametrize("mode", ["json", "html"])
def test_changed_file_on_server_is_updated(gallery: GalleryServer, tmp_path: Path, mode: str) -> None:
    populate(gallery)
    add(gallery.index_url if mode == "json" else gallery.url, f"index={mode}")
    dest = tmp_path / "dest"
    fetch(dest)

    gallery.write("sub/c.gif", b"GIF89a three, edited on the server")
    gallery.clear_requests()
    report = fetch(dest)
    assert (report["updated"], report["unchanged"], report["downloaded"]) == (1, len(MEDIA) - 1, 0)
    if mode == "json":  # the index's sha256 tells what changed: only that file is asked for
        assert [r.rel for r in gallery.file_gets()] == ["sub/c.gif"]
    else:  # every file is re-checked; only the changed one comes back whole
        sent = {r.rel: gallery.status_of(r) for r in gallery.file_gets()}
        assert sent == {rel: 200 if rel == "sub/c.gif" else 304 for rel in MEDIA}
    assert report["bytes"] == len(b"GIF89a three, edited on the server")
    assert (dest / "sub/c.gif").read_bytes() == b"GIF89a three, edited on the server"
    assert tree(dest) == tree(gallery.root)


@pytest.mark.parametrize("mode", ["json", "html"])
def test_deleted_on_server_reported_and_pruned_only_with_prune(gallery: GalleryServer, tmp_path: Path,
                                                               mode: str) -> None:
    populate(gallery)
    add(gallery.index_url if mode == "json" else gallery.url, f"index={mode}")
    dest = tmp_path / "dest"
    fetch(dest)

    (gallery.root / "sub/deeper/d.webp").unlink()
    report = fetch(dest)
    assert (report["deleted"], report["pruned"], report["unchanged"]) == (1, 0, len(MEDIA) - 1)
    assert [e["path"] for e in report["errors"]] == ["sub/deeper/d.webp"]
    assert (dest / "sub/deeper/d.webp").read_bytes() == MEDIA["sub/deeper/d.webp"]

    report = fetch(dest, "--prune")
    assert (report["deleted"], report["pruned"]) == (0, 1)
    assert not (dest / "sub/deeper").exists()  # the emptied folder goes too
    assert tree(dest) == tree(gallery.root)

    report = fetch(dest, "--prune")  # forgotten: nothing more to report
    assert (report["deleted"], report["pruned"], report["unchanged"]) == (0, 0, len(MEDIA) - 1)


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["json", "html"])
def test_truncated_body_is_resumed_with_range(gallery: GalleryServer, tmp_path: Path, mode: str) -> None:
    big = random.Random(7).randbytes(1_500_000)
    populate(gallery, {"big.jpg": big, "small.jpg": b"small"})
    gallery.truncate_once("big.jpg")
    add(gallery.index_url if mode == "json" else gallery.url, f"index={mode}")
    dest = tmp_path / "dest"

    report = fetch(dest)
    assert (report["status"], report["downloaded"], report["failed"]) == ("ok", 2, 0)
    assert (dest / "big.jpg").read_bytes() == big
    first, second = gallery.gets_of("big.jpg")
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={len(big) // 2}-"
    if mode == "html":  # the ETag of the first (cut) answer guards the resume
        assert second.headers["if-range"] == etag_of(big)
    # only the missing half came over the wire the second time
    assert report["bytes"] == len(big) + len(b"small")
    assert not list(dest.rglob("*.part"))


def test_resume_after_the_file_changed_starts_over(gallery: GalleryServer, tmp_path: Path) -> None:
    """A part file of the old version must not be glued to the new version's tail (If-Range)."""
    from pixsrc.sources.remote_gallery import RemoteGalleryConfig, RemoteGalleryController
    from pixsrc.tree import part_name
    from pixsrc.types import SourceContext

    old = random.Random(1).randbytes(400_000)
    new = random.Random(2).randbytes(400_000)
    populate(gallery, {"big.jpg": old})
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    dest.mkdir()
    # the part file an interrupted run of the old version left behind
    controller = RemoteGalleryController(SourceContext("gal", "gal", RemoteGalleryConfig(url=gallery.url,
                                                                                         index="html")))
    (asset,) = list(controller.list_assets())
    controller.close()
    (dest / part_name(asset.id, asset.version)).write_bytes(old[:100_000])
    gallery.write("big.jpg", new)  # the file changed on the server since
    gallery.clear_requests()

    report = fetch(dest)
    assert report["downloaded"] == 1
    assert (dest / "big.jpg").read_bytes() == new  # never old[:100_000] + new[100_000:]
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]
    for get in gallery.gets_of("big.jpg"):  # a resume without a validator would not be safe
        assert "range" not in get.headers or get.headers.get("if-range") not in (None, etag_of(new))


@pytest.mark.parametrize("mode", ["json", "html"])
def test_206_with_the_wrong_content_range_restarts_cleanly(gallery: GalleryServer, tmp_path: Path,
                                                           mode: str) -> None:
    big = random.Random(3).randbytes(600_000)
    populate(gallery, {"big.jpg": big})
    gallery.truncate_once("big.jpg")  # the first GET is cut at half: the engine resumes with a Range...
    gallery.wrong_range_once("big.jpg")  # ...answered 206 from another offset than it asked for
    add(gallery.index_url if mode == "json" else gallery.url, f"index={mode}")
    dest = tmp_path / "dest"

    report = fetch(dest)
    assert (report["status"], report["downloaded"], report["failed"]) == ("ok", 1, 0)
    assert (dest / "big.jpg").read_bytes() == big
    gets = gallery.gets_of("big.jpg")
    assert [g.headers.get("range") for g in gets] == [None, f"bytes={len(big) // 2}-", None]
    assert [gallery.status_of(g) for g in gets] == [200, 206, 200]
    assert not [p for p in dest.rglob("*") if p.name.endswith(".part")]


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_once_are_retried(gallery: GalleryServer, tmp_path: Path, status: int) -> None:
    populate(gallery)
    gallery.fail_once("b.png", status)
    gallery.fail_once("sub/c.gif", status)
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert (report["status"], report["downloaded"], report["failed"]) == ("ok", len(MEDIA), 0)
    assert tree(dest) == MEDIA
    assert len(gallery.gets_of("b.png")) == 2
    assert len(gallery.gets_of("sub/c.gif")) == 2
    assert len(gallery.gets_of("a.jpg")) == 1


def test_listing_answering_503_once_is_retried(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery)
    gallery.fail_once("index.json", 429)
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"
    assert fetch(dest)["downloaded"] == len(MEDIA)
    assert len(gallery.gets_of("index.json")) == 2


def test_sha256_mismatch_fails_that_asset_only(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery)
    gallery.index_overrides["sub/c.gif"] = {"sha256": "0" * 64}
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"

    report = fetch(dest, code=5)
    assert (report["status"], report["failed"], report["downloaded"]) == ("partial", 1, len(MEDIA) - 1)
    (error,) = report["errors"]
    assert error["path"] == "sub/c.gif" and "sha256 mismatch" in error["error"]
    assert not (dest / "sub/c.gif").exists()
    assert not [p for p in dest.rglob("*") if p.name.endswith(".part")]
    assert tree(dest) == {k: v for k, v in MEDIA.items() if k != "sub/c.gif"}

    # still failing next time (nothing was recorded for it), the others stay unchanged
    report = fetch(dest, code=5)
    assert (report["failed"], report["unchanged"]) == (1, len(MEDIA) - 1)


def test_missing_file_404_fails_that_asset(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery)
    gallery.set_status("a.jpg", 404)
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"
    report = fetch(dest, code=5)
    assert report["failed"] == 1 and report["errors"][0]["path"] == "a.jpg"
    assert "404" in report["errors"][0]["error"]
    assert len(gallery.gets_of("a.jpg")) == 1  # a 404 is not retried
    assert not (dest / "a.jpg").exists()


def test_listing_404_is_unavailable(gallery: GalleryServer, tmp_path: Path) -> None:
    add(gallery.url + "nope/", "index=html")
    report = fetch(tmp_path / "dest", code=4)
    assert report["status"] == "unavailable"


# -- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["json", "html"])
def test_bearer_key_from_environment(gallery: GalleryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     mode: str) -> None:
    populate(gallery)
    gallery.require_bearer("s3cret-key")
    add(gallery.index_url if mode == "json" else gallery.url, f"index={mode}")
    monkeypatch.setenv("PIXSRC_AUTH_GAL", "s3cret-key")
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert report["downloaded"] == len(MEDIA)
    assert tree(dest) == MEDIA
    assert gallery.requests and all(r.headers.get("authorization") == "Bearer s3cret-key"
                                    for r in gallery.requests)


def test_without_the_key_exit_3(gallery: GalleryServer, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    populate(gallery)
    gallery.require_bearer("s3cret-key")
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"
    result = run("fetch", "gal", "--dest", str(dest), "--json")
    assert result.exit_code == 3, result.stderr
    assert json.loads(result.stdout)["sources"][0]["status"] == "auth"
    assert "pixsrc auth login gal" in result.stderr
    assert not dest.exists() or tree(dest) == {}

    monkeypatch.setenv("PIXSRC_AUTH_GAL", "wrong")
    assert run("fetch", "gal", "--dest", str(dest), "--json").exit_code == 3


# -- crawling boundaries ----------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_crawl_never_leaves_the_gallery(gallery: GalleryServer, other_host: GalleryServer, tmp_path: Path,
                                        style: str) -> None:
    populate(gallery)
    gallery.html_style = style
    gallery.extra_links = ["/", "/elsewhere/", "/outside.jpg", "../outside2.jpg", "../../escape.jpg",
                           other_host.url, other_host.url + "stolen.jpg", "?C=M;O=A", "mailto:x@example.com",
                           gallery.url.rstrip("/") + "-sibling/y.jpg"]
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"

    report = fetch(dest)
    assert report["downloaded"] == len(MEDIA)
    assert tree(dest) == MEDIA
    assert other_host.requests == []
    outside = [r.path for r in gallery.requests if r.rel is None]
    assert outside == []
    assert not [r for r in gallery.requests if "?" in r.path]  # sorting links are not pages


def test_encoded_dot_segments_do_not_climb_out(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery)
    gallery.html_style = "python"
    # with and without an inner "/": links of one plain name take the crawl's short way, the rest urljoin's
    gallery.extra_links = ["%2e%2e/outside.jpg", "sub/%2E%2E/%2E%2E/outside2.jpg", "..%2Foutside3.jpg", "..", ".",
                           "%2e%2e", "%2E%2E/", "sub%2F..%2F..%2Foutside4.jpg", "..%2F..%2F"]
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert report["downloaded"] == len(MEDIA)
    assert tree(dest) == MEDIA
    assert [r.path for r in gallery.requests if r.rel is None] == []


@pytest.mark.parametrize("mode", ["json", "html"])
def test_gallery_url_without_trailing_slash_is_redirected(gallery: GalleryServer, tmp_path: Path,
                                                          mode: str) -> None:
    """nginx and Apache answer /gallery with a redirect to /gallery/; links are relative to that."""
    populate(gallery)
    if mode == "json":  # an index at a URL that redirects to the real one, relative to which its urls are
        gallery.index_urls = False
        gallery.redirects["/api/v1/gallery"] = "/gallery/index.json"
        add(gallery.origin + "/api/v1/gallery", "index=json")
    else:
        add(gallery.url.rstrip("/"), "index=html")
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert report["downloaded"] == len(MEDIA)
    assert tree(dest) == MEDIA
    redirected = ("/gallery", "/api/v1/gallery")
    assert [r.path for r in gallery.requests if r.rel is None and r.path not in redirected] == []


def test_api_key_is_not_sent_to_other_hosts(gallery: GalleryServer, other_host: GalleryServer, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON index may point at a CDN: the gallery's key must not travel there."""
    populate(gallery, {"a.jpg": b"local"})
    gallery.require_bearer("s3cret-key")
    gallery.add_entry("cdn.jpg", b"other host", url=other_host.url + "stolen.jpg")
    add(gallery.index_url, "index=json")
    monkeypatch.setenv("PIXSRC_AUTH_GAL", "s3cret-key")
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert report["downloaded"] == 2
    assert tree(dest) == {"a.jpg": b"local", "cdn.jpg": b"other host"}
    assert [r.rel for r in other_host.requests] == ["stolen.jpg"]
    assert "authorization" not in other_host.requests[0].headers
    assert all(r.headers.get("authorization") == "Bearer s3cret-key" for r in gallery.requests)


def test_api_key_is_not_sent_to_the_next_page_on_another_host(
        gallery: GalleryServer, other_host: GalleryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(gallery, {"a.jpg": b"local"})
    gallery.require_bearer("s3cret-key")
    gallery.raw_index = json.dumps({"assets": [{"path": "a.jpg", "url": "a.jpg", "size": 5}],
                                    "next": other_host.index_url}).encode()
    add(gallery.index_url, "index=json")
    monkeypatch.setenv("PIXSRC_AUTH_GAL", "s3cret-key")
    dest = tmp_path / "dest"
    report = fetch(dest)
    assert tree(dest) == {"a.jpg": b"local", "stolen.jpg": b"other host"}
    assert report["downloaded"] == 2
    assert sorted(r.rel for r in other_host.requests) == ["index.json", "stolen.jpg"]
    assert not [r for r in other_host.requests if "authorization" in r.headers]


@pytest.mark.parametrize("what", ["listing", "file"])
def test_api_key_does_not_follow_a_redirect_to_another_host(
        gallery: GalleryServer, other_host: GalleryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        what: str) -> None:
    """httpx (listings) and libcurl (files) drop Authorization when a redirect changes the origin."""
    populate(gallery, {"a.jpg": b"local"})
    monkeypatch.setenv("PIXSRC_AUTH_GAL", "s3cret-key")
    if what == "listing":  # the gallery URL moved to another host: there it is a public gallery
        other_host.write("b.jpg", b"moved here")
        gallery.redirects["/gallery/moved/"] = other_host.url
        add(gallery.url + "moved/", "index=html")
        expected = {"b.jpg": b"moved here", "stolen.jpg": b"other host"}
    else:
        gallery.require_bearer("s3cret-key")
        gallery.raw_index = json.dumps({"assets": [
            {"path": "a.jpg", "url": "a.jpg"}, {"path": "far.jpg", "url": "/go-far"}]}).encode()
        gallery.redirects["/go-far"] = other_host.url + "stolen.jpg"
        add(gallery.index_url, "index=json")
        expected = {"a.jpg": b"local", "far.jpg": b"other host"}
    report = fetch(tmp_path / "dest")
    assert report["failed"] == 0
    assert tree(tmp_path / "dest") == expected
    assert other_host.requests and not [r for r in other_host.requests if "authorization" in r.headers]
    redirected = "/gallery/moved/" if what == "listing" else "/go-far"
    # the key did go to the gallery's own origin, up to the redirect
    assert [r.headers.get("authorization") for r in gallery.requests if r.path == redirected] == [
        "Bearer s3cret-key"]


def test_a_refused_download_is_exit_3_with_the_way_out(gallery: GalleryServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    populate(gallery)
    gallery.set_status("b.png", 401)  # the listing is public, a file wants a (better) key
    add(gallery.index_url, "index=json")
    result = run("fetch", "gal", "--dest", str(tmp_path / "dest"), "--json")
    assert result.exit_code == 3, result.stderr
    assert "pixsrc auth login gal" in result.stderr
    monkeypatch.setenv("PIXSRC_AUTH_GAL", "the-key")  # a key it refuses: asked once, no refresh to try
    gallery.clear_requests()
    result = run("fetch", "gal", "--dest", str(tmp_path / "dest"), "--json")
    assert result.exit_code == 3, result.stderr
    assert "pixsrc auth login gal" in result.stderr and "the-key" not in result.stderr + result.stdout
    assert len(gallery.gets_of("b.png")) == 1


# -- versions without a listing that tells them ----------------------------------------------------


def test_last_modified_only_server_is_rechecked_with_if_modified_since(gallery: GalleryServer,
                                                                       tmp_path: Path) -> None:
    """Without ETags (python -m http.server), Last-Modified is the version and the re-check."""
    populate(gallery)
    gallery.etags = False
    add(gallery.url, "index=html")
    dest = tmp_path / "dest"
    assert fetch(dest)["downloaded"] == len(MEDIA)
    gallery.clear_requests()
    again = fetch(dest)
    assert (again["unchanged"], again["bytes"]) == (len(MEDIA), 0)
    rechecks = gallery.file_gets()
    assert len(rechecks) == len(MEDIA) and all("if-modified-since" in r.headers for r in rechecks)
    assert [gallery.status_of(r) for r in rechecks] == [304] * len(MEDIA)
    assert gallery.heads() == []


def test_json_entry_that_tells_no_version_is_versioned_by_its_etag(gallery: GalleryServer,
                                                                   tmp_path: Path) -> None:
    populate(gallery, {"a.jpg": b"one", "b.jpg": b"two"})
    for rel in ("a.jpg", "b.jpg"):
        gallery.index_overrides[rel] = {"size": None, "sha256": None, "modified": None}
    add(gallery.index_url, "index=json")
    dest = tmp_path / "dest"
    rows = [json.loads(line) for line in run("fetch", "gal", "--list", "--json").stdout.splitlines()]
    assert [r["version"] for r in rows] == ["", ""]
    assert fetch(dest)["downloaded"] == 2
    gallery.write("b.jpg", b"two, changed")
    gallery.clear_requests()
    again = fetch(dest)
    assert (again["unchanged"], again["updated"]) == (1, 1)
    assert {r.rel: r.headers.get("if-none-match") for r in gallery.file_gets()} == {
        "a.jpg": etag_of(b"one"), "b.jpg": etag_of(b"two")}
    assert tree(dest) == {"a.jpg": b"one", "b.jpg": b"two, changed"}


# -- the listing, against the controller ---------------------------------------------------------------


def listing(url: str, jobs: int = 8, **config: Any) -> list[Asset]:
    from pixsrc.sources.remote_gallery import SOURCE_TYPE

    model = SOURCE_TYPE.validate({"url": url, **config}, "sources.gal.config")
    controller = SOURCE_TYPE.factory(SourceContext("gal", "gal", model, jobs=jobs))
    try:
        return list(controller.list_assets())
    finally:
        controller.close()


@pytest.mark.parametrize("jobs", [1, 3])
def test_folders_are_listed_concurrently_up_to_jobs(gallery: GalleryServer, jobs: int) -> None:
    files = {f"f{n}/x{n}.jpg": b"x" for n in range(6)}
    populate(gallery, files)
    # six sibling folders: each listing waits for `jobs` of them to be in flight at once
    gallery.listing_barrier = threading.Barrier(jobs, timeout=10)
    assets = listing(gallery.url, jobs=jobs, index="html")
    assert [a.path for a in assets] == sorted(files)  # in the order found, however the pages raced
    assert not gallery.listing_barrier.broken, "the folders were not listed concurrently"
    assert gallery.max_listings_in_flight == jobs
    assert all((a.version, a.size, a.ref[1]) == ("", None, None) for a in assets)
    assert gallery.heads() == [] and gallery.file_gets() == []


def test_transfers_carry_the_key_to_the_gallery_origin_only(gallery: GalleryServer,
                                                            other_host: GalleryServer) -> None:
    from pixsrc.sources.remote_gallery import SOURCE_TYPE

    gallery.add_entry("cdn.jpg", b"x", url=other_host.url + "stolen.jpg")
    gallery.add_entry("same-host-other-port.jpg", b"x", url=gallery.url.replace(
        str(gallery._httpd.server_address[1]), str(other_host._httpd.server_address[1])) + "x.jpg")
    gallery.add_entry("https.jpg", b"x", url=gallery.url.replace("http://", "https://") + "x.jpg")
    gallery.add_entry("own.jpg", b"x")
    model = SOURCE_TYPE.validate({"url": gallery.index_url, "index": "json"}, "sources.gal.config")
    controller = SOURCE_TYPE.factory(SourceContext("gal", "gal", model, get_secret=lambda: "k3y-value"))
    try:
        transfers = {a.path: controller.transfer(a) for a in controller.list_assets()}
    finally:
        controller.close()
    assert {path: t.auth is not None for path, t in transfers.items()} == {
        "cdn.jpg": False, "same-host-other-port.jpg": False, "https.jpg": False, "own.jpg": True}
    own = transfers["own.jpg"]
    assert own.auth is not None and own.auth.headers() == {"Authorization": "Bearer k3y-value"}
    assert "k3y-value" not in repr(own.auth)
    from pixsrc.errors import AuthRequired

    with pytest.raises(AuthRequired) as refused:
        own.auth.unauthorized({})
    assert refused.value.hint == "store its API key: pixsrc auth login gal"
    assert all(t.method == "GET" and t.resumable and t.local_path is None for t in transfers.values())


# -- garbage in, a clear exit code out -------------------------------------------------------------------

GARBAGE_INDEXES = {
    "not JSON": (b"<html><body>not an index</body></html>", "is not a JSON index"),
    "truncated": (b'{"assets": [{"path": "a.jpg", "size": 1', "is not a JSON index"),
    "not UTF-8": (b'{"assets": [{"path": "\xff\xfe"}]}', "is not a JSON index"),
    "nested too deeply": (b"[" * 100_000, "is not a JSON index"),
    "a number": (b"42", "a JSON index is a list or an object"),
    "assets is an object": (b'{"assets": {"a.jpg": {}}}', "a JSON index is a list or an object"),
    "an asset is a string": (b'["a.jpg"]', "asset #0: an asset is an object"),
    "no path nor url": (b'[{"size": 3}]', "needs a 'path' or a 'url'"),
    "path is a number": (b'[{"path": 7}]', "'path' must be a string"),
    "url is a list": (b'[{"url": ["a.jpg"]}]', "'url' must be a URL string"),
    "url is not http": (b'[{"path": "a.jpg", "url": "file:///etc/passwd"}]', "'url' is not an http(s) URL"),
    "url names a folder": (b'[{"url": "sub/"}]', "needs a 'path'"),
    "size is a string": (b'[{"path": "a.jpg", "size": "12"}]', "'size' must be a non-negative integer"),
    "size is negative": (b'[{"path": "a.jpg", "size": -1}]', "'size' must be a non-negative integer"),
    "size is a boolean": (b'[{"path": "a.jpg", "size": true}]', "'size' must be a non-negative integer"),
    "sha256 is not hex": (b'[{"path": "a.jpg", "sha256": "xyz"}]', "'sha256' must be 64 hex digits"),
    "modified is a number": (b'[{"path": "a.jpg", "modified": 1700000000}]', "'modified' must be"),
    "id is a list": (b'[{"path": "a.jpg", "id": [1]}]', "'id' must be a string"),
    "next is a number": (b'{"assets": [], "next": 2}', "'next' must be a URL string"),
    "next loops": (b'{"assets": [], "next": "index.json"}', "the index pages loop"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE_INDEXES))
def test_a_garbage_index_is_exit_4_never_a_crash(gallery: GalleryServer, tmp_path: Path, case: str) -> None:
    body, expected = GARBAGE_INDEXES[case]
    gallery.raw_index = body
    add(gallery.index_url, "index=json")
    result = run("fetch", "gal", "--dest", str(tmp_path / "dest"), "--json")
    assert result.exit_code == 4, (result.exit_code, result.stderr)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["sources"][0]["status"] == "unavailable"


@pytest.mark.parametrize(("page", "code", "listed"), [
    (random.Random(5).randbytes(20_000), 0, 0),  # binary noise: no links, nothing to fetch
    (b"<html><body><a href='http://[::1/x.jpg'>bad IPv6</a><a href='http://h:99999/y.jpg'>bad port</a>"
     b"<a href=\"" + b"z" * 5_000 + b".jpg\">a long name that is not there</a><a href='sub/", 5, 1),
])
def test_a_garbage_folder_listing_is_never_a_crash(gallery: GalleryServer, tmp_path: Path, page: bytes,
                                                   code: int, listed: int) -> None:
    gallery.write("junk.html", page)  # a "listing" page: its links are relative to it
    add(gallery.url + "junk.html", "index=html")
    result = run("fetch", "gal", "--dest", str(tmp_path / "dest"), "--json")
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["sources"][0]["listed"] == listed
