"""google-drive against the fake Drive v3 + Google OAuth server (tests/fakes/google_drive.py).

Controller-level tests build a SourceContext by hand (a static bearer token from the fake, an Api
that backs off in milliseconds); they list, and check each ``Transfer`` by sending what it describes
once (``attempt``). The end-to-end tests run the real `pixsrc` command, whose engine moves the bytes:
add, auth login (subprocess, fake browser), fetch, auth status, auth logout. Every test checks that
the fake saw no request the Drive OpenAPI description does not allow (``violations``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.google_drive import DriveFake, Request, google_error, json_response
from support.cli import run, run_subprocess
from support.controllers import FAST, FakeBearer, FastContext

from pixsrc import oauth
from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.sources.google_drive import PROVIDER, SNAPSHOT_KEY, SOURCE_TYPE, GoogleDriveController, Snapshot
from pixsrc.testing import check_controller, fetch_transfer
from pixsrc.types import Asset, MemoryCache, Transfer, TransferError

FAKE_BROWSER = Path(__file__).resolve().parent.parent / "support" / "fake_browser.py"
JPEG = b"\xff\xd8\xff\xe0 jpeg "
PNG = b"\x89PNG\r\n\x1a\n png "


# -- helpers --------------------------------------------------------------------------------------


def _about(drive: DriveFake):  # noqa: ANN202
    """about.get is not in the fake; the route answers what verify() asks for (the account's name)."""

    def handler(req: Request):  # noqa: ANN202
        drive._auth(req)
        tree = drive._fields(req, "About")
        user = {"displayName": "Quinn", "emailAddress": "quinn@example.com", "kind": "drive#user"}
        body = {"user": {k: v for k, v in user.items() if tree is None or k in tree.get("user", {}) or
                         tree.get("user") is None}}
        return json_response(200, body)

    return handler


@pytest.fixture
def drive() -> Iterator[DriveFake]:
    with DriveFake() as fake:
        fake.server.route("GET", r"/drive/v3/about", _about(fake))
        yield fake
        assert fake.violations == []


def attempt(transfer: Transfer, offset: int = 0) -> tuple[int, bytes, TransferError | None]:
    """Perform ``transfer`` once as the engine would (pixsrc.testing.fetch_transfer: libcurl, its auth,
    one refresh after a 401), without the engine's retries and resume logic (tested end to end): the
    answer's status and body, and what ``on_error`` makes of a refusal."""
    answer = fetch_transfer(transfer, headers={"Range": f"bytes={offset}-"} if offset else None)
    error = None
    if answer.status >= 400 and transfer.on_error is not None:
        error = transfer.on_error(answer.status, answer.headers, answer.body[:65536])
    return answer.status, answer.body, error


class Ctx:
    """Builds controllers for one fake and one per-source cache, collecting warnings."""

    def __init__(self, drive: DriveFake, **config: Any) -> None:
        self.drive = drive
        self.config = config
        self.cache = MemoryCache()
        self.auth = FakeBearer(drive.issue_token)
        self.warnings: list[str] = []
        self.settings = oauth.settings_for(PROVIDER, {"google": {
            "client_id": drive.oauth.client_id, "api_base_url": drive.base_url,
            "requests_per_second": 10_000, "max_concurrency": 16}})

    def controller(self, **overrides: Any) -> GoogleDriveController:
        model = SOURCE_TYPE.validate({**self.config, **overrides}, "sources.gd.config")
        context = FastContext("gd", "gd", model, jobs=4, auth=self.auth, provider=self.settings,
                              cache=self.cache, warn=self.warnings.append)
        controller = SOURCE_TYPE.factory(context)
        assert isinstance(controller, GoogleDriveController)
        return controller

    def listing(self, **overrides: Any) -> tuple[dict[str, Asset], int]:
        """path -> asset, and the number of API requests the listing sent."""
        controller = self.controller(**overrides)
        try:
            assets = {a.path: a for a in controller.list_assets()}
            return assets, controller.requests
        finally:
            controller.close()

    def transfer(self, asset: Asset) -> Transfer:
        controller = self.controller()
        try:
            return controller.transfer(asset)
        finally:
            controller.close()

    def read(self, asset: Asset) -> bytes:
        """The asset's bytes, fetched the way its Transfer says (which must work the first time)."""
        status, data, error = attempt(self.transfer(asset))
        assert status == 200 and error is None, (status, error)
        return data

    def refusal(self, asset: Asset) -> TransferError:
        status, _, error = attempt(self.transfer(asset))
        assert status >= 400 and error is not None, status
        return error


def api_requests(drive: DriveFake, path: str = "/drive/v3/*") -> list[Request]:
    return drive.server.requests_to(path)


def tree(folder: Path) -> dict[str, bytes]:
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


# -- listing -----------------------------------------------------------------------------------------


def test_listing_walks_by_id_with_the_documented_request_shape(drive: DriveFake) -> None:
    photos = drive.add_folder("Photos")
    trip = drive.add_folder("Trip 'n \\ back", parent=photos)  # quote and backslash: escaped in q
    drive.add_file("a.jpg", JPEG + b"a", parent=photos)
    drive.add_file("b.png", PNG + b"b", parent=trip)
    drive.add_file("clip.mp4", b"\x00\x00\x00\x18ftypmp42", parent=trip)
    drive.add_file("gone.jpg", JPEG, parent=photos, trashed=True)
    drive.add_file("notes.txt", b"not media", parent=photos)
    drive.add_file("empty.jpg", b"", parent=photos)  # 0 bytes
    drive.add_file("caf\u00e9 \u65e5\u672c.jpg", JPEG + b"unicode", parent=photos)
    drive.add_file("left/right.jpg", JPEG + b"slash", parent=photos)
    drive.add_file("heic-photo", b"ftypheic", parent=photos, mime_type="image/heic")  # no extension: by mime
    ctx = Ctx(drive)

    assets, count = ctx.listing()
    assert sorted(assets) == sorted([
        # a backslash in a name is no folder either (the engine splits paths on it): "＼" as rclone writes it
        "Photos/a.jpg", "Photos/Trip 'n \uff3c back/b.png", "Photos/Trip 'n \uff3c back/clip.mp4", "Photos/empty.jpg",
        "Photos/caf\u00e9 \u65e5\u672c.jpg", "Photos/left\uff0fright.jpg", "Photos/heic-photo"])
    a = assets["Photos/a.jpg"]
    assert a.checksum is not None and a.checksum.algorithm == "sha256"
    assert a.checksum.value == hashlib.sha256(JPEG + b"a").hexdigest()
    assert a.version == "md5:" + hashlib.md5(JPEG + b"a").hexdigest()
    assert a.size == len(JPEG) + 1 and a.media_type == "image/jpeg" and a.modified is not None
    assert assets["Photos/empty.jpg"].size == 0

    lists = api_requests(drive, "/drive/v3/files")
    # startPageToken, the root, then one files.list per folder (root, Photos, Trip): walked by id
    assert count == 5 and len(api_requests(drive)) == 5
    assert [r.arg("q") for r in lists] == [
        "'root-folder-id' in parents and trashed = false",
        f"'{photos}' in parents and trashed = false",
        f"'{trip}' in parents and trashed = false",
    ]
    for r in lists:
        assert r.arg("pageSize") == "1000"
        assert r.arg("supportsAllDrives") == "true" and r.arg("includeItemsFromAllDrives") == "true"
        fields = r.arg("fields") or ""
        for name in ("nextPageToken", "md5Checksum", "sha256Checksum", "size", "modifiedTime",
                     "capabilities/canDownload", "shortcutDetails", "parents"):
            assert name in fields
    assert api_requests(drive)[0].path == "/drive/v3/changes/startPageToken"  # taken BEFORE the listing

    for path, asset in assets.items():
        transfer = ctx.transfer(asset)
        assert (transfer.method, transfer.resumable, transfer.auth, transfer.body) == ("GET", True, ctx.auth, None)
        data = ctx.read(asset)
        name = path.rsplit("/", 1)[-1].replace("\uff0f", "/")
        (fid,) = [f.id for f in drive.files.values() if f.name == name and not f.trashed]
        assert data == drive.files[fid].data


def test_paging_follows_next_page_token(drive: DriveFake) -> None:
    big = drive.add_folder("Big")
    for n in range(1005):
        drive.add_file(f"{n:04}.jpg", b"%d" % n, parent=big)
    assets, _ = Ctx(drive).listing()
    assert len(assets) == 1005
    pages = [r for r in api_requests(drive, "/drive/v3/files") if r.arg("q", "").startswith(f"'{big}'")]
    assert len(pages) == 2 and pages[0].arg("pageToken") is None and pages[1].arg("pageToken")


def test_docs_skipped_drawings_exported_and_locked_files_reported(drive: DriveFake) -> None:
    drive.add_google_doc("Meeting notes")
    drive.add_google_doc("Budget", mime_type="application/vnd.google-apps.spreadsheet")
    drawing = drive.add_drawing("Diagram", png=PNG + b"drawing")
    drive.add_file("locked.jpg", JPEG + b"locked", can_download=False)
    ctx = Ctx(drive)

    assets, _ = ctx.listing()
    assert sorted(assets) == ["Diagram.png"]
    exported = assets["Diagram.png"]
    assert exported.size is None and exported.checksum is None and exported.media_type == "image/png"
    assert exported.version.startswith("export:image/png:")
    assert ctx.read(exported) == PNG + b"drawing"
    assert not ctx.transfer(exported).resumable  # §1.6: files.export answers no ranges
    (export_request,) = api_requests(drive, "/drive/v3/files/*/export")
    assert export_request.arg("mimeType") == "image/png"
    docs = [w for w in ctx.warnings if "Google Docs" in w]
    assert len(docs) == 1 and "2 Google Docs/Sheets/Slides" in docs[0] and "Meeting notes" in docs[0]
    assert any("locked.jpg" in w and "canDownload=false" in w for w in ctx.warnings)

    svg, _ = ctx.listing(export_drawings="svg")
    assert sorted(svg) == ["Diagram.svg"] and ctx.read(svg["Diagram.svg"]) == b"<svg/>"
    jpeg, _ = ctx.listing(export_drawings="jpeg")
    assert ctx.read(jpeg["Diagram.jpg"]) == b"\xff\xd8\xff" + PNG + b"drawing"
    assert ctx.listing(export_drawings="skip")[0] == {}

    # a changed drawing gets a new version; the 10 MB export limit fails that file alone
    drive.update_file(drawing, modified_time="2031-01-01T00:00:00.000Z")
    again, _ = ctx.listing()
    assert again["Diagram.png"].version != exported.version
    drive.export_limit = 5
    refused = ctx.refusal(again["Diagram.png"])
    assert "10 MB" in refused.message and not refused.retry and not refused.auth


def test_shortcuts_are_resolved_loops_and_dangling_ones_skipped(drive: DriveFake) -> None:
    root = drive.add_folder("Root")
    inner = drive.add_folder("Inner", parent=root)
    elsewhere = drive.add_folder("Elsewhere")  # outside the configured folder
    outside = drive.add_file("outside.jpg", JPEG + b"outside", parent=elsewhere)
    drive.add_file("deep.png", PNG + b"deep", parent=elsewhere)
    drive.add_shortcut("link to outside", outside, parent=root)  # no extension: the target's is added
    drive.add_shortcut("Elsewhere link", elsewhere, parent=inner)  # a folder shortcut
    drive.add_shortcut("loop", root, parent=inner)  # back to an ancestor
    drive.add_shortcut("dangling.jpg", "1doesnotexist", parent=root, target_mime_type="image/jpeg")
    drive.add_file("own.jpg", JPEG + b"own", parent=inner)
    ctx = Ctx(drive, folder_id=root)

    assets, _ = ctx.listing()
    assert sorted(assets) == ["Inner/Elsewhere link/deep.png", "Inner/Elsewhere link/outside.jpg",
                              "Inner/own.jpg", "link to outside.jpg"]
    # outside.jpg is reached twice (a file shortcut, and inside a folder shortcut): the shallower place
    # gets its id, the other one is the same content (the engine copies instead of downloading again)
    assert assets["link to outside.jpg"].id == outside
    again = assets["Inner/Elsewhere link/outside.jpg"]
    assert again.same_as == outside and again.id.endswith(f":{outside}") and again.version == assets[
        "link to outside.jpg"].version
    assert ctx.read(assets["link to outside.jpg"]) == JPEG + b"outside"
    assert any("'loop'" in w and "points back" in w for w in ctx.warnings)
    assert any("'dangling.jpg'" in w and "target is gone" in w for w in ctx.warnings)


def test_same_name_siblings_get_stable_id_based_names(drive: DriveFake) -> None:
    first = drive.add_file("IMG.jpg", JPEG + b"1")
    second = drive.add_file("IMG.jpg", JPEG + b"2")
    drive.add_file("other.jpg", JPEG + b"3")
    dup_a = drive.add_folder("Dup")
    dup_b = drive.add_folder("Dup")
    drive.add_file("x.jpg", JPEG + b"a", parent=dup_a)
    drive.add_file("x.jpg", JPEG + b"b", parent=dup_b)
    ctx = Ctx(drive)

    assets, _ = ctx.listing()
    expected = {f"IMG~{first[:8]}.jpg", f"IMG~{second[:8]}.jpg", "other.jpg",
                f"Dup~{dup_a[:8]}/x.jpg", f"Dup~{dup_b[:8]}/x.jpg"}
    assert set(assets) == expected
    assert assets[f"IMG~{second[:8]}.jpg"].id == second
    # a third sibling later does not rename the first two; a fresh cache gives the same names
    third = drive.add_file("IMG.jpg", JPEG + b"4")
    again, _ = ctx.listing()
    assert set(again) == expected | {f"IMG~{third[:8]}.jpg"}
    assert set(Ctx(drive).listing()[0]) == set(again)


def test_include_exclude_and_all_files(drive: DriveFake) -> None:
    drive.add_file("a.jpg", JPEG)
    drive.add_file("b.png", PNG)
    drive.add_file("notes.txt", b"text")
    ctx = Ctx(drive)
    assert sorted(ctx.listing(include=["*.jpg"])[0]) == ["a.jpg"]
    assert sorted(ctx.listing(exclude=["*.jpg"])[0]) == ["b.png"]
    assert sorted(ctx.listing(all_files=True)[0]) == ["a.jpg", "b.png", "notes.txt"]


def test_non_recursive_lists_one_folder(drive: DriveFake) -> None:
    drive.add_file("top.jpg", JPEG)
    sub = drive.add_folder("Sub")
    drive.add_file("below.jpg", JPEG, parent=sub)
    assets, count = Ctx(drive).listing(recursive=False)
    assert sorted(assets) == ["top.jpg"] and count == 3


def test_shared_drive_lists_with_corpora_drive(drive: DriveFake) -> None:
    team = drive.add_shared_drive("Team")
    drive.add_file("t.jpg", JPEG + b"team", parent=team)
    drive.add_file("mine.jpg", JPEG + b"mine")
    ctx = Ctx(drive, shared_drive_id=team)
    assets, _ = ctx.listing()
    assert sorted(assets) == ["t.jpg"]
    (listing,) = api_requests(drive, "/drive/v3/files")
    assert (listing.arg("corpora"), listing.arg("driveId")) == ("drive", team)
    assert api_requests(drive, "/drive/v3/changes/startPageToken")[0].arg("driveId") == team
    assert ctx.read(assets["t.jpg"]) == JPEG + b"team"  # alt=media with supportsAllDrives=true

    drive.add_file("t2.jpg", JPEG + b"2", parent=team)
    drive.add_file("mine2.jpg", JPEG + b"not in the shared drive")
    again, count = ctx.listing()
    assert sorted(again) == ["t.jpg", "t2.jpg"] and count == 1
    assert api_requests(drive, "/drive/v3/changes")[-1].arg("driveId") == team


def test_include_shared_lists_items_shared_with_me(drive: DriveFake) -> None:
    pool = drive.add_folder("someone else's drive")
    drive.files[pool].parents = []  # not in My Drive: its children are "shared with me"
    drive.add_file("gift.jpg", JPEG + b"gift", parent=pool)
    album = drive.add_folder("Album", parent=pool)
    drive.add_file("in album.png", PNG + b"album", parent=album)
    drive.add_file("mine.jpg", JPEG + b"mine")
    original = drive._list

    def files_list(req: Request):  # noqa: ANN202 - the fake has no sharedWithMe term: map it to the pool
        if req.arg("q") == "sharedWithMe = true and trashed = false":
            q = f"'{pool}' in parents and trashed = false"
            req = dataclasses.replace(req, query={**req.query, "q": [q]})
        return original(req)

    drive._list = files_list  # type: ignore[method-assign]
    drive.server._routes = [(m, p, files_list if h == original else h, v)
                            for m, p, h, v in drive.server._routes]
    ctx = Ctx(drive, include_shared=True)
    assets, _ = ctx.listing()
    assert sorted(assets) == ["Shared with me/Album/in album.png", "Shared with me/gift.jpg", "mine.jpg"]
    assert ctx.read(assets["Shared with me/Album/in album.png"]) == PNG + b"album"
    shared_q = [r for r in api_requests(drive, "/drive/v3/files") if "sharedWithMe" in (r.arg("q") or "")]
    assert len(shared_q) == 1 and shared_q[0].arg("corpora") is None
    assert ctx.cache.get(SNAPSHOT_KEY) is None  # listed in full every run (see the README)


def test_missing_folder_or_not_a_folder_is_unavailable(drive: DriveFake) -> None:
    fid = drive.add_file("a.jpg", JPEG)
    with pytest.raises(SourceUnavailable, match="not found"):
        Ctx(drive, folder_id="1nope").listing()
    with pytest.raises(SourceUnavailable, match="is not a folder"):
        Ctx(drive, folder_id=fid).listing()


# -- incremental listing ----------------------------------------------------------------------------------


def build_tree(drive: DriveFake, folders: int = 30, files: int = 20) -> list[str]:
    ids = []
    for f in range(folders):
        folder = drive.add_folder(f"F{f:02}")
        ids.append(folder)
        for n in range(files):
            drive.add_file(f"{n:02}.jpg", b"%d/%d" % (f, n), parent=folder)
    return ids


def test_changes_api_saves_requests_and_matches_a_full_listing(drive: DriveFake,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folders = build_tree(drive)
    ctx = Ctx(drive)
    first, full_count = ctx.listing()
    assert len(first) == 600 and full_count == 33  # startPageToken + root + 31 folder listings
    assert ctx.cache.get(SNAPSHOT_KEY)

    one = next(f for f in drive.files.values() if f.name == "07.jpg" and f.parents == [folders[3]])
    drive.update_file(one.id, data=b"changed")
    drive.server.requests.clear()
    second, incremental_count = ctx.listing()
    assert incremental_count == 1 and [r.path for r in api_requests(drive)] == ["/drive/v3/changes"]
    assert set(second) == set(first)
    assert second["F03/07.jpg"].version != first["F03/07.jpg"].version
    assert all(second[p] == first[p] for p in first if p != "F03/07.jpg")
    with capsys.disabled():
        print(f"\n[google-drive] 30x20 tree, 1 change: full listing {full_count} requests, "
              f"incremental {incremental_count} request(s), saved {full_count - incremental_count}")
    changes = api_requests(drive, "/drive/v3/changes")[0]
    assert changes.arg("pageSize") == "1000" and "sha256Checksum" in (changes.arg("fields") or "")

    # nothing changed: still one request, same listing
    assert ctx.listing() == (second, 1)
    # a week after the last full listing, the next one is full again
    snap = Snapshot.load(ctx.cache.get(SNAPSHOT_KEY))
    assert snap is not None and abs(snap.full_at - time.time()) < 60
    snap.full_at -= 8 * 86400
    ctx.cache.put(SNAPSHOT_KEY, snap.dump())
    assert ctx.listing() == (second, full_count)


def test_incremental_listing_follows_every_kind_of_change(drive: DriveFake) -> None:
    a = drive.add_folder("A")
    b = drive.add_folder("B", parent=a)
    outside = drive.add_folder("Outside")
    drive.files[outside].parents = []  # not in My Drive (yet)
    drive.add_file("stay.jpg", JPEG + b"stay", parent=a)
    moved = drive.add_file("moved.jpg", JPEG + b"moved", parent=b)
    leaving = drive.add_file("leaving.jpg", JPEG + b"leaving", parent=b)
    renamed = drive.add_file("old name.jpg", JPEG + b"renamed", parent=a)
    deleted = drive.add_file("deleted.jpg", JPEG + b"deleted", parent=b)
    trashed = drive.add_file("trashed.jpg", JPEG + b"trashed", parent=a)
    drive.add_file("hidden.jpg", JPEG + b"hidden", parent=outside)
    target = drive.add_file("target.jpg", JPEG + b"target", parent=outside)
    far_folder = drive.add_folder("Far")
    drive.files[far_folder].parents = []  # someone else's folder: not in My Drive
    far = drive.add_file("far.jpg", JPEG + b"far", parent=far_folder)
    drive.add_shortcut("dangling.jpg", "1later", target_mime_type="image/jpeg")
    ctx = Ctx(drive)
    ctx.listing()

    def check() -> dict[str, Asset]:
        incremental, count = ctx.listing()
        full, _ = Ctx(drive).listing()
        assert incremental == full
        return incremental

    drive.update_file(moved, parents=[outside])  # moved into a folder that then moves into the tree
    drive.update_file(leaving, parents=[far_folder])  # moved out of the tree
    drive.update_file(renamed, name="new name.jpg")
    drive.delete(deleted)
    drive.trash(trashed)
    drive.update_file(outside, parents=[a])  # a folder moved in, with content never seen before
    new_folder = drive.add_folder("New", parent=b)
    drive.add_file("n.jpg", JPEG + b"n", parent=new_folder)
    drive.update_file(new_folder, name="Newer")  # the folder's change now comes after its child's
    drive.add_shortcut("link.jpg", far, parent=b)  # a shortcut to a file outside the tree
    drive.add_shortcut("own link.jpg", target, parent=b)  # to a file the tree holds: listed once, in place
    assets = check()
    assert sorted(assets) == ["A/B/Newer/n.jpg", "A/B/link.jpg", "A/B/own link.jpg", "A/Outside/hidden.jpg",
                              "A/Outside/moved.jpg", "A/Outside/target.jpg", "A/new name.jpg", "A/stay.jpg"]
    assert assets["A/B/link.jpg"].id == far and assets["A/Outside/target.jpg"].id == target
    assert assets["A/B/own link.jpg"].same_as == target

    version = assets["A/B/link.jpg"].version
    drive.update_file(far, data=JPEG + b"far, changed")  # the target changes outside the tree
    # the dangling shortcut's target appears (outside the tree)
    drive.add_file("later.jpg", JPEG + b"appears", parent=far_folder, file_id="1later")
    assets = check()
    assert assets["A/B/link.jpg"].version != version
    assert assets["dangling.jpg"].id == "1later"

    drive.trash(far)  # a shortcut's target trashed: the shortcut dangles, then comes back with it
    assets = check()
    assert "A/B/link.jpg" not in assets and any("'link.jpg'" in w for w in ctx.warnings)
    drive.update_file(far, trashed=False)
    assert "A/B/link.jpg" in check()

    drive.update_file(b, trashed=True)  # a whole folder trashed
    assets = check()
    assert sorted(assets) == ["A/Outside/hidden.jpg", "A/Outside/moved.jpg", "A/Outside/target.jpg",
                              "A/new name.jpg", "A/stay.jpg", "dangling.jpg"]


def test_rejected_change_token_falls_back_to_a_full_listing(drive: DriveFake) -> None:
    build_tree(drive, 3, 2)
    ctx = Ctx(drive)
    first, _ = ctx.listing()
    drive.fail_next_error(400, "invalid", message="Invalid Value", path="/drive/v3/changes")
    again, count = ctx.listing()
    assert again == first and count == 1 + 6  # the refused changes.list, then a full listing
    assert any("change token" in w for w in ctx.warnings)
    # the config changed (another folder): the snapshot is not reused
    folder = next(f.id for f in drive.files.values() if f.name == "F01")
    scoped, count = ctx.listing(folder_id=folder)
    assert sorted(scoped) == ["00.jpg", "01.jpg"] and count == 3


def test_a_page_token_refused_mid_listing_restarts_that_folder(drive: DriveFake) -> None:
    big = drive.add_folder("Big")
    for n in range(1500):
        drive.add_file(f"{n:04}.jpg", b"%d" % n, parent=big)
    ctx = Ctx(drive)

    def second_page(req: Request) -> bool:
        if req.arg("pageToken"):
            drive.invalidate_page_tokens()  # every token handed out so far is now dead
            return True
        return False

    body = google_error(400, "invalid", "Invalid Value", "pageToken").body
    drive.server.fail_next(400, body, {"Content-Type": "application/json"}, path="/drive/v3/files",
                           when=second_page)
    assets, _ = ctx.listing()
    assert len(assets) == 1500
    pages = [r for r in api_requests(drive, "/drive/v3/files") if r.arg("q", "").startswith(f"'{big}'")]
    assert [bool(r.arg("pageToken")) for r in pages] == [False, True, False, True]
    assert any("page token" in w for w in ctx.warnings)


# -- errors and retries ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [(403, "userRateLimitExceeded"), (403, "rateLimitExceeded"),
                                                (429, None), (503, None)])
def test_listing_retries_rate_limits_and_server_errors(drive: DriveFake, status: int,
                                                      reason: str | None) -> None:
    drive.add_file("a.jpg", JPEG)
    drive.fail_next_error(status, reason, path="/drive/v3/files")
    assets, _ = Ctx(drive).listing()
    assert sorted(assets) == ["a.jpg"]
    assert len(api_requests(drive, "/drive/v3/files")) == 2


def test_listing_permission_errors_are_not_retried(drive: DriveFake) -> None:
    drive.add_file("a.jpg", JPEG)
    drive.fail_next_error(403, "insufficientPermissions", path="/drive/v3/files")
    from pixsrc.errors import AuthRequired

    with pytest.raises(AuthRequired, match="refused the credential"):
        Ctx(drive).listing()
    assert len(api_requests(drive, "/drive/v3/files")) == 1


GARBAGE_PAGES = [
    (b"<html><body>502 Bad Gateway</body></html>", "invalid JSON"),
    (b'{"files": [{"id": "1a", "name": "x.jpg"', "invalid JSON"),  # a page cut short, Content-Length and all
    (b"\xff\xfe\x00garbage", "invalid JSON"),
    (b"[]", "unexpected shape"),
    (b'{"files": "none"}', "unexpected shape (files:"),
    (b'{"files": [null]}', "unexpected shape (files.0:"),
    (b'{"files": [{"id": 7}]}', "unexpected shape (files.0.id:"),
    (b'{"files": [{"id": ""}]}', "unexpected shape (files.0.id:"),
    (b'{"files": [{"id": "1a", "size": 12}]}', "unexpected shape (files.0.size:"),  # §1.6: a string
    (b'{"files": [{"id": "1a", "size": "-1"}]}', "unexpected shape (files.0.size:"),
    (b'{"files": [{"id": "1a", "parents": "root"}]}', "unexpected shape (files.0.parents:"),
    (b'{"files": [{"id": "1a", "capabilities": {"canDownload": "yes"}}]}', "canDownload"),
    (b'{"nextPageToken": 5, "files": []}', "unexpected shape (nextPageToken:"),
]


@pytest.mark.parametrize(("body", "expected"), GARBAGE_PAGES)
def test_a_garbage_page_is_source_unavailable_naming_the_endpoint(drive: DriveFake, body: bytes,
                                                                  expected: str) -> None:
    drive.add_file("a.jpg", JPEG)
    drive.fail_next(200, body, {"Content-Type": "application/json"}, path="/drive/v3/files")
    with pytest.raises(SourceUnavailable) as caught:
        Ctx(drive).listing()
    message = str(caught.value)
    assert message.startswith("gd: Google Drive answered files.list with ") and expected in message
    assert "1a" not in message and "502 Bad" not in message  # what it said is not echoed, only where


@pytest.mark.parametrize(("path", "body", "endpoint"), [
    ("/drive/v3/changes/startPageToken", b'{"startPageToken": 12}', "changes.getStartPageToken"),
    ("/drive/v3/changes/startPageToken", b"{}", "changes.getStartPageToken"),
    ("/drive/v3/files/root", b'{"id": "root-folder-id", "mimeType": null}', "files.get"),
    ("/drive/v3/files/root", b'{"id": "root-folder-id", "trashed": "no"}', "files.get"),
])
def test_garbage_from_the_other_listing_endpoints(drive: DriveFake, path: str, body: bytes,
                                                  endpoint: str) -> None:
    drive.fail_next(200, body, {"Content-Type": "application/json"}, path=path)
    with pytest.raises(SourceUnavailable, match=f"answered {endpoint} with a document of an unexpected shape"):
        Ctx(drive).listing()


def test_garbage_changes_and_about(drive: DriveFake) -> None:
    drive.add_file("a.jpg", JPEG)
    ctx = Ctx(drive)
    ctx.listing()
    drive.fail_next(200, b'{"changes": [{"fileId": "1a", "file": {"id": "1a", "md5Checksum": 3}}]}',
                    {"Content-Type": "application/json"}, path="/drive/v3/changes")
    with pytest.raises(SourceUnavailable, match=r"changes.list with .*changes.0.file.md5Checksum"):
        ctx.listing()
    drive.fail_next(200, b'{"user": "quinn"}', {"Content-Type": "application/json"}, path="/drive/v3/about")
    controller = ctx.controller()
    with pytest.raises(SourceUnavailable, match="about.get with a document of an unexpected shape"):
        controller.verify()
    assert controller.verify() == "quinn@example.com"
    controller.close()


@pytest.mark.parametrize(("status", "body", "expected"), [
    (404, google_error(404, "notFound", "Shared drive not found: x").body,
     "files.list: HTTP 404: notFound: Shared drive not found: x"),
    (400, google_error(400, "badRequest", "Invalid query").body, "files.list: HTTP 400: badRequest: Invalid query"),
    (418, b"<html>\n<b>teapot</b></html>", "files.list: HTTP 418: <html> <b>teapot</b></html>"),
    (301, b"", "files.list: HTTP 301"),  # a redirect without Location: nothing to follow
    (403, google_error(403, "dailyLimitExceeded", "Daily Limit Exceeded").body, "a daily quota is exhausted"),
    (503, google_error(503, "backendError").body, "files.list: HTTP 503: backendError: Backend Error"),
    (429, b"", "still rate-limited after retrying"),
    (403, google_error(403, "rateLimitExceeded").body, "still rate-limited after retrying"),
])
def test_unexpected_statuses_are_source_unavailable_naming_endpoint_status_and_reason(
        drive: DriveFake, status: int, body: bytes, expected: str) -> None:
    drive.add_file("a.jpg", JPEG)
    drive.fail_next(status, body, {"Content-Type": "application/json"}, times=99, path="/drive/v3/files")
    with pytest.raises(SourceUnavailable, match="^gd: ") as caught:
        Ctx(drive).listing()
    assert expected in str(caught.value)
    retried = status in (429, 503) or (status == 403 and b"rateLimitExceeded" in body)
    assert len(api_requests(drive, "/drive/v3/files")) == (FAST.retries + 1 if retried else 1)


def test_credential_refused_for_good_is_auth_required_naming_the_endpoint(drive: DriveFake) -> None:
    drive.fail_next_error(401, times=2, path="/drive/v3/changes/startPageToken")
    ctx = Ctx(drive)
    with pytest.raises(AuthRequired, match=r"refused the credential for changes.getStartPageToken \(HTTP 401"):
        ctx.listing()
    assert ctx.auth.refreshes == 1  # refreshed once, then it is the user's turn


def test_a_cut_off_page_is_read_again_and_a_dead_connection_is_unavailable(drive: DriveFake) -> None:
    drive.add_file("a.jpg", JPEG)
    drive.truncate_next(path="/drive/v3/files")
    assert sorted(Ctx(drive).listing()[0]) == ["a.jpg"]
    assert len(api_requests(drive, "/drive/v3/files")) == 2
    drive.truncate_next(path="/drive/v3/files", times=99)
    with pytest.raises(SourceUnavailable, match="^gd: Google Drive files.list: GET http://127.0.0.1:"):
        Ctx(drive).listing()


def test_token_expiring_mid_listing_is_refreshed_once(drive: DriveFake) -> None:
    build_tree(drive, 3, 2)
    ctx = Ctx(drive)
    calls = []

    def expire_on_third(req: Request) -> bool:
        calls.append(req.path)
        if len(calls) == 3:
            drive.oauth.expire_access_tokens()
        return False

    drive.server.fail_next(500, when=expire_on_third, times=99)
    assets, _ = ctx.listing()
    assert len(assets) == 6 and ctx.auth.refreshes == 1
    statuses = [r for r in drive.requests if r.path.startswith("/drive/v3/")]
    assert len(statuses) == 5 + 1 + 1  # one request answered 401, then sent again


def test_transfer_is_a_resumable_alt_media_get_and_rate_limits_are_retried(drive: DriveFake) -> None:
    data = bytes(range(256)) * 40
    fid = drive.add_file("big.jpg", data)
    ctx = Ctx(drive)
    (asset,) = ctx.listing()[0].values()
    transfer = ctx.transfer(asset)
    assert transfer.url == f"{drive.api_url}/files/{fid}?alt=media&supportsAllDrives=true"
    assert transfer.resumable and transfer.auth is ctx.auth and transfer.method == "GET"
    assert asset.checksum is not None and asset.size == len(data)  # what the engine checks the bytes against
    status, tail, _ = attempt(transfer, 1000)  # the URL it describes honours Range: resumable is true
    assert (status, tail) == (206, data[1000:])

    for status, reason in [(403, "userRateLimitExceeded"), (403, "rateLimitExceeded"), (429, None), (502, None)]:
        drive.fail_next_error(status, reason, path=f"/drive/v3/files/{fid}")
        refused = ctx.refusal(asset)
        assert refused.retry and not refused.auth, (status, reason)
    drive.fail_next_error(503, headers={"Retry-After": "7"}, path=f"/drive/v3/files/{fid}")
    assert ctx.refusal(asset).retry_after == 7.0  # §1.7: not documented for Drive, honoured if sent
    drive.fail_next_error(401, times=2, path=f"/drive/v3/files/{fid}")
    status, _, error = attempt(transfer)
    assert (status, error, ctx.auth.refreshes) == (401, None, 1)  # the engine's default: refresh once, then exit 3
    drive.fail_next_error(403, "insufficientPermissions", path=f"/drive/v3/files/{fid}")
    refused = ctx.refusal(asset)
    assert refused.auth and "drive.readonly" in refused.message
    drive.delete(fid)
    refused = ctx.refusal(asset)
    assert "no longer exists" in refused.message and not refused.retry


def test_download_errors_that_are_not_google_json_still_name_the_status(drive: DriveFake) -> None:
    fid = drive.add_file("f.jpg", JPEG)
    ctx = Ctx(drive)
    (asset,) = ctx.listing()[0].values()
    drive.fail_next(418, b"<html><body>\n  I'm a\tteapot </body></html>", {"Content-Type": "text/html"},
                    path=f"/drive/v3/files/{fid}")
    refused = ctx.refusal(asset)
    assert refused.message == "Google Drive answered HTTP 418: <html><body> I'm a teapot </body></html>"
    assert not refused.retry
    drive.fail_next(500, b'{"error": {"errors": [{"reason": ["not", "a", "string"]}], "message": 5}}',
                    path=f"/drive/v3/files/{fid}")
    refused = ctx.refusal(asset)
    assert refused.retry and refused.message == "Google Drive answered HTTP 500"


@pytest.mark.parametrize(("setup", "reason", "message"), [
    ({"abusive": True}, None, "malware"),
    ({"can_download": True}, "downloadQuotaExceeded", "per-file quota"),
    ({"can_download": True}, "cannotDownloadFile", "does not allow"),
])
def test_download_refusals_fail_that_file_only(drive: DriveFake, setup: dict, reason: str | None,
                                               message: str) -> None:
    fid = drive.add_file("f.jpg", JPEG, **setup)
    ctx = Ctx(drive)
    (asset,) = ctx.listing()[0].values()
    if reason:
        drive.fail_next_error(403, reason, path=f"/drive/v3/files/{fid}")
    refused = ctx.refusal(asset)
    assert message in refused.message and not refused.retry and not refused.auth


def test_daily_quota_ends_the_run(drive: DriveFake) -> None:
    first = drive.add_file("a.jpg", JPEG + b"a")
    drive.add_file("b.jpg", JPEG + b"b")
    ctx = Ctx(drive)
    controller = ctx.controller()
    assets = {a.path: a for a in controller.list_assets()}
    drive.fail_next_error(403, "dailyLimitExceeded", message="Daily Limit Exceeded",
                          path=f"/drive/v3/files/{first}")
    with pytest.raises(SourceUnavailable, match="daily quota"):
        attempt(controller.transfer(assets["a.jpg"]))
    before = len(drive.requests)
    with pytest.raises(AssetError, match="not tried"):
        controller.transfer(assets["b.jpg"])
    assert len(drive.requests) == before
    controller.close()


def test_contract(drive: DriveFake) -> None:
    folder = drive.add_folder("Contract")
    fid = drive.add_file("a.jpg", bytes(range(200)), parent=folder)
    drive.add_file("b.png", PNG * 30, parent=folder)
    drive.add_file("zero.jpg", b"", parent=folder)
    ctx = Ctx(drive, folder_id=folder)
    report = check_controller(ctx.controller, mutate=lambda: drive.update_file(fid, data=b"new bytes"))
    assert (report.assets, report.mutated) == (3, 1)


# -- end to end through the pixsrc command ----------------------------------------------------------------


def write_providers(config_file: Path, drive: DriveFake) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    table = {"client_id": drive.oauth.client_id, "authorize_url": drive.authorize_url,
             "token_url": drive.token_url, "revoke_url": drive.revoke_url, "api_base_url": drive.base_url,
             "requests_per_second": 1000}
    lines = ["version = 1", "[providers.google]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    config_file.write_text("\n".join(lines) + "\n")


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's retry policy backs off in milliseconds (PIXSRC_RETRY_BASE, read once by pixsrc.api)."""
    monkeypatch.setenv("PIXSRC_RETRY_BASE", "0.001")


def signed_in(drive: DriveFake, config_file: Path, monkeypatch: pytest.MonkeyPatch, *sets: str) -> None:
    """A google-drive source "gd" with a credential from the fake (a CI bundle: no browser needed)."""
    write_providers(config_file, drive)
    monkeypatch.setenv("PIXSRC_GOOGLE_CLIENT_SECRET", drive.oauth.client_secret)
    token = drive.oauth.issue_tokens(["https://www.googleapis.com/auth/drive.readonly"])
    bundle = oauth.TokenSet("google", token["access_token"], token["refresh_token"], None, None).to_bundle()
    monkeypatch.setenv("PIXSRC_AUTH_GD", bundle)
    args = [item for pair in (("--set", value) for value in sets) for item in pair]
    added = run("add", "google-drive", "--id", "gd", *args, "--no-input")
    assert added.exit_code == 0, added.stderr


def keyring_blob(source_id: str) -> dict[str, Any] | None:
    import keyring
    import keyring.core

    keyring.core._keyring_backend = None
    value = keyring.get_password("pixsrc", source_id)
    return json.loads(value) if value else None


def test_end_to_end_login_fetch_refresh_status_logout(drive: DriveFake, config_file: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> None:
    photos = drive.add_folder("Photos")
    sub = drive.add_folder("Sub \u00e9", parent=photos)
    big = bytes(range(256)) * 200
    files = {"a.jpg": JPEG + b"a", "Sub \u00e9/b.png": PNG + b"b", "Sub \u00e9/big.jpg": big,
             "empty.jpg": b""}
    ids = {"a.jpg": drive.add_file("a.jpg", files["a.jpg"], parent=photos),
           "b.png": drive.add_file("b.png", files["Sub \u00e9/b.png"], parent=sub),
           "big.jpg": drive.add_file("big.jpg", big, parent=sub),
           "empty.jpg": drive.add_file("empty.jpg", b"", parent=photos)}
    drive.add_google_doc("Plan", parent=photos)
    write_providers(config_file, drive)
    monkeypatch.setenv("PIXSRC_GOOGLE_CLIENT_SECRET", drive.oauth.client_secret)

    added = run("add", "google-drive", "--id", "gd", "--name", "My Drive", "--set", f"folder_id={photos}",
                "--no-input")
    assert added.exit_code == 0, added.stderr

    log = tmp_path / "browser.json"
    login = run_subprocess("auth", "login", "gd", "--timeout", "60",
                           env={"BROWSER": str(FAKE_BROWSER), "FAKE_BROWSER_LOG": str(log)})
    assert login.returncode == 0, login.stderr
    assert "checked: the credential works (quinn@example.com)" in login.stderr
    (grant,) = drive.oauth.grants
    assert grant.params["access_type"] == "offline" and grant.params["prompt"] == "consent"
    assert grant.params["code_challenge_method"] == "S256"
    assert grant.scopes == ["https://www.googleapis.com/auth/drive.readonly"]
    assert grant.redirect_uri and grant.redirect_uri.startswith("http://127.0.0.1:")
    blob = keyring_blob("gd")
    assert blob and blob["provider"] == "google" and blob["refresh_token"] and blob["access_token"]
    config_text = config_file.read_text()
    assert blob["refresh_token"] not in config_text and blob["access_token"] not in config_text

    listed = run("fetch", "gd", "--list", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(files)
    assert "Google Docs" in listed.stderr and "Plan" in listed.stderr

    dest = tmp_path / "dest"
    drive.truncate_next(path=f"/drive/v3/files/{ids['big.jpg']}")  # cut off half way: resumed with Range
    drive.fail_next_error(503, path=f"/drive/v3/files/{ids['a.jpg']}")
    drive.fail_next_error(403, "userRateLimitExceeded", path=f"/drive/v3/files/{ids['b.png']}")
    fetched = run("fetch", "gd", "--dest", str(dest), "--json")
    assert fetched.exit_code == 0, fetched.stderr
    (report,) = json.loads(fetched.stdout)["sources"]
    assert (report["status"], report["listed"], report["downloaded"], report["failed"]) == ("ok", 4, 4, 0)
    assert tree(dest) == files
    big_gets = api_requests(drive, f"/drive/v3/files/{ids['big.jpg']}")
    assert [r.headers.get("range") for r in big_gets] == [None, f"bytes={len(big) // 2}-"]
    assert len(api_requests(drive, f"/drive/v3/files/{ids['a.jpg']}")) == 2
    assert len(api_requests(drive, f"/drive/v3/files/{ids['b.png']}")) == 2

    # the access token dies server-side: the next fetch refreshes it once and stores the new one
    drive.oauth.expire_access_tokens()
    drive.update_file(ids["a.jpg"], data=JPEG + b"a2")
    drive.server.requests.clear()
    again = run("fetch", "gd", "--dest", str(dest), "--json")
    assert again.exit_code == 0, again.stderr
    (report,) = json.loads(again.stdout)["sources"]
    assert (report["updated"], report["unchanged"], report["downloaded"]) == (1, 3, 0)
    assert (dest / "a.jpg").read_bytes() == JPEG + b"a2"
    assert drive.oauth.refresh_count == 1
    new_blob = keyring_blob("gd")
    assert new_blob and new_blob["access_token"] != blob["access_token"]
    assert new_blob["refresh_token"] == blob["refresh_token"]  # Google does not rotate (providers.md 1.3)
    # incremental: one changes.list (after one 401 + refresh), then one download
    assert [r.path for r in drive.requests if r.path.startswith("/drive/")] == [
        "/drive/v3/changes", "/drive/v3/changes", f"/drive/v3/files/{ids['a.jpg']}"]

    status = run("auth", "status", "gd", "--json")
    (row,) = json.loads(status.stdout)
    assert row["status"] == "ok" and row["provider"] == "google" and row["stored_in"].startswith("keyring")
    assert row["scopes"] == ["https://www.googleapis.com/auth/drive.readonly"] and "7 days" in row["limit"]

    logout = run("auth", "logout", "gd")
    assert logout.exit_code == 0, logout.stderr
    assert "revoked at Google" in logout.stderr
    assert keyring_blob("gd") is None
    (revoke,) = drive.server.requests_to("/revoke")
    assert revoke.form()["token"] == blob["refresh_token"]


def test_end_to_end_daily_quota_stops_this_source_only(drive: DriveFake, config_file: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):
        drive.add_file(f"{n}.jpg", JPEG + b"%d" % n)
    signed_in(drive, config_file, monkeypatch)
    local = tmp_path / "local"
    local.mkdir()
    (local / "l.jpg").write_bytes(b"local")
    assert run("add", "local-fs", "--id", "zz-local", "--set", f"path={local}", "--no-input").exit_code == 0
    quota = google_error(403, "dailyLimitExceeded", "Daily Limit Exceeded")
    drive.server.fail_next(403, quota.body, quota.headers, times=99, when=lambda r: r.arg("alt") == "media")
    result = run("fetch", "--all", "--dest", str(tmp_path / "out"), "--json", "--jobs", "1")
    reports = {r["source"]: r for r in json.loads(result.stdout)["sources"]}
    assert reports["gd"]["status"] == "unavailable" and "daily quota" in result.stderr
    assert reports["zz-local"]["status"] == "ok"
    assert (tmp_path / "out" / "zz-local" / "l.jpg").read_bytes() == b"local"
    assert result.exit_code == 4
    assert len(api_requests(drive, "/drive/v3/files/*")) == 2  # the root, then one refused download


@pytest.mark.parametrize("start", [0, 1])
def test_end_to_end_a_206_with_the_wrong_content_range_restarts_cleanly(
        drive: DriveFake, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_retries: None,
        start: int) -> None:
    big = hashlib.sha256(b"drive").digest() * 2000  # 64 KB
    fid = drive.add_file("big.jpg", big)
    drive.add_file("small.jpg", JPEG + b"small")
    signed_in(drive, config_file, monkeypatch)
    media = f"/drive/v3/files/{fid}"
    drive.truncate_next(path=media)  # cut off half way: the engine asks for the rest with Range...
    drive.wrong_range_next(start=start, path=media)  # ...and gets a 206 for another range, once
    dest = tmp_path / "dest"
    result = run("fetch", "gd", "--dest", str(dest), "--json", "--jobs", "1")
    assert result.exit_code == 0, result.stderr
    (report,) = json.loads(result.stdout)["sources"]
    assert (report["status"], report["downloaded"], report["failed"]) == ("ok", 2, 0)
    assert tree(dest) == {"big.jpg": big, "small.jpg": JPEG + b"small"}
    assert not [p for p in dest.rglob("*") if p.name.startswith(".pixsrc-")]  # no .part left behind
    ranges = [r.headers.get("range") for r in api_requests(drive, media)]
    assert ranges[:2] == [None, f"bytes={len(big) // 2}-"], ranges
    # the wrong answer was not appended: the file was fetched again from its start (or, when the 206
    # happened to carry the whole file from byte 0, that answer was taken as the restart)
    assert ranges[2:] in ([None], ["bytes=0-"]) or (start == 0 and ranges[2:] == []), ranges
    assert drive.server.pending_faults() == 0


@pytest.mark.parametrize(("status", "body", "code", "expected"), [
    (200, b"<html><body>Sign in to the Wi-Fi</body></html>", 4, "files.list with invalid JSON"),
    (200, b'{"files": [{"id": 7}]}', 4, "files.list with a document of an unexpected shape"),
    (200, b'{"files": [{"id": "1x", "name": "a.jpg"', 4, "files.list with invalid JSON"),
    (418, b"<html>I'm a teapot</html>", 4, "files.list: HTTP 418: <html>I'm a teapot</html>"),
    (401, google_error(401, "authError").body, 3, "refused the credential for files.list"),
])
def test_end_to_end_garbage_listing_ends_with_exit_4_or_3(
        drive: DriveFake, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_retries: None,
        status: int, body: bytes, code: int, expected: str) -> None:
    drive.add_file("a.jpg", JPEG)
    signed_in(drive, config_file, monkeypatch)
    drive.fail_next(status, body, {"Content-Type": "application/json"}, times=99, path="/drive/v3/files")
    result = run("fetch", "gd", "--dest", str(tmp_path / "dest"), "--json")
    assert result.exit_code == code, (result.exit_code, result.stderr)
    (report,) = json.loads(result.stdout)["sources"]
    assert report["status"] == ("auth" if code == 3 else "unavailable")
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_end_to_end_garbage_download_errors_fail_the_asset_not_the_program(
        drive: DriveFake, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fast_retries: None) -> None:
    bad = drive.add_file("bad.jpg", JPEG + b"bad")
    drive.add_file("good.jpg", JPEG + b"good")
    signed_in(drive, config_file, monkeypatch)
    drive.fail_next(403, b"\x00\xff<html>nope", {"Content-Type": "text/html"}, times=99,
                    path=f"/drive/v3/files/{bad}")
    result = run("fetch", "gd", "--dest", str(tmp_path / "dest"), "--json")
    assert result.exit_code == 5, (result.exit_code, result.stderr)  # partial: the other file is there
    (report,) = json.loads(result.stdout)["sources"]
    assert (report["downloaded"], report["failed"]) == (1, 1)
    assert "HTTP 403" in result.stderr and "Traceback" not in result.stderr
    assert tree(tmp_path / "dest") == {"good.jpg": JPEG + b"good"}


def test_the_fake_answers_one_wrong_content_range(drive: DriveFake) -> None:
    """The precondition of the test above: the fake's wrong_range_next does what it says."""
    fid = drive.add_file("f.jpg", b"0123456789")
    drive.wrong_range_next(start=2, path=f"/drive/v3/files/{fid}")
    url = f"{drive.api_url}/files/{fid}?alt=media"
    headers = {"Authorization": f"Bearer {drive.issue_token()}"}
    plain = httpx.get(url, headers=headers)  # no Range: not consumed
    assert (plain.status_code, plain.content) == (200, b"0123456789")
    wrong = httpx.get(url, headers={**headers, "Range": "bytes=5-"})
    assert (wrong.status_code, wrong.headers["content-range"], wrong.content) == (206, "bytes 2-9/10", b"23456789")
    right = httpx.get(url, headers={**headers, "Range": "bytes=5-"})
    assert (right.status_code, right.headers["content-range"], right.content) == (206, "bytes 5-9/10", b"56789")
    assert [r.headers.get("range") for r in api_requests(drive, f"/drive/v3/files/{fid}")] == [
        None, "bytes=5-", "bytes=5-"]  # the log keeps what the client sent


def test_type_is_registered_with_its_fields() -> None:
    from pixsrc import registry

    stype = registry.get("google-drive")
    assert stype is SOURCE_TYPE and stype.category == "cloud" and stype.auth.provider == "google"
    fields = {f.key: f for f in stype.fields()}
    assert fields["export_drawings"].options == ["png", "svg", "jpeg", "skip"]
    assert fields["export_drawings"].default == "png" and fields["recursive"].default is True
    assert fields["include"].type == "list" and fields["folder_id"].default == ""
    assert os.environ.get("PIXSRC_GOOGLE_CLIENT_SECRET") is None


def test_end_to_end_dot_names_land_inside_their_folder_stably(drive: DriveFake, config_file: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Drive allows a file named ".." or ".": each name is made a safe component before the path is
    joined, so it lands inside its folder (it used to become the folder's own path: exit 5)."""
    folder = drive.add_folder("Edge cases")
    drive.add_file("..", JPEG + b"dotdot", parent=folder, mime_type="image/jpeg")
    drive.add_file(".", JPEG + b"dot", parent=folder, mime_type="image/jpeg")
    drive.add_file("ok.jpg", JPEG + b"ok", parent=folder)
    signed_in(drive, config_file, monkeypatch)
    dest = tmp_path / "dest"
    result = run("fetch", "gd", "--dest", str(dest), "--json")
    assert result.exit_code == 0, result.stderr
    expected = {"Edge cases/_..": JPEG + b"dotdot", "Edge cases/_.": JPEG + b"dot", "Edge cases/ok.jpg": JPEG + b"ok"}
    assert tree(dest) == expected
    again = run("fetch", "gd", "--dest", str(dest), "--json")
    (report,) = json.loads(again.stdout)["sources"]
    assert (report["unchanged"], report["downloaded"], report["failed"]) == (3, 0, 0)
    assert tree(dest) == expected
