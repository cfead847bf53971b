"""remote-gallery end to end: the real CLI against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from support.cli import run
from support.gallery_server import STYLES, GalleryServer

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


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's retry backoff (0.5 s and up) made instant; the retry logic itself still runs."""
    import pixsrc.http
    import pixsrc.sync

    monkeypatch.setattr(pixsrc.sync, "backoff_delay", lambda attempt, *a, **k: 0.0)
    monkeypatch.setattr(pixsrc.http, "backoff_delay", lambda attempt, *a, **k: 0.0)


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

    gallery.clear_requests()
    again = fetch(dest)
    assert (again["unchanged"], again["downloaded"], again["updated"]) == (len(MEDIA), 0, 0)
    assert again["bytes"] == 0
    assert gallery.file_gets() == []  # versions come from HEAD requests only
    assert sorted(r.rel for r in gallery.requests if r.method == "HEAD") == sorted(MEDIA)


def test_html_all_files_includes_other_files(gallery: GalleryServer, tmp_path: Path) -> None:
    populate(gallery, {"a.jpg": b"img", "doc/readme.txt": b"text"})
    add(gallery.url, "index=html", "all_files=true")
    dest = tmp_path / "dest"
    fetch(dest)
    assert tree(dest) == {"a.jpg": b"img", "doc/readme.txt": b"text"}


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
    assert [r.rel for r in gallery.file_gets()] == ["sub/c.gif"]
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
def test_truncated_body_is_resumed_with_range(gallery: GalleryServer, tmp_path: Path, mode: str,
                                              no_backoff: None) -> None:
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
    if mode == "html":  # the ETag from the HEAD guards the resume
        etag = '"' + hashlib.sha256(big).hexdigest()[:20] + '"'
        assert second.headers["if-range"] == etag
    # only the missing half came over the wire the second time
    assert report["bytes"] == len(big) + len(b"small")
    assert not list(dest.rglob("*.part"))


def test_resume_after_the_file_changed_starts_over(gallery: GalleryServer, tmp_path: Path) -> None:
    """If-Range: a part file of the old version must not be glued to the new version's tail."""
    from pixsrc.sources.remote_gallery import RemoteGalleryConfig, RemoteGalleryController
    from pixsrc.sync import _part_name
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
    (dest / _part_name(asset)).write_bytes(old[:100_000])
    # the file changes on the server between the listing's HEAD and the download's GET
    gallery.replace_after_head("big.jpg", new)
    gallery.clear_requests()

    report = fetch(dest)
    assert report["downloaded"] == 1
    (get,) = gallery.gets_of("big.jpg")
    assert get.headers.get("range") == "bytes=100000-"  # it did try to resume...
    assert (dest / "big.jpg").read_bytes() == new  # ...and got the whole new file instead
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]


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


def test_sha256_mismatch_fails_that_asset_only(gallery: GalleryServer, tmp_path: Path,
                                               no_backoff: None) -> None:
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
    gallery.extra_links = ["%2e%2e/outside.jpg", "sub/%2E%2E/%2E%2E/outside2.jpg", "..%2Foutside3.jpg"]
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
