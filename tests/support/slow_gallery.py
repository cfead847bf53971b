"""A JSON-index gallery on 127.0.0.1 that is slow on purpose, so a Ctrl-C or SIGTERM lands mid-download."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlowGallery:
    """A JSON-index gallery; while ``slow`` is set, every file but the first trickles out slowly
    (16 KB per 10 ms), so an interrupt lands mid-download. Honours ``Range: bytes=N-``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.slow = True
        self.ranges: list[str] = []
        gallery = self
        first = next(iter(files))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client hung up
                    self._get()

            def _get(self) -> None:
                if self.path == "/":
                    body = json.dumps(
                        [
                            {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                            for name, data in gallery.files.items()
                        ]
                    ).encode()
                    self._head(200, len(body), "application/json")
                    self.wfile.write(body)
                    return
                name = self.path.lstrip("/")
                data = gallery.files.get(name)
                if data is None:
                    self._head(404, 0, "text/plain")
                    return
                start = 0
                if (wanted := self.headers.get("Range", "")).startswith("bytes="):
                    gallery.ranges.append(f"{name} {wanted}")
                    start = int(wanted[6:].split("-")[0])
                if start:
                    self._head(
                        206,
                        len(data) - start,
                        "image/png",
                        {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                    )
                else:
                    self._head(200, len(data), "image/png")
                body = data[start:]
                if not gallery.slow or name == first:
                    self.wfile.write(body)
                    return
                for offset in range(0, len(body), 16 * 1024):
                    self.wfile.write(body[offset : offset + 16 * 1024])
                    self.wfile.flush()
                    time.sleep(0.01)  # a rate limit, not synchronisation

            def _head(self, status: int, length: int, kind: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(length))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
