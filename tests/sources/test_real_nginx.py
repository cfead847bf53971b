"""remote-gallery against a real nginx autoindex (Debian ``nginx-light``): its own listing format,
its percent-encoded links, its ETags and 304s, counted in its own access log."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from support.cli import run
from test_remote_gallery import add, fetch, tree

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="needs nginx (apt-get install nginx-light)")

FILES = {
    "a.jpg": b"\xff\xd8 one" * 100,
    "sub/b c & \u00e9.png": b"\x89PNG two" * 300,
    "sub/deeper/d.webp": b"RIFF three",
}


class Nginx:
    def __init__(self, folder: Path, local_time_zone: str | None = None) -> None:
        """``local_time_zone`` (a POSIX TZ): the listing shows that zone's time (autoindex_localtime)."""
        self.root = folder / "www"
        self.log = folder / "access.log"
        self.root.mkdir(parents=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        temp = "".join(f"{kind}_temp_path {folder / kind};" for kind in
                       ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # as root, nginx's workers would drop to nobody, who cannot read pytest's 0700 temp folders
        user = "user root;" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(
            f"{user} daemon off; worker_processes 1; pid {folder / 'nginx.pid'}; error_log {folder / 'error.log'};\n"
            "events {}\n"
            f"http {{ log_format plain '$request_method|$request_uri|$status'; access_log {self.log} plain; {temp}\n"
            f"  server {{ listen 127.0.0.1:{self.port}; root {self.root}; autoindex on; "
            f"autoindex_localtime {'on' if local_time_zone else 'off'}; }} }}\n")
        env = {**os.environ, "TZ": local_time_zone} if local_time_zone else None
        self.process = subprocess.Popen([str(NGINX), "-p", str(folder), "-c", str(folder / "nginx.conf")],
                                        stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.process.stderr.read()!r}") from None
                time.sleep(0.02)

    def write(self, rel: str, data: bytes, age: float) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (time.time() - age, time.time() - age))

    def file_requests(self) -> list[tuple[str, str, str]]:
        lines = (line.split("|") for line in self.log.read_text().splitlines())
        return [(method, uri, status) for method, uri, status in lines if not uri.endswith("/")]

    def clear(self) -> None:
        self.log.write_text("")  # nginx appends (O_APPEND): truncating starts the log afresh

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx")
    try:
        yield server
    finally:
        server.stop()


def test_real_nginx_listing_dates_make_a_re_fetch_ask_only_for_listings(nginx: Nginx, tmp_path: Path) -> None:
    for rel, data in FILES.items():
        nginx.write(rel, data, age=2 * 86400)
    nginx.write("new.jpg", b"changed a moment ago", age=0)
    add(f"http://127.0.0.1:{nginx.port}/", "index=html")
    dest = tmp_path / "dest"

    report = fetch(dest)
    assert report["downloaded"] == len(FILES) + 1
    assert tree(dest) == {**FILES, "new.jpg": b"changed a moment ago"}

    nginx.clear()
    again = fetch(dest)
    assert again["unchanged"] == len(FILES) + 1
    assert nginx.file_requests() == [("GET", "/new.jpg", "304")]  # only the file too new to trust its date

    nginx.write("sub/b c & \u00e9.png", b"edited", age=86400)
    nginx.clear()
    changed = fetch(dest)
    assert changed["updated"] == 1
    assert sorted(nginx.file_requests()) == [("GET", "/new.jpg", "304"), ("GET", quote("/sub/b c & \u00e9.png"), "200")]
    assert (dest / "sub/b c & \u00e9.png").read_bytes() == b"edited"


def test_real_nginx_recheck_asks_about_every_file(nginx: Nginx, tmp_path: Path) -> None:
    for rel, data in FILES.items():
        nginx.write(rel, data, age=2 * 86400)
    add(f"http://127.0.0.1:{nginx.port}/", "index=html", "recheck=true")
    dest = tmp_path / "dest"
    fetch(dest)
    nginx.clear()
    assert fetch(dest)["unchanged"] == len(FILES)
    assert sorted(status for _, _, status in nginx.file_requests()) == ["304"] * len(FILES)
    assert run("show", "gal", "--json").stdout.count('"recheck": true') == 1


def test_a_listing_in_local_time_west_of_utc_still_rechecks_recent_files(tmp_path: Path) -> None:
    """autoindex_localtime on, 8 hours behind UTC: a file changed 3 hours ago is listed as if 11 hours
    old. Trusting that date would miss a same-size rewrite; it is re-checked until 12 hours have passed."""
    server = Nginx(tmp_path / "nginx", local_time_zone="UTC+8")  # POSIX: 8 hours west of Greenwich
    try:
        server.write("old.jpg", b"two days old", age=2 * 86400)
        server.write("today.jpg", b"three hours old", age=3 * 3600)
        add(f"http://127.0.0.1:{server.port}/", "index=html")
        dest = tmp_path / "dest"
        fetch(dest)
        server.clear()
        assert fetch(dest)["unchanged"] == 2
        assert server.file_requests() == [("GET", "/today.jpg", "304")]
    finally:
        server.stop()
