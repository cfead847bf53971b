"""The sync engine (sync.py): local-fs sources through the CLI and directly, hostile remote names
through the gallery server's JSON index."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run
from support.gallery_server import GalleryServer

FILES = {
    "a.jpg": b"\xff\xd8 alpha",
    "b.png": b"\x89PNG bravo",
    "sub/c.gif": b"GIF89a charlie",
    "sub/deep/d.webp": b"RIFF delta",
}


def tree(folder: Path) -> dict[str, bytes]:
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    write_tree(folder, FILES)
    result = run("add", "local-fs", "--id", "loc", "--name", "loc", "--set", f"path={folder}", "--no-input")
    assert result.exit_code == 0, result.stderr
    return folder


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


def fetch(dest: Path, *args: str, source_id: str = "loc", code: int = 0) -> dict:
    result = run("fetch", source_id, "--dest", str(dest), "--json", *args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    (report,) = json.loads(result.stdout)["sources"]
    return report


def counts(report: dict, *keys: str) -> tuple:
    return tuple(report[k] for k in keys)


# -- local changes ---------------------------------------------------------------------------------


def test_first_fetch_then_unchanged(src: Path, dest: Path) -> None:
    report = fetch(dest)
    assert counts(report, "listed", "downloaded", "bytes") == (4, 4, sum(map(len, FILES.values())))
    assert tree(dest) == FILES
    # the local copy carries the source's modification time
    assert abs((dest / "a.jpg").stat().st_mtime_ns - (src / "a.jpg").stat().st_mtime_ns) < 2000
    report = fetch(dest)
    assert counts(report, "unchanged", "downloaded", "updated", "bytes") == (4, 0, 0, 0)


@pytest.mark.parametrize("inside", [False, True], ids=["empty folder", "folder with a file"])
def test_a_folder_in_the_way_is_never_replaced_even_with_force(src: Path, dest: Path, inside: bool) -> None:
    (dest / "a.jpg").mkdir(parents=True)
    if inside:
        (dest / "a.jpg" / "keep.txt").write_bytes(b"mine")
    report = fetch(dest, "--force", code=5)  # partial: the other files are fetched
    (error,) = report["errors"]
    assert error["path"] == "a.jpg" and "a folder is in the way at a.jpg" in error["error"]
    assert (dest / "a.jpg").is_dir() and not list(dest.glob(".pixsrc-*.part"))
    assert tree(dest) == {**{k: v for k, v in FILES.items() if k != "a.jpg"},
                          **({"a.jpg/keep.txt": b"mine"} if inside else {})}


def test_locally_modified_file_is_a_conflict_until_force(src: Path, dest: Path) -> None:
    fetch(dest)
    (dest / "a.jpg").write_bytes(b"edited by the user")
    (src / "b.png").write_bytes(b"\x89PNG bravo, new upstream version")
    (dest / "b.png").write_bytes(b"also edited by the user")

    report = fetch(dest)
    assert counts(report, "conflicts", "skipped", "updated", "unchanged", "failed") == (2, 2, 0, 2, 0)
    assert report["status"] == "ok"
    assert sorted(e["path"] for e in report["errors"]) == ["a.jpg", "b.png"]
    assert (dest / "a.jpg").read_bytes() == b"edited by the user"
    assert (dest / "b.png").read_bytes() == b"also edited by the user"

    report = fetch(dest, "--force")
    assert counts(report, "updated", "conflicts", "unchanged") == (2, 0, 2)
    assert tree(dest) == tree(src)
    assert counts(fetch(dest), "unchanged", "conflicts") == (4, 0)


def test_file_in_the_way_is_not_overwritten(src: Path, dest: Path) -> None:
    write_tree(dest, {"a.jpg": b"the user's own file"})
    report = fetch(dest)
    assert counts(report, "downloaded", "conflicts") == (3, 1)
    assert (dest / "a.jpg").read_bytes() == b"the user's own file"
    report = fetch(dest, "--force")
    assert (dest / "a.jpg").read_bytes() == FILES["a.jpg"]


def test_identical_files_without_a_manifest_are_adopted_untouched(src: Path, dest: Path, state_path: Path) -> None:
    """A CI cache miss, a new state folder, remove + re-add: files already in place with the same
    bytes become pixsrc's again without being rewritten; only a real difference is a conflict."""
    import shutil

    fetch(dest)
    (dest / "b.png").write_bytes(b"really different now")
    before = {rel: (dest / rel).stat() for rel in FILES}
    shutil.rmtree(state_path)  # the manifest is gone
    report = fetch(dest)
    assert counts(report, "unchanged", "conflicts", "downloaded", "updated") == (3, 1, 0, 0)
    for rel in ("a.jpg", "sub/c.gif", "sub/deep/d.webp"):
        after = (dest / rel).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before[rel].st_ino, before[rel].st_mtime_ns)  # not rewritten
    assert (dest / "b.png").read_bytes() == b"really different now"
    assert not [p for p in dest.rglob(".pixsrc-*")]  # the comparison downloads are gone
    report = fetch(dest)  # adopted for good: nothing to compare any more
    assert counts(report, "unchanged", "conflicts") == (3, 1)


def test_adopting_by_the_published_checksum_downloads_nothing(tmp_path: Path) -> None:
    root = tmp_path / "served"
    root.mkdir()
    with GalleryServer(root) as server:
        data = {"a.jpg": b"\xff\xd8 one", "b.jpg": b"\xff\xd8 two"}
        for name, body in data.items():
            server.add_entry(name, body, sha256=hashlib.sha256(body).hexdigest())
        assert run("add", "remote-gallery", "--id", "sums", "--set", f"url={server.index_url}",
                   "--set", "index=json", "--no-input").exit_code == 0
        dest = tmp_path / "dest"
        write_tree(dest, data)
        server.clear_requests()
        report = fetch(dest, source_id="sums")
        assert counts(report, "unchanged", "conflicts", "downloaded") == (2, 0, 0)
        assert server.file_gets() == []


def test_locally_deleted_file_is_restored(src: Path, dest: Path) -> None:
    fetch(dest)
    (dest / "sub/deep/d.webp").unlink()
    os.rmdir(dest / "sub/deep")
    (dest / "a.jpg").unlink()
    report = fetch(dest)
    assert counts(report, "downloaded", "unchanged") == (2, 2)
    assert tree(dest) == FILES


def test_prune_removes_only_files_pixsrc_wrote(src: Path, dest: Path) -> None:
    fetch(dest)
    (dest / "b.png").write_bytes(b"the user changed this one")
    (dest / "mine.jpg").write_bytes(b"never fetched by pixsrc")
    for rel in ("a.jpg", "b.png", "sub/deep/d.webp"):
        (src / rel).unlink()

    report = fetch(dest)  # without --prune: reported only
    assert counts(report, "deleted", "pruned") == (3, 0)
    assert (dest / "a.jpg").exists()

    report = fetch(dest, "--prune", "--max-delete", "3")  # 3 of 4 files: more than the default guard allows
    assert counts(report, "pruned", "deleted", "unchanged") == (2, 1, 1)
    assert tree(dest) == {"b.png": b"the user changed this one", "mine.jpg": b"never fetched by pixsrc",
                          "sub/c.gif": FILES["sub/c.gif"]}
    assert not (dest / "sub/deep").exists()
    # the kept file is no longer pixsrc's: a second prune does not touch or report it
    report = fetch(dest, "--prune")
    assert counts(report, "pruned", "deleted", "unchanged", "listed") == (0, 0, 1, 1)
    assert (dest / "b.png").read_bytes() == b"the user changed this one"


def test_prune_never_empties_the_destination_when_the_source_lists_nothing(src: Path, dest: Path) -> None:
    fetch(dest)
    for rel in FILES:
        (src / rel).unlink()  # an unmounted share looks just like this
    result = run("fetch", "loc", "--dest", str(dest), "--json", "--prune", "--max-delete", "1000")
    assert result.exit_code == 5, result.stderr
    (report,) = json.loads(result.stdout)["sources"]
    assert counts(report, "status", "pruned", "kept") == ("partial", 0, 4)
    assert "listed nothing" in result.stderr and "kept 4 files" in result.stderr
    assert tree(dest) == FILES


def test_prune_over_max_delete_keeps_everything_and_says_so(src: Path, dest: Path) -> None:
    fetch(dest)
    for rel in ("a.jpg", "b.png", "sub/c.gif"):
        (src / rel).unlink()
    result = run("fetch", "loc", "--dest", str(dest), "--json", "--prune", "-q")  # default: half of 4 = 2
    assert result.exit_code == 5
    (report,) = json.loads(result.stdout)["sources"]
    assert counts(report, "pruned", "kept", "deleted") == (0, 3, 3)
    assert "would delete 3 of 4 files, more than --max-delete 2" in result.stderr  # said even with -q
    assert tree(dest) == FILES
    report = fetch(dest, "--prune", "--max-delete", "3")
    assert counts(report, "pruned", "kept") == (3, 0)
    assert tree(dest) == {"sub/deep/d.webp": FILES["sub/deep/d.webp"]}


def test_dry_run_writes_nothing(src: Path, dest: Path, state_path: Path) -> None:
    report = fetch(dest, "--dry-run")
    assert report["dry_run"] is True
    assert counts(report, "downloaded", "listed") == (4, 4)
    assert not dest.exists()

    report = fetch(dest)  # nothing was recorded: all of it is still new
    assert counts(report, "downloaded", "unchanged") == (4, 0)

    (src / "a.jpg").unlink()
    (src / "b.png").write_bytes(b"\x89PNG changed")
    report = fetch(dest, "--dry-run", "--prune")
    assert counts(report, "pruned", "updated", "unchanged") == (1, 1, 2)
    assert tree(dest) == FILES  # neither pruned nor updated
    report = fetch(dest, "--prune")
    assert counts(report, "pruned", "updated", "unchanged") == (1, 1, 2)
    assert tree(dest) == tree(src)


def test_dry_run_text_output_lists_what_would_happen(src: Path, dest: Path) -> None:
    result = run("fetch", "loc", "--dest", str(dest), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(f"would fetch: {p}" for p in FILES)
    assert not dest.exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--include", "*.jpg", "--include", "*.gif"], {"a.jpg", "sub/c.gif"}),
    (["--exclude", "sub/**"], {"a.jpg", "b.png"}),
    (["--include", "sub/*", "--exclude", "*.webp"], {"sub/c.gif"}),
    (["--include", "sub/deep"], {"sub/deep/d.webp"}),
])
def test_include_exclude(src: Path, dest: Path, args: list[str], expected: set[str]) -> None:
    report = fetch(dest, *args)
    assert counts(report, "listed", "downloaded") == (len(expected), len(expected))
    assert set(tree(dest)) == expected


def test_excluded_files_are_not_reported_deleted(src: Path, dest: Path) -> None:
    fetch(dest)
    report = fetch(dest, "--exclude", "*.png", "--prune")
    # b.png is still at the source: an exclude narrows this run, it does not delete anything
    assert counts(report, "pruned", "deleted") == (0, 0)
    assert (dest / "b.png").exists()


# -- symlinks in the destination -------------------------------------------------------------------


def test_symlink_in_destination_is_never_written_through(src: Path, dest: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)

    report = fetch(dest, code=5)
    assert counts(report, "failed", "downloaded") == (2, 2)
    assert sorted(e["path"] for e in report["errors"]) == ["sub/c.gif", "sub/deep/d.webp"]
    assert all("symlink" in e["error"] for e in report["errors"])
    assert list(outside.iterdir()) == []
    assert tree(dest) == {"a.jpg": FILES["a.jpg"], "b.png": FILES["b.png"]}

    fetch(dest, "--force", code=5)
    assert list(outside.iterdir()) == []


def test_prune_never_deletes_through_a_symlink(src: Path, dest: Path, tmp_path: Path) -> None:
    fetch(dest)
    # the user moves the folder elsewhere and leaves a symlink: the file there is not ours to delete
    outside = tmp_path / "elsewhere"
    os.rename(dest / "sub", outside)
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    (src / "sub/c.gif").unlink()

    report = fetch(dest, "--prune")
    assert counts(report, "pruned", "deleted") == (0, 1)
    assert (outside / "c.gif").read_bytes() == FILES["sub/c.gif"]
    assert (outside / "deep/d.webp").read_bytes() == FILES["sub/deep/d.webp"]


def test_symlinked_file_at_the_target_is_not_followed(src: Path, dest: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"do not touch")
    dest.mkdir()
    (dest / "a.jpg").symlink_to(outside)
    report = fetch(dest)
    assert report["conflicts"] == 1
    fetch(dest, "--force")
    assert outside.read_bytes() == b"do not touch"
    assert not (dest / "a.jpg").is_symlink()
    assert (dest / "a.jpg").read_bytes() == FILES["a.jpg"]


# -- the engine directly -----------------------------------------------------------------------------


def test_sync_run_outcomes_and_manifest(tmp_path: Path) -> None:
    from pixsrc.sources.local_fs import LocalFsConfig, LocalFsController
    from pixsrc.state import State
    from pixsrc.sync import Options, SyncRun

    folder = tmp_path / "direct"
    write_tree(folder, FILES)
    controller = LocalFsController(LocalFsConfig(path=str(folder)))
    state = State(tmp_path / "direct-state.db")
    out = tmp_path / "direct-dest"
    try:
        run_ = SyncRun("direct", controller, state, Options(dest=out, jobs=2))
        outcomes = sorted((o.path, o.action, o.bytes) for o in run_)
        assert outcomes == sorted((p, "downloaded", len(d)) for p, d in FILES.items())
        manifest = state.manifest("direct")
        # local-fs has no checksum: nothing is hashed while bytes move, so no sha256 is known yet
        assert {e.path: (e.size, e.sha256) for e in manifest.values()} == {p: (len(d), "") for p, d in FILES.items()}
        assert run_.report.downloaded == 4 and run_.report.status == "ok"

        run_ = SyncRun("direct", controller, state, Options(dest=out, dry_run=True, force=True))
        assert {o.action for o in run_} == {"unchanged"}  # force replaces changed files only
    finally:
        state.close()


# -- hostile remote names ------------------------------------------------------------------------------

NFC = unicodedata.normalize("NFC", "caf\u00e9.jpg")
NFD = unicodedata.normalize("NFD", "caf\u00e9.jpg")
LONG = "L" * 296 + ".jpg"  # 300 bytes

HOSTILE = {
    "../x.jpg": b"dot-dot",
    "a/../../b.jpg": b"dot-dot inside",
    "/abs.jpg": b"absolute",
    "con.jpg": b"windows device name",
    "nul\x00byte.jpg": b"a NUL",
    "bell\x07\x1b[31m.jpg": b"control characters",
    "..\\..\\back.jpg": b"backslashes",
    LONG: b"300 bytes long",
    NFC: b"composed",
    NFD: b"decomposed",
    "Photo.JPG": b"upper case",
    "photo.jpg": b"lower case",
}


def tag(asset_id: str) -> str:
    return hashlib.sha1(asset_id.encode()).hexdigest()[:8]


@pytest.fixture
def hostile_gallery(tmp_path: Path) -> Iterator[GalleryServer]:
    root = tmp_path / "served"
    root.mkdir()
    with GalleryServer(root) as server:
        for name, data in HOSTILE.items():
            server.add_entry(name, data)
        result = run("add", "remote-gallery", "--id", "evil", "--name", "evil", "--set",
                     f"url={server.index_url}", "--set", "index=json", "--no-input")
        assert result.exit_code == 0, result.stderr
        yield server


def test_hostile_names_land_inside_dest(hostile_gallery: GalleryServer, tmp_path: Path) -> None:
    box = tmp_path / "box"
    dest = box / "dest"
    report = fetch(dest, source_id="evil")
    assert counts(report, "listed", "downloaded", "failed") == (len(HOSTILE), len(HOSTILE), 0)

    got = tree(dest)
    assert sorted(os.listdir(box)) == ["dest"]  # nothing escaped next to dest
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "b.jpg").exists()
    long_name = next(n for n in got if n.startswith("LLL"))
    expected = {
        "x.jpg": b"dot-dot",
        "a/b.jpg": b"dot-dot inside",
        "abs.jpg": b"absolute",
        "con.jpg": b"windows device name",
        "nul_byte.jpg": b"a NUL",
        "bell__[31m.jpg": b"control characters",
        "back.jpg": b"backslashes",
        long_name: b"300 bytes long",
        # NFD sorts first, so it keeps the plain (NFC) name; the NFC asset gets its id's tag
        NFC: b"decomposed",
        f"caf\u00e9~{tag(NFC)}.jpg": b"composed",
        "Photo.JPG": b"upper case",
        f"photo~{tag('photo.jpg')}.jpg": b"lower case",
    }
    assert got == expected
    assert len(long_name.encode()) <= 255 and long_name.endswith(".jpg") and "~" in long_name
    assert all(unicodedata.is_normalized("NFC", n) for n in got)

    again = fetch(dest, source_id="evil")
    assert counts(again, "unchanged", "downloaded", "updated", "failed") == (len(HOSTILE), 0, 0, 0)
    assert tree(dest) == expected
    assert hostile_gallery.file_gets() and len(hostile_gallery.file_gets()) == len(HOSTILE)  # none on re-run


def test_hostile_names_are_stable_in_a_fresh_destination(hostile_gallery: GalleryServer,
                                                         tmp_path: Path) -> None:
    first = tmp_path / "one"
    fetch(first, source_id="evil")
    second = tmp_path / "two"
    # another source with the same gallery, fetched from nothing, picks the same names
    result = run("add", "remote-gallery", "--id", "evil2", "--name", "evil2", "--set",
                 f"url={hostile_gallery.index_url}", "--set", "index=json", "--no-input")
    assert result.exit_code == 0, result.stderr
    fetch(second, source_id="evil2")
    assert tree(first) == tree(second)


def test_remote_rename_moves_the_local_file(tmp_path: Path) -> None:
    root = tmp_path / "served"
    root.mkdir()
    with GalleryServer(root) as server:
        server.write("old/name.jpg", b"same bytes")
        server.index_overrides["old/name.jpg"] = {"id": "asset-1"}
        assert run("add", "remote-gallery", "--id", "ren", "--name", "ren", "--set",
                   f"url={server.index_url}", "--no-input").exit_code == 0
        dest = tmp_path / "dest"
        fetch(dest, source_id="ren")
        (root / "new").mkdir()
        os.rename(root / "old/name.jpg", root / "new/renamed.jpg")
        server.index_overrides["new/renamed.jpg"] = {"id": "asset-1"}
        server.clear_requests()
        report = fetch(dest, source_id="ren")
        assert counts(report, "updated", "downloaded", "deleted") == (1, 0, 0)
        assert server.file_gets() == []
        assert tree(dest) == {"new/renamed.jpg": b"same bytes"}


# -- an asset with the same content as another (same_as) ------------------------------------------------

class _TwinsController:
    """Two listed assets with one content; their checksum is md5 (as Google Drive publishes it).
    Their bytes come from a local file (a local-copy Transfer), so the engine runs for real."""

    def __init__(self, data: bytes, folder: Path, twin_md5: str | None = None) -> None:
        from pixsrc.types import Asset, Checksum

        md5 = hashlib.md5(data).hexdigest()
        self.data, self.opened = data, []
        self.file = folder / "content.bin"
        self.file.write_bytes(data)
        self.assets = [
            Asset("f1", "photos/x.jpg", "v1", len(data), checksum=Checksum("md5", md5)),
            Asset("link:f1", "links/x.jpg", "v1", len(data), checksum=Checksum("md5", twin_md5 or md5),
                  same_as="f1"),
        ]

    def list_assets(self) -> Iterator[object]:
        return iter(self.assets)

    def transfer(self, asset: object) -> object:
        from pixsrc.types import Transfer

        self.opened.append(asset.id)  # type: ignore[attr-defined]
        return Transfer(local_path=str(self.file))

    def close(self) -> None:
        pass


def _sync(controller: _TwinsController, tmp_path: Path) -> object:
    from pixsrc.state import State
    from pixsrc.sync import Options, SyncRun

    state = State(tmp_path / "state.db")
    run_ = SyncRun("twins", controller, state, Options(dest=tmp_path / "out"))  # type: ignore[arg-type]
    list(run_)
    state.close()
    return run_.report


def test_same_content_is_copied_not_downloaded_again_when_its_checksum_is_not_sha256(tmp_path: Path) -> None:
    controller = _TwinsController(b"\xff\xd8 twin bytes", tmp_path)
    report = _sync(controller, tmp_path)
    assert controller.opened == ["f1"]  # the second place was copied from the first
    assert report.downloaded == 2 and report.bytes == len(controller.data)  # type: ignore[attr-defined]
    assert tree(tmp_path / "out") == {"links/x.jpg": controller.data, "photos/x.jpg": controller.data}


def test_a_copy_that_does_not_match_the_published_checksum_is_downloaded(tmp_path: Path) -> None:
    controller = _TwinsController(b"\xff\xd8 twin bytes", tmp_path, twin_md5="0" * 32)  # the twin claims other bytes
    report = _sync(controller, tmp_path)
    assert report.downloaded == 1 and report.failed == 1  # type: ignore[attr-defined]
    assert "link:f1" in controller.opened  # the copy was refused and a download tried (and failed its check)
    assert not (tmp_path / "out" / "links" / "x.jpg").exists()
