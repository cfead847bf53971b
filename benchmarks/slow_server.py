#!/usr/bin/env python3
"""An HTTP/1.1 file server on 127.0.0.1 that takes --delay seconds to answer every request.

    python benchmarks/slow_server.py --port 8082 --root DIR --delay 0.04

It stands for a slow application server (a gallery behind PHP, an object store's gateway): every
GET and HEAD waits `delay` before its answer, on its own thread per connection (the standard
library's ThreadingHTTPServer), so 8 connections give 8 answers per `delay` and requests pipelined
on one connection wait one after another. Folders are answered with nginx-style autoindex HTML;
files with Content-Length, Last-Modified and an nginx-style ETag, and 304 for a matching
If-None-Match / If-Modified-Since. Range is ignored (a 200 with the whole file, as RFC 9110
allows): the benchmarks never resume. Runs until SIGTERM/SIGINT.

`GET /__stats__` (answered at once) returns what clients did since the last `GET /__stats__?reset`:
requests per method, connections, and the most requests in progress at once, as JSON.
"""

from __future__ import annotations

import argparse
import email.utils
import html
import http.server
import json
import mimetypes
import os
import posixpath
import signal
import threading
import time
import urllib.parse
from pathlib import Path
from types import FrameType


class Stats:
    """What clients did: shared by the handler threads, so every change is under the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.methods: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def begin(self, method: str) -> None:
        with self.lock:
            self.methods[method] = self.methods.get(method, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, status: int) -> None:
        with self.lock:
            self.in_flight -= 1
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    def connected(self) -> None:
        with self.lock:
            self.connections += 1

    def report(self, reset: bool) -> bytes:
        with self.lock:
            data = json.dumps({"requests": self.methods, "statuses": self.statuses,
                               "connections": self.connections,
                               "max_in_flight": self.max_in_flight}).encode()
            if reset:
                self.reset()
        return data


STATS = Stats()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "slow-server"
    root: Path
    delay: float

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per request would cost more than the request

    counted = False  # this connection (one handler per connection) in STATS.connections yet?
    status = 0

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        if self.path.startswith("/__stats__"):
            self._send(200, STATS.report(reset="reset" in self.path), "application/json", True)
            return
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if not self.counted:
            self.counted = True
            STATS.connected()
        STATS.begin(self.command)
        try:
            time.sleep(self.delay)
            self._answer_now(body)
        finally:
            STATS.end(self.status)

    def _answer_now(self, body: bool) -> None:
        path = self._local_path()
        if path is None or not path.exists():
            self._send(404, b"not found\n", "text/plain", body)
        elif path.is_dir():
            if not self.path.split("?", 1)[0].endswith("/"):
                self.send_response(301)
                self.send_header("Location", self.path.split("?", 1)[0] + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send(200, self._listing(path), "text/html; charset=utf-8", body)
        else:
            self._file(path, body)

    def _local_path(self) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        rel = posixpath.normpath(rel).lstrip("/")
        if rel.startswith(".."):
            return None
        return self.root / rel if rel not in ("", ".") else self.root

    def _listing(self, folder: Path) -> bytes:
        title = html.escape(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        lines = [f"<html>\n<head><title>Index of {title}</title></head>\n<body>\n<h1>Index of {title}</h1>"
                 '<hr><pre><a href="../">../</a>']
        for entry in sorted(os.scandir(folder), key=lambda e: (not e.is_dir(), e.name)):
            stat = entry.stat()
            name = entry.name + ("/" if entry.is_dir() else "")
            when = time.strftime("%d-%b-%Y %H:%M", time.gmtime(stat.st_mtime))
            size = "-" if entry.is_dir() else str(stat.st_size)
            lines.append(f'<a href="{urllib.parse.quote(name)}">{html.escape(name)}</a>'
                         f"{' ' * max(1, 51 - len(name))}{when} {size:>19}")
        lines.append("</pre><hr></body>\n</html>\n")
        return "\n".join(lines).encode()

    def _file(self, path: Path, body: bool) -> None:
        stat = path.stat()
        etag = f'"{int(stat.st_mtime):x}-{stat.st_size:x}"'
        modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        unchanged = (self.headers.get("If-None-Match") == etag if "If-None-Match" in self.headers
                     else self.headers.get("If-Modified-Since") == modified)
        self.send_response(304 if unchanged else 200)
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", modified)
        self.send_header("Accept-Ranges", "none")
        if unchanged:
            self.end_headers()
            return
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(stat.st_size))
        self.end_headers()
        if body:
            self.wfile.write(path.read_bytes())

    def _send(self, status: int, data: bytes, media_type: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen() backlog: 16 clients connecting at once must not wait for a retry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    parser.add_argument("--root", required=True, help="the folder to serve")
    parser.add_argument("--delay", type=float, default=0.04, help="seconds before every answer")
    args = parser.parse_args()
    Handler.root = Path(args.root).resolve()
    Handler.delay = args.delay
    server = Server(("127.0.0.1", args.port), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever, which runs on this (main) thread: call it from another.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
