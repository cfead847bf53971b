"""Tests of the fake provider servers themselves, with plain httpx / http.client as the client."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from .base import pkce_s256
from .dropbox import DropboxFake, content_hash
from .google_drive import DOC, SCOPE_RO, DriveFake
from .pinterest import PinterestFake


@pytest.fixture
def drive():
    with DriveFake() as fake:
        yield fake


@pytest.fixture
def dbx():
    with DropboxFake() as fake:
        yield fake


@pytest.fixture
def pin():
    with PinterestFake() as fake:
        yield fake


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def authorize(url: str, **params: str) -> dict[str, str]:
    r = httpx.get(url, params=params)
    assert r.status_code == 302, r.text
    loc = urlsplit(r.headers["location"])
    return {k: v[0] for k, v in parse_qs(loc.query).items()}


# -- base: faults, log, keep-alive -------------------------------------------------------------------


def test_faults_fire_once_and_log(drive: DriveFake) -> None:
    tok = drive.issue_token()
    drive.fail_next(503, {"x": 1}, {"Retry-After": "3"}, times=2, path="/drive/v3/files")
    with httpx.Client(base_url=drive.api_url, headers=bearer(tok)) as c:
        codes = [c.get("/files", params={"q": "trashed = false"}).status_code for _ in range(3)]
        assert codes == [503, 503, 200]
        assert drive.server.pending_faults() == 0
        req = drive.requests[-1]
        assert req.method == "GET" and req.path == "/drive/v3/files"
        assert req.query == {"q": ["trashed = false"]} and req.headers["authorization"] == f"Bearer {tok}"


def test_fail_next_error_shape(drive: DriveFake) -> None:
    drive.fail_next_error(403, "userRateLimitExceeded")
    r = httpx.get(drive.api_url + "/files", headers=bearer(drive.issue_token()))
    err = r.json()["error"]
    assert r.status_code == 403 and err["code"] == 403 and err["status"] == "PERMISSION_DENIED"
    assert err["errors"][0] == {
        "message": "User Rate Limit Exceeded",
        "domain": "usageLimits",
        "reason": "userRateLimitExceeded",
    }


def test_truncate_once_keeps_content_length(drive: DriveFake) -> None:
    fid = drive.add_file("a.jpg", b"x" * 1000)
    drive.truncate_next(path=f"/drive/v3/files/{fid}")
    url = f"{drive.api_url}/files/{fid}?alt=media"
    with httpx.Client(headers=bearer(drive.issue_token())) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(url)
        assert c.get(url).content == b"x" * 1000


def test_keep_alive(drive: DriveFake) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", drive.server.port)
    headers = bearer(drive.issue_token())
    for _ in range(3):
        conn.request("GET", "/drive/v3/files", headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and not resp.will_close
    conn.close()


# -- OAuth ---------------------------------------------------------------------------------------------


def _google_code(drive: DriveFake, verifier: str | None, **extra: str) -> str:
    params = {
        "client_id": drive.oauth.client_id,
        "redirect_uri": "http://127.0.0.1:53682/",
        "response_type": "code",
        "scope": SCOPE_RO,
        "state": "s1",
        "access_type": "offline",
        **extra,
    }
    if verifier:
        params.update(code_challenge=pkce_s256(verifier), code_challenge_method="S256")
    q = authorize(drive.authorize_url, **params)
    assert q["state"] == "s1" and q["scope"] == SCOPE_RO
    return q["code"]


def test_pkce_checked(drive: DriveFake) -> None:
    verifier = secrets.token_urlsafe(64)
    code = _google_code(drive, verifier)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1:53682/",
        "client_id": drive.oauth.client_id,
        "client_secret": drive.oauth.client_secret,
    }
    bad = httpx.post(drive.token_url, data={**form, "code_verifier": secrets.token_urlsafe(64)})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    assert (
        httpx.post(
            drive.token_url, data={**form, "redirect_uri": "http://127.0.0.1:1/", "code_verifier": verifier}
        ).json()["error"]
        == "invalid_grant"
    )
    nosecret = {k: v for k, v in form.items() if k != "client_secret"}
    assert httpx.post(drive.token_url, data={**nosecret, "code_verifier": verifier}).status_code == 400
    ok = httpx.post(drive.token_url, data={**form, "code_verifier": verifier})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["expires_in"] == 3599 and body["token_type"] == "Bearer" and "refresh_token" in body
    assert httpx.get(drive.api_url + "/files", headers=bearer(body["access_token"])).status_code == 200
    replay = httpx.post(drive.token_url, data={**form, "code_verifier": verifier})
    assert replay.json()["error"] == "invalid_grant"


def test_google_refresh_no_rotation_and_consent_rule(drive: DriveFake) -> None:
    code = _google_code(drive, None)
    base = {"client_id": drive.oauth.client_id, "client_secret": drive.oauth.client_secret}
    rt = httpx.post(
        drive.token_url,
        data={
            **base,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://127.0.0.1:53682/",
        },
    ).json()["refresh_token"]
    for _ in range(2):
        r = httpx.post(drive.token_url, data={**base, "grant_type": "refresh_token", "refresh_token": rt})
        assert r.status_code == 200 and "refresh_token" not in r.json()
    assert drive.oauth.refresh_count == 2
    code2 = _google_code(drive, None)  # no prompt=consent: no new refresh token (providers.md §1.1)
    r2 = httpx.post(
        drive.token_url,
        data={
            **base,
            "grant_type": "authorization_code",
            "code": code2,
            "redirect_uri": "http://127.0.0.1:53682/",
        },
    )
    assert "refresh_token" not in r2.json()
    assert httpx.post(drive.revoke_url, data={"token": rt}).status_code == 200
    dead = httpx.post(drive.token_url, data={**base, "grant_type": "refresh_token", "refresh_token": rt})
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"


def test_authorize_denied_and_bad_redirect(drive: DriveFake) -> None:
    drive.oauth.deny_next_authorization()
    q = authorize(
        drive.authorize_url,
        client_id=drive.oauth.client_id,
        redirect_uri="http://localhost:9/cb",
        response_type="code",
        scope=SCOPE_RO,
        state="st",
    )
    assert q == {"error": "access_denied", "state": "st"}
    r = httpx.get(
        drive.authorize_url,
        params={
            "client_id": drive.oauth.client_id,
            "response_type": "code",
            "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
        },
    )
    assert r.status_code == 400


def test_pinterest_rotation_replay_and_basic_auth(pin: PinterestFake) -> None:
    q = authorize(
        pin.authorize_url,
        client_id=pin.oauth.client_id,
        redirect_uri="http://localhost:8085/",
        response_type="code",
        scope="boards:read,pins:read",
        state="x",
    )
    basic = httpx.BasicAuth(pin.oauth.client_id, pin.oauth.client_secret)
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": "http://localhost:8085/"}
    no_basic = httpx.post(
        pin.token_url,
        data={**form, "client_id": pin.oauth.client_id, "client_secret": pin.oauth.client_secret},
    )
    assert no_basic.status_code == 401 and set(no_basic.json()) == {"code", "message"}
    tok = httpx.post(pin.token_url, data=form, auth=basic).json()
    assert tok["scope"] == "boards:read,pins:read" and tok["refresh_token_expires_in"] == 60 * 24 * 3600
    rt1 = tok["refresh_token"]
    r = httpx.post(pin.token_url, data={"grant_type": "refresh_token", "refresh_token": rt1}, auth=basic)
    rt2 = r.json()["refresh_token"]
    assert r.status_code == 200 and rt2 != rt1 and r.json()["response_type"] == "refresh_token"
    replay = httpx.post(pin.token_url, data={"grant_type": "refresh_token", "refresh_token": rt1}, auth=basic)
    assert replay.status_code == 400
    assert (
        httpx.post(
            pin.token_url, data={"grant_type": "refresh_token", "refresh_token": rt2}, auth=basic
        ).status_code
        == 200
    )
    assert pin.oauth.refresh_count == 2
    # only the request without HTTP Basic breaks the spec's `security: [{basic: []}]`
    assert len(pin.violations) == 1 and "basic" in pin.violations[0]


def test_dropbox_pkce_without_secret(dbx: DropboxFake) -> None:
    verifier = secrets.token_urlsafe(64)
    q = authorize(
        dbx.authorize_url,
        client_id=dbx.oauth.client_id,
        response_type="code",
        redirect_uri="http://127.0.0.1:53682/",
        token_access_type="offline",
        code_challenge=pkce_s256(verifier),
        code_challenge_method="S256",
    )
    r = httpx.post(
        dbx.token_url,
        data={
            "grant_type": "authorization_code",
            "code": q["code"],
            "client_id": dbx.oauth.client_id,
            "code_verifier": verifier,
            "redirect_uri": "http://127.0.0.1:53682/",
        },
    )
    body = r.json()
    assert r.status_code == 200 and body["expires_in"] == 14400 and "refresh_token" in body
    ref = httpx.post(
        dbx.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": dbx.oauth.client_id,
        },
    ).json()
    assert set(ref) == {"access_token", "token_type", "expires_in"}
    # without PKCE the secret is required
    q2 = authorize(
        dbx.authorize_url,
        client_id=dbx.oauth.client_id,
        response_type="code",
        redirect_uri="http://127.0.0.1:53682/",
    )
    r2 = httpx.post(
        dbx.token_url,
        data={
            "grant_type": "authorization_code",
            "code": q2["code"],
            "client_id": dbx.oauth.client_id,
            "redirect_uri": "http://127.0.0.1:53682/",
        },
    )
    assert r2.status_code == 400
    # revoke kills the access token
    assert httpx.post(dbx.revoke_url, headers=bearer(ref["access_token"])).status_code == 200
    r3 = httpx.post(
        dbx.api_url + "/2/files/list_folder", json={"path": ""}, headers=bearer(ref["access_token"])
    )
    assert r3.status_code == 401 and r3.json()["error"][".tag"] == "invalid_access_token"


# -- Google Drive ----------------------------------------------------------------------------------------


def test_drive_paging_fields_and_q(drive: DriveFake) -> None:
    folder = drive.add_folder("Quinn's \\ pics")
    ids = [drive.add_file(f"{i}.jpg", bytes([i]) * 10, parent=folder) for i in range(5)]
    drive.add_file("gone.jpg", b"t", parent=folder, trashed=True)
    c = httpx.Client(base_url=drive.api_url, headers=bearer(drive.issue_token()))
    q = f"'{folder}' in parents and trashed = false"
    fields = (
        "nextPageToken,files(id,name,size,md5Checksum,capabilities/canDownload,shortcutDetails(targetId))"
    )
    got, token, pages = [], None, 0
    while True:
        r = c.get(
            "/files",
            params={"q": q, "pageSize": 2, "fields": fields, **({"pageToken": token} if token else {})},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        got += body["files"]
        token = body.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and [f["id"] for f in got] == ids
    assert got[0] == {
        "id": ids[0],
        "name": "0.jpg",
        "size": "10",
        "md5Checksum": hashlib.md5(b"\0" * 10).hexdigest(),
        "capabilities": {"canDownload": True},
    }
    assert set(body) == {"files"}  # no nextPageToken on the last page, nothing unrequested
    default = c.get("/files", params={"q": q}).json()
    assert set(default["files"][0]) == {"kind", "id", "name", "mimeType"}
    esc = c.get("/files", params={"q": "name = 'Quinn\\'s \\\\ pics' and trashed = false"}).json()
    assert [f["id"] for f in esc["files"]] == [folder]
    bad_tok = c.get("/files", params={"q": q, "pageToken": "garbage"})
    assert bad_tok.status_code == 400 and bad_tok.json()["error"]["errors"][0]["location"] == "pageToken"
    bad_q = c.get("/files", params={"q": f"'{folder}' in parents or trashed = false"})
    assert bad_q.status_code == 400 and bad_q.json()["error"]["errors"][0]["location"] == "q"
    assert c.get("/files", params={"fields": "files(id,bogus)"}).status_code == 400
    assert drive.violations == []


def test_drive_kinds_download_export(drive: DriveFake) -> None:
    data = bytes(range(256)) * 4
    fid = drive.add_file("p.png", data)
    doc = drive.add_google_doc("Notes")
    drawing = drive.add_drawing("D", png=b"\x89PNG" + b"d" * 100)
    short = drive.add_shortcut("link", fid)
    dangling = drive.add_shortcut("dangling", "nope", target_mime_type="image/jpeg")
    locked = drive.add_file("locked.jpg", b"z", can_download=False)
    c = httpx.Client(base_url=drive.api_url, headers=bearer(drive.issue_token()))
    meta = c.get(f"/files/{fid}", params={"fields": "*"}).json()
    assert meta["sha256Checksum"] == hashlib.sha256(data).hexdigest() and meta["size"] == str(len(data))
    dmeta = c.get(f"/files/{doc}", params={"fields": "id,md5Checksum,size,mimeType"}).json()
    assert dmeta == {"id": doc, "mimeType": DOC}
    smeta = c.get(f"/files/{short}", params={"fields": "shortcutDetails(targetId,targetMimeType)"}).json()
    assert smeta == {"shortcutDetails": {"targetId": fid, "targetMimeType": "image/png"}}
    target = c.get(f"/files/{dangling}", params={"fields": "shortcutDetails/targetId"}).json()
    assert c.get(f"/files/{target['shortcutDetails']['targetId']}").status_code == 404
    part = c.get(f"/files/{fid}", params={"alt": "media"}, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    nd = c.get(f"/files/{doc}", params={"alt": "media"})
    assert nd.status_code == 403 and nd.json()["error"]["errors"][0]["reason"] == "fileNotDownloadable"
    assert c.get(f"/files/{locked}", params={"alt": "media"}).status_code == 403
    png = c.get(f"/files/{drawing}/export", params={"mimeType": "image/png"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    drive.export_limit = 50
    big = c.get(f"/files/{drawing}/export", params={"mimeType": "image/png"})
    assert big.status_code == 403 and big.json()["error"]["errors"][0]["reason"] == "exportSizeLimitExceeded"
    noauth = httpx.get(drive.api_url + "/files")
    assert noauth.status_code == 401 and noauth.json()["error"]["status"] == "UNAUTHENTICATED"
    assert drive.violations == []


def test_drive_shared_drive_and_changes(drive: DriveFake) -> None:
    sd = drive.add_shared_drive("Team")
    inside = drive.add_file("t.jpg", b"t", parent=sd)
    c = httpx.Client(base_url=drive.api_url, headers=bearer(drive.issue_token()))
    assert c.get(f"/files/{inside}").status_code == 404  # needs supportsAllDrives=true
    assert c.get(f"/files/{inside}", params={"supportsAllDrives": "true"}).status_code == 200
    r = c.get(
        "/files",
        params={
            "corpora": "drive",
            "driveId": sd,
            "supportsAllDrives": "true",
            "includeItemsFromAllDrives": "true",
            "q": f"'{sd}' in parents and trashed = false",
        },
    )
    assert [f["id"] for f in r.json()["files"]] == [inside]
    start = c.get("/changes/startPageToken").json()["startPageToken"]
    new = drive.add_file("new.jpg", b"n")
    drive.delete(new)
    ch = c.get(
        "/changes", params={"pageToken": start, "fields": "newStartPageToken,changes(fileId,removed)"}
    ).json()
    assert ch["changes"] == [{"fileId": new, "removed": True}]
    assert int(ch["newStartPageToken"]) > int(start)
    assert c.get("/changes", params={"pageToken": "999999"}).status_code == 400
    assert drive.violations == []


def test_drive_violations(drive: DriveFake) -> None:
    c = httpx.Client(base_url=drive.api_url, headers=bearer(drive.issue_token()))
    assert c.get("/files", params={"pageSize": 5000}).status_code == 200  # the real API clamps ...
    assert any("pageSize" in v for v in drive.violations)  # ... but the OpenAPI says maximum 1000
    drive.violations.clear()
    c.get("/files", params={"pagesize": 10})
    c.get("/filez")
    assert (
        len(drive.violations) == 2
        and "pagesize" in drive.violations[0]
        and "not found" in drive.violations[1]
    )


# -- Dropbox ---------------------------------------------------------------------------------------------


def _independent_content_hash(data: bytes) -> str:
    """Streams in odd-sized reads and re-blocks, unlike the fake's slicing implementation."""
    stream, block, digests = io.BytesIO(data), bytearray(), []
    while chunk := stream.read(1_000_003):
        block += chunk
        while len(block) >= 4 * 1024 * 1024:
            digests.append(hashlib.sha256(bytes(block[: 4 * 1024 * 1024])).digest())
            del block[: 4 * 1024 * 1024]
    if block:
        digests.append(hashlib.sha256(bytes(block)).digest())
    return hashlib.sha256(b"".join(digests)).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 9 * 1024 * 1024 + 7])
def test_content_hash_matches_independent_implementation(size: int) -> None:
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    assert content_hash(data) == _independent_content_hash(data)
    if 0 < size <= 4 * 1024 * 1024:
        assert content_hash(data) == hashlib.sha256(hashlib.sha256(data).digest()).hexdigest()


def test_dropbox_list_folder_paging_and_errors(dbx: DropboxFake) -> None:
    for i in range(5):
        dbx.add_file(f"/Photos/{i}.jpg", bytes([i]) * 5)
    dbx.add_file("/Photos/sub/deep.jpg", b"deep")
    c = httpx.Client(base_url=dbx.api_url, headers=bearer(dbx.issue_token()))
    r = c.post("/2/files/list_folder", json={"path": "/photos", "limit": 2})
    body = r.json()
    entries = body["entries"]
    while body["has_more"]:
        body = c.post("/2/files/list_folder/continue", json={"cursor": body["cursor"]}).json()
        entries += body["entries"]
    assert [e["name"] for e in entries] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg", "sub"]
    f0 = entries[0]
    assert (
        f0[".tag"] == "file" and f0["path_display"] == "/Photos/0.jpg" and f0["path_lower"] == "/photos/0.jpg"
    )
    assert f0["size"] == 5 and f0["content_hash"] == content_hash(b"\0" * 5) and f0["is_downloadable"] is True
    assert {"id", "rev", "server_modified", "client_modified"} <= set(f0)
    rec = c.post("/2/files/list_folder", json={"path": "", "recursive": True}).json()
    assert "/photos/sub/deep.jpg" in [e["path_lower"] for e in rec["entries"]]
    # changes since the cursor, including a deleted entry
    dbx.delete("/Photos/1.jpg")
    delta = c.post("/2/files/list_folder/continue", json={"cursor": body["cursor"]}).json()
    assert delta["entries"] == [
        {".tag": "deleted", "name": "1.jpg", "path_lower": "/photos/1.jpg", "path_display": "/Photos/1.jpg"}
    ]
    nf = c.post("/2/files/list_folder", json={"path": "/nope"})
    assert nf.status_code == 409
    assert nf.json() == {
        "error_summary": "path/not_found/..",
        "error": {".tag": "path", "path": {".tag": "not_found"}},
    }
    root = c.post("/2/files/list_folder", json={"path": "/"})
    assert root.status_code == 400 and root.headers["content-type"].startswith("text/plain")
    form = c.post("/2/files/list_folder", data={"path": ""})
    assert form.status_code == 400 and "Content-Type" in form.text
    dbx.expire_cursors()
    reset = c.post("/2/files/list_folder/continue", json={"cursor": delta["cursor"]})
    assert reset.status_code == 409 and reset.json()["error"] == {".tag": "reset"}
    dbx.fail_next_rate_limit(retry_after=7)
    rl = c.post("/2/files/list_folder", json={"path": ""})
    assert (
        rl.status_code == 429 and rl.headers["retry-after"] == "7" and rl.json()["error"]["retry_after"] == 7
    )
    dbx.oauth.expire_access_tokens()
    exp = c.post("/2/files/list_folder", json={"path": ""})
    assert exp.status_code == 401
    assert exp.json() == {
        "error_summary": "expired_access_token/...",
        "error": {".tag": "expired_access_token"},
    }


def test_dropbox_download(dbx: DropboxFake) -> None:
    data = b"0123456789" * 100
    dbx.add_file("/Fotos/grün.jpg", data)
    tok = dbx.issue_token()
    arg = json.dumps({"path": "/Fotos/grün.jpg"})  # ensure_ascii: \u00fc
    c = httpx.Client(base_url=dbx.content_url, headers=bearer(tok))
    r = c.post("/2/files/download", headers={"Dropbox-API-Arg": arg})
    assert r.status_code == 200 and r.content == data
    result = json.loads(r.headers["dropbox-api-result"])
    assert result["content_hash"] == content_hash(data) and result["name"] == "grün.jpg"
    part = c.post("/2/files/download", headers={"Dropbox-API-Arg": arg, "Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == data[-10:]
    bad_ct = c.post(
        "/2/files/download",
        headers={"Dropbox-API-Arg": arg, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert bad_ct.status_code == 400
    nf = c.post("/2/files/download", headers={"Dropbox-API-Arg": json.dumps({"path": "/nope.jpg"})})
    assert nf.status_code == 409 and nf.json()["error_summary"].startswith("path/not_found/")
    # raw UTF-8 in the header is rejected
    conn = http.client.HTTPConnection("127.0.0.1", dbx.content.port)
    conn.putrequest("POST", "/2/files/download")
    conn.putheader("Authorization", f"Bearer {tok}")
    conn.putheader("Dropbox-API-Arg", '{"path": "/Fotos/grün.jpg"}'.encode())
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 400 and b"Dropbox-API-Arg" in resp.read()
    conn.close()
    assert dbx.violations == []


# -- Pinterest -------------------------------------------------------------------------------------------


def test_pinterest_boards_pins_media(pin: PinterestFake) -> None:
    boards = [pin.add_board(f"B{i}") for i in range(3)]
    secret = pin.add_board("Hidden", privacy="SECRET")
    section = pin.add_section(boards[0], "Sec")
    img = b"\xff\xd8\xff" + b"i" * 50
    p1 = pin.add_pin(boards[0], image=img, title="one", section_id=section)
    p2 = pin.add_pin(boards[0], images=[b"a", b"b"])
    p3 = pin.add_pin(boards[0], video_cover=b"cover")
    pin.add_pin(secret, image=b"s")
    c = httpx.Client(base_url=pin.api_url, headers=bearer(pin.issue_token()))
    seen, bookmark = [], None
    while True:
        r = c.get("/boards", params={"page_size": 2, **({"bookmark": bookmark} if bookmark else {})}).json()
        seen += [b["id"] for b in r["items"]]
        bookmark = r["bookmark"]
        if bookmark is None:
            break
    assert seen == boards  # the secret board needs boards:read_secret
    assert c.get(f"/boards/{secret}/pins").status_code == 404
    c2 = httpx.Client(
        base_url=pin.api_url,
        headers=bearer(
            pin.issue_token(["boards:read", "pins:read", "boards:read_secret", "pins:read_secret"])
        ),
    )
    assert [b["id"] for b in c2.get("/boards", params={"privacy": "SECRET"}).json()["items"]] == [secret]
    items = c.get(f"/boards/{boards[0]}/pins", params={"page_size": 250}).json()["items"]
    by_id = {p["id"]: p for p in items}
    assert [p["id"] for p in items] == [p3, p2, p1]
    media = by_id[p1]["media"]
    assert media["media_type"] == "image" and set(media["images"]) == {"150x150", "400x300", "600x", "1200x"}
    assert media["images"]["600x"] == {"url": media["images"]["600x"]["url"], "width": 600, "height": 450}
    assert httpx.get(media["images"]["1200x"]["url"]).content == img
    assert [len(i["images"]) for i in by_id[p2]["media"]["items"]] == [4, 4]
    assert httpx.get(by_id[p3]["media"]["cover_image_url"]).content == b"cover"
    sec = c.get(f"/boards/{boards[0]}/sections").json()["items"]
    assert sec == [{"id": section, "name": "Sec"}]
    assert [p["id"] for p in c.get(f"/boards/{boards[0]}/sections/{section}/pins").json()["items"]] == [p1]
    assert pin.violations == []


def test_pinterest_errors_and_violations(pin: PinterestFake) -> None:
    c = httpx.Client(base_url=pin.api_url, headers=bearer(pin.issue_token()))
    pin.fail_next_rate_limit()
    r = c.get("/boards")
    assert r.status_code == 429 and "retry-after" not in r.headers and set(r.json()) == {"code", "message"}
    assert c.get("/boards").status_code == 200
    unauth = httpx.get(pin.api_url + "/boards")
    assert unauth.status_code == 401 and unauth.json() == {"code": 2, "message": "Authentication failed."}
    assert pin.violations == []
    assert c.get("/boards", params={"page_size": 1000}).status_code == 400
    c.get("/boards", params={"limit": 10})
    c.get("/boards/abc/pins")
    c.get("/pinz")
    v = pin.violations
    assert len(v) == 4, v
    assert (
        "page_size" in v[0]
        and "'limit' is not declared" in v[1]
        and "board_id" in v[2]
        and "not found" in v[3]
    )


def test_base64_basic_helper_roundtrip() -> None:
    # sanity for the Basic header parsing used by the token endpoints
    raw = base64.b64encode(b"id:sec:ret").decode()
    assert base64.b64decode(raw).decode().partition(":") == ("id", ":", "sec:ret")
