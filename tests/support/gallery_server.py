"""A real HTTP/1.1 gallery server on 127.0.0.1 for the remote-gallery tests.

It serves the files under ``root`` below the URL prefix ``/gallery/`` and presents them as

* a JSON index at ``/gallery/index.json`` (the format documented in
  ``pixsrc.sources.remote_gallery``), paged with ``next`` links when ``page_size`` is set;
* HTML folder listings at ``/gallery/`` and ``/gallery/<folder>/`` in one of three styles:
  ``nginx`` (autoindex ``<pre>``), ``apache`` (autoindex table with sorting links) and
  ``python`` (``python -m http.server``).

Files answer GET and HEAD with a strong content-derived ETag (unless ``etags`` is off: then
Last-Modified is the only validator, as with ``python -m http.server``), Last-Modified and
Content-Length; they answer 304 to a conditional GET whose ``If-None-Match`` (or, without it,
``If-Modified-Since``) still matches, and honour ``Range: bytes=N-`` (206 + Content-Range) unless
an ``If-Range`` validator no longer matches. Faults are injected per path (relative to the gallery
root): truncating a body once, a 206 with the wrong Content-Range once, answering 429/503 once, a
permanent status, and a required Bearer key. Every request is recorded in ``requests`` (method,
raw path, headers).
"""

from __future__ import annotations

import hashlib
import html
import json
import mimetypes
import posixpath
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

PREFIX = "/gallery/"
STYLES = ("nginx", "apache", "python")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # as sent, query string included
    headers: dict[str, str]  # lower-case names

    @property
    def rel(self) -> str | None:
        """The decoded path relative to the gallery, or None for a path outside it."""
        path = unquote(urlsplit(self.path).path)
        if "/../" in path + "/" or "/./" in path + "/":  # dot segments, as a server would resolve them
            path = posixpath.normpath(path) + ("/" if path.endswith("/") else "")
        return path[len(PREFIX):] if path.startswith(PREFIX) else None


@dataclass
class _Blob:
    data: bytes
    mtime: float


@dataclass
class GalleryServer:
    root: Path
    html_style: str = "nginx"
    page_size: int | None = None
    requests: list[Request] = field(default_factory=list)
    extra_links: list[str] = field(default_factory=list)  # hrefs added to the gallery's top listing
    index_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel -> fields to replace
    index_urls: bool = True  # give each index entry a "url" (else clients derive it from "path")
    bearer: str | None = None
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location (301)
    etags: bool = True  # False: Last-Modified is the only validator
    raw_index: bytes | None = None  # served as index.json instead of the generated document
    listing_barrier: threading.Barrier | None = None  # sub-folder listings wait here (concurrency tests)
    answers: list[tuple[Request, int]] = field(default_factory=list)  # each request and the status it got

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._once: dict[str, list[Any]] = {}
        self._status: dict[str, int] = {}
        self._virtual: list[tuple[str, _Blob]] = []  # (index path, content) served at _blob/<n>
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.listings_in_flight = 0
        self.max_listings_in_flight = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> GalleryServer:
        gallery = self

        class Handler(_Handler):
            server_gallery = gallery

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="gallery-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> GalleryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        assert self._httpd is not None
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def origin(self) -> str:
        return f"http://{self.host}"

    @property
    def url(self) -> str:
        """The gallery's folder URL (HTML listings)."""
        return self.origin + PREFIX

    @property
    def index_url(self) -> str:
        return self.url + "index.json"

    # -- content helpers ---------------------------------------------------------------------

    def write(self, rel: str, data: bytes, mtime: float | None = None) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtime is not None:
            import os

            os.utime(path, (mtime, mtime))
        return path

    def add_entry(self, index_path: str, data: bytes, **fields: Any) -> str:
        """An extra JSON-index entry whose ``path`` is anything (hostile names); returns its rel URL."""
        with self._lock:
            self._virtual.append((index_path, _Blob(data, 1_700_000_000.0)))
            rel = f"_blob/{len(self._virtual) - 1}"
        if fields:
            self.index_overrides[rel] = fields
        return rel

    # -- faults --------------------------------------------------------------------------------

    def truncate_once(self, rel: str) -> None:
        """The next full GET of ``rel`` sends the whole Content-Length but only half the body."""
        self._once.setdefault(rel, []).append("truncate")

    def wrong_range_once(self, rel: str) -> None:
        """The next ranged GET of ``rel`` (``bytes=N-``, N > 0) answers 206 with the bytes from N // 2 and a
        Content-Range that says so: not the range that was asked for."""
        self._once.setdefault(rel, []).append("wrong-range")

    def fail_once(self, rel: str, status: int) -> None:
        """The next GET of ``rel`` answers ``status`` (429 comes with ``Retry-After: 0``)."""
        self._once.setdefault(rel, []).append(status)

    def set_status(self, rel: str, status: int | None) -> None:
        """Every request for ``rel`` answers ``status`` (None: back to normal)."""
        if status is None:
            self._status.pop(rel, None)
        else:
            self._status[rel] = status

    def replace_after_head(self, rel: str, data: bytes) -> None:
        """Once the next HEAD of ``rel`` is answered, its content becomes ``data`` (a race, made exact)."""
        self._once.setdefault(rel, []).append(("replace", data))  # type: ignore[arg-type]

    def require_bearer(self, key: str | None) -> None:
        self.bearer = key

    def _take_fault(self, rel: str, kinds: tuple[type, ...]) -> Any:
        with self._lock:
            queue = self._once.get(rel)
            if queue and isinstance(queue[0], kinds):
                return queue.pop(0)
        return None

    # -- request log helpers -------------------------------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.answers.clear()

    def file_gets(self) -> list[Request]:
        """GET requests for file content (not listings, not the index)."""
        return [r for r in list(self.requests)
                if r.method == "GET" and r.rel is not None and self._is_content(r.rel)]

    def status_of(self, request: Request) -> int | None:
        """The status the server answered ``request`` with."""
        with self._lock:
            return next((status for answered, status in self.answers if answered is request), None)

    def heads(self) -> list[Request]:
        return [r for r in list(self.requests) if r.method == "HEAD"]

    def gets_of(self, rel: str) -> list[Request]:
        return [r for r in list(self.requests) if r.method == "GET" and r.rel == rel]

    def _is_content(self, rel: str) -> bool:
        if rel.startswith("_blob/"):
            return True
        return rel not in ("", "index.json") and not rel.endswith("/")

    # -- resolving -----------------------------------------------------------------------------

    def resolve(self, rel: str) -> tuple[str, Path | _Blob] | None:
        """("file"|"dir"|"blob", target) for a decoded rel path, None when absent or outside."""
        if rel.startswith("_blob/"):
            try:
                return "blob", self._virtual[int(rel[len("_blob/"):])][1]
            except (ValueError, IndexError):
                return None
        root = self.root.resolve()
        try:
            target = (root / rel).resolve() if rel else root
            if target != root and root not in target.parents:
                return None
            if target.is_dir():
                return "dir", target
            if target.is_file():
                return "file", target
        except OSError:  # a name too long for the file system: not there
            return None
        return None

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    # -- documents -----------------------------------------------------------------------------

    def index_entries(self) -> list[dict[str, Any]]:
        entries = []
        for rel in self.files():
            data = (self.root / rel).read_bytes()
            mtime = (self.root / rel).stat().st_mtime
            entry = {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                     "modified": _rfc3339(mtime)}
            if self.index_urls:
                entry["url"] = quote(rel)
            entry.update(self.index_overrides.get(rel, {}))
            entries.append(entry)
        for number, (index_path, blob) in enumerate(list(self._virtual)):
            rel = f"_blob/{number}"
            entry = {"path": index_path, "url": rel, "size": len(blob.data),
                     "sha256": hashlib.sha256(blob.data).hexdigest(), "modified": _rfc3339(blob.mtime)}
            entry.update(self.index_overrides.get(rel, {}))
            entries.append(entry)
        return entries

    def index_document(self, page: int) -> dict[str, Any]:
        entries = self.index_entries()
        if not self.page_size:
            return {"assets": entries}
        start = (page - 1) * self.page_size
        document: dict[str, Any] = {"assets": entries[start:start + self.page_size]}
        if start + self.page_size < len(entries):
            document["next"] = f"index.json?page={page + 1}"
        return document

    def listing(self, folder: Path, url_path: str) -> str:
        rows = []
        for child in sorted(folder.iterdir(), key=lambda p: p.name):
            st = child.stat()
            name = child.name + ("/" if child.is_dir() else "")
            rows.append((name, st.st_mtime, None if child.is_dir() else st.st_size))
        return {"nginx": _nginx, "apache": _apache, "python": _python}[self.html_style](
            url_path, rows, self.extra_links if url_path == PREFIX else [])


def _rfc3339(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).isoformat().replace("+00:00", "Z")


def _nginx(url_path: str, rows: list[tuple[str, float, int | None]], extra: list[str]) -> str:
    lines = ['<a href="../">../</a>']
    for name, mtime, size in rows:
        shown = name if len(name) <= 50 else name[:47] + "..&gt;"
        stamp = datetime.fromtimestamp(mtime, UTC).strftime("%d-%b-%Y %H:%M")
        lines.append(f'<a href="{quote(name)}">{html.escape(shown)}</a>{" " * max(1, 51 - len(shown))}'
                     f'{stamp} {"-" if size is None else size:>19}')
    lines += [f'<a href="{html.escape(href)}">{html.escape(href)}</a>' for href in extra]
    title = html.escape(url_path)
    return (f"<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n"
            f"<h1>Index of {title}</h1><hr><pre>" + "\r\n".join(lines)
            + "\r\n</pre><hr></body>\r\n</html>\r\n")


def _apache(url_path: str, rows: list[tuple[str, float, int | None]], extra: list[str]) -> str:
    parent = url_path.rstrip("/").rsplit("/", 1)[0] + "/"
    title = html.escape(url_path.rstrip("/") or "/")
    out = [
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">',
        "<html>", " <head>", f"  <title>Index of {title}</title>", " </head>", " <body>",
        f"<h1>Index of {title}</h1>", "  <table>",
        '   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">Name</a>'
        '</th><th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th>'
        '<th><a href="?C=D;O=A">Description</a></th></tr>',
        '   <tr><th colspan="5"><hr></th></tr>',
        f'<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="{parent}">'
        'Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>',
    ]
    for name, mtime, size in rows:
        icon = "/icons/folder.gif" if size is None else "/icons/image2.gif"
        stamp = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M")
        out.append(f'<tr><td valign="top"><img src="{icon}" alt="[   ]"></td><td><a href="{quote(name)}">'
                   f'{html.escape(name)}</a></td><td align="right">{stamp}  </td>'
                   f'<td align="right">{"  - " if size is None else _human(size)}</td><td>&nbsp;</td></tr>')
    for href in extra:
        out.append(f'<tr><td></td><td><a href="{html.escape(href)}">{html.escape(href)}</a></td></tr>')
    out += ['   <tr><th colspan="5"><hr></th></tr>', "</table>",
            "<address>Apache/2.4.58 (Debian) Server at 127.0.0.1 Port 80</address>", "</body></html>", ""]
    return "\n".join(out)


def _human(size: int) -> str:
    return f"{size}" if size < 1024 else f"{size / 1024:.0f}K"


def _python(url_path: str, rows: list[tuple[str, float, int | None]], extra: list[str]) -> str:
    title = html.escape(url_path, quote=False)
    out = ["<!DOCTYPE HTML>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>Directory listing for {title}</title>", "</head>", "<body>",
           f"<h1>Directory listing for {title}</h1>", "<hr>", "<ul>"]
    for name, _mtime, _size in rows:
        href = quote(name, errors="surrogatepass")
        out.append(f'<li><a href="{href}">{html.escape(name, quote=False)}</a></li>')
    for href in extra:
        out.append(f'<li><a href="{html.escape(href)}">{html.escape(href)}</a></li>')
    out += ["</ul>", "<hr>", "</body>", "</html>", ""]
    return "\n".join(out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 10  # an idle keep-alive connection is dropped after this
    server_gallery: GalleryServer
    _request: Request

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        gallery = self.server_gallery
        with gallery._lock:
            gallery.answers.append((self._request, code))
        super().send_response(code, message)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    # -- plumbing --------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              head: bool = False, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        gallery = self.server_gallery
        request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        self._request = request
        gallery.record(request)
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if gallery.bearer is not None and self.headers.get("Authorization") != f"Bearer {gallery.bearer}":
            self._send(401, b"unauthorized\n", {"WWW-Authenticate": 'Bearer realm="gallery"'}, head)
            return
        if parts.path in gallery.redirects:
            self._send(301, b"", {"Location": gallery.redirects[parts.path]}, head)
            return
        if not path.startswith(PREFIX):
            if path + "/" == PREFIX:
                self._send(301, b"", {"Location": PREFIX}, head)
            else:
                self._send(200 if path == "/" else 404, b"not the gallery\n", head=head)
            return
        rel = path[len(PREFIX):]
        if rel in gallery._status:
            self._send(gallery._status[rel], b"status\n", head=head)
            return
        if not head:
            fault = gallery._take_fault(rel, (int,))
            if fault is not None:
                extra = {"Retry-After": "0"} if fault == 429 else {}
                self._send(int(fault), b"try again\n", extra)
                return
        if rel == "index.json":
            if gallery.raw_index is not None:
                self._send(200, gallery.raw_index, head=head, content_type="application/json")
                return
            page = int(parse_qs(parts.query).get("page", ["1"])[0])
            body = json.dumps(gallery.index_document(page), ensure_ascii=False).encode()
            self._send(200, body, head=head, content_type="application/json")
            return
        found = gallery.resolve(rel.rstrip("/"))
        if found is None:
            self._send(404, b"not found\n", head=head)
            return
        kind, target = found
        if kind == "dir":
            if rel and not rel.endswith("/"):
                self._send(301, b"", {"Location": quote(path + "/")}, head)
                return
            assert isinstance(target, Path)
            body = gallery.listing(target, path).encode("utf-8", "surrogateescape")
            if rel and gallery.listing_barrier is not None:
                self._meet(gallery.listing_barrier)
            self._send(200, body, head=head, content_type="text/html; charset=utf-8")
            return
        if isinstance(target, Path):
            data, mtime = target.read_bytes(), target.stat().st_mtime
        else:
            data, mtime = target.data, target.mtime
        # taken before answering: once the client has the answer, the test may queue the next fault
        replacement = gallery._take_fault(rel, (tuple,)) if head else None
        self._file(rel, data, mtime, head)
        if replacement is not None:
            gallery.write(rel, replacement[1])

    def _meet(self, barrier: threading.Barrier) -> None:
        """Count this listing as in flight while it waits for its peers (a broken barrier: no peer came)."""
        gallery = self.server_gallery
        with gallery._lock:
            gallery.listings_in_flight += 1
            gallery.max_listings_in_flight = max(gallery.max_listings_in_flight, gallery.listings_in_flight)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        finally:
            with gallery._lock:
                gallery.listings_in_flight -= 1

    def _take(self, rel: str, name: str) -> bool:
        """Consume the one-shot fault ``name`` of ``rel`` if it is the next one queued."""
        gallery = self.server_gallery
        with gallery._lock:
            queue = gallery._once.get(rel)
            if queue and queue[0] == name:
                queue.pop(0)
                return True
        return False

    def _not_modified(self, etag: str | None, mtime: float) -> bool:
        """RFC 9110 section 13.1.2/13.1.3: If-None-Match wins; If-Modified-Since only without it."""
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
            return etag is not None and (etag in tags or "*" in tags)
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is None:
            return False
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since

    def _file(self, rel: str, data: bytes, mtime: float, head: bool) -> None:
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        last_modified = formatdate(mtime, usegmt=True)
        headers = {"Last-Modified": last_modified, "Accept-Ranges": "bytes"}
        if self.server_gallery.etags:
            headers["ETag"] = etag
        content_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        if self._not_modified(etag if self.server_gallery.etags else None, mtime):
            self.send_response(304)  # no body and no Content-Length (RFC 9110 section 15.4.5)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            return
        start = 0
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        validators = (etag, last_modified) if self.server_gallery.etags else (last_modified,)
        if range_header and (if_range is None or if_range in validators):
            spec = range_header.strip()
            if spec.startswith("bytes=") and "," not in spec:
                first, _, last = spec[len("bytes="):].partition("-")
                if first.isdigit() and (last == "" or last.isdigit()):
                    start = int(first)
                    end = min(int(last), len(data) - 1) if last else len(data) - 1
                    if start >= len(data):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
                        return
                    if start and not head and self._take(rel, "wrong-range"):
                        start //= 2
                    body = data[start:end + 1]
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    self._send(206, body, headers, head, content_type)
                    return
        if not head and self._take(rel, "truncate"):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(200, data, headers, head, content_type)
