"""What `pixsrc fetch` shows while it runs, through the real executable.

On a terminal (a pseudo-terminal driven by pexpect): a live display with the assets found while the
listing pages arrive, then files and bytes of total, speed, ETA and what is in flight; NO_COLOR and
TERM=dumb get plain lines without escape codes; a pipe gets no progress at all. ``-v`` names each
asset that changed, exactly once; ``-q`` prints nothing on success but keeps warnings.

The gallery server holds a listing page or a file until the test has seen what it waits for, so
each frame asserted on is one the display had to draw while the run was in that state (no sleeps).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import finish, run, run_subprocess
from support.cli import spawn as spawn_on_pty
from support.gallery_server import GalleryServer

pexpect = pytest.importorskip("pexpect")

FILES = 60
SIZE = 50_000  # 60 x 50 KB = 3.0 MB
PAGE = 20
LAST = "zz/last.jpg"
WAIT = 30.0  # a held answer gives up after this, so a failing test cannot hang the suite
spawn = functools.partial(spawn_on_pty, rows=40, TERM="xterm-256color")  # a terminal with colour: the live display
GAP = r"(?:\x1b\[[0-9;]*m| )+"  # between two columns of the live display: spaces and colour codes


class HeldGallery(GalleryServer):
    """Holds index page N until ``pages[N]`` is set, and ``LAST`` until ``last`` is set."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pages = {n: threading.Event() for n in range(2, FILES // PAGE + 1)}
        self.last = threading.Event()

    def release(self) -> None:
        for event in [*self.pages.values(), self.last]:
            event.set()

    def index_document(self, page: int) -> dict[str, object]:
        if page in self.pages:
            self.pages[page].wait(WAIT)
        return super().index_document(page)

    def resolve(self, rel: str):  # type: ignore[no-untyped-def]
        if rel == LAST:
            self.last.wait(WAIT)
        return super().resolve(rel)


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[HeldGallery]:
    server = HeldGallery(tmp_path / "site", page_size=PAGE)
    for n in range(FILES - 1):
        server.write(f"{n % 3}/img{n:02d}.jpg", os.urandom(SIZE))
    server.write(LAST, os.urandom(SIZE))  # sorted last: the last to be listed and fetched
    with server:
        result = run("add", "remote-gallery", "--name", "G", "--set", f"url={server.index_url}")
        assert result.exit_code == 0, result.stderr
        yield server
        server.release()


def summary_line(text: str) -> str:
    [line] = re.findall(r"g: ok: [^\r\n]*", text)  # after a live display: behind the codes that cleared it
    return line


def test_live_display_shows_found_files_bytes_speed_and_what_is_in_flight(gallery: HeldGallery,
                                                                         tmp_path: Path) -> None:
    child = spawn("fetch", "g", "--dest", str(tmp_path / "out"))
    child.expect_exact("listing: 20 found")  # page 1 arrived; page 2 is held
    gallery.pages[2].set()
    child.expect_exact("listing: 40 found")
    gallery.pages[3].set()
    # every file but the held one is done; the display says so, with bytes, speed and the file in flight
    child.expect(GAP.join([r"59/60 files", r"(\d\.\d) MB/3\.0 MB", r"(\d+(?:\.\d)?) [KMG]?B/s", r"ETA "]))
    assert float(child.match.group(1)) >= 2.9
    assert float(child.match.group(2)) > 0
    child.expect_exact(f"fetching {LAST}")
    gallery.last.set()
    out = finish(child)
    assert child.exitstatus == 0, out
    line = summary_line(out)
    assert "60 listed, 60 new" in line
    assert re.search(r"fetched 3\.0 MB in \d+\.\d s \(\d+(\.\d)? [KMG]?B/s\) -> ", line), line
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == FILES


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_plain_lines_without_escape_codes(gallery: HeldGallery, tmp_path: Path, env: dict[str, str]) -> None:
    gallery.release()
    # a line at every chance instead of every 2 s: the run is shorter than one interval
    child = spawn("fetch", "g", "--dest", str(tmp_path / "out"), PIXSRC_PROGRESS_INTERVAL="0", **env)
    out = finish(child)
    assert child.exitstatus == 0, out
    assert "\x1b" not in out
    assert "\r" not in out.replace("\r\n", "\n")  # no redrawing of a line either
    lines = out.replace("\r\n", "\n").splitlines()
    assert "g: listing: 60 found" in lines
    transfer = [line for line in lines if re.fullmatch(
        r"g: \d+/60 files, \d+(\.\d)? [KM]?B/3\.0 MB, \d+(\.\d)? [KMG]?B/s, ETA (\d+s|\d+m\d\ds|-)", line)]
    assert transfer, out
    assert "g: 60/60 files, 3.0 MB/3.0 MB" in transfer[-1]
    assert re.search(r"\(\d+(\.\d)? [KMG]?B/s\)", summary_line(out))


def test_a_pipe_gets_no_progress(gallery: HeldGallery, tmp_path: Path) -> None:
    gallery.release()
    result = run_subprocess("fetch", "g", "--dest", str(tmp_path / "out"), env={"PIXSRC_PROGRESS_INTERVAL": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [summary_line(result.stderr)]


def test_quiet_on_a_terminal_prints_nothing(gallery: HeldGallery, tmp_path: Path) -> None:
    gallery.release()
    child = spawn("-q", "fetch", "g", "--dest", str(tmp_path / "out"))
    out = finish(child)
    assert child.exitstatus == 0
    assert out == ""
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == FILES


def verbose_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not re.match(r"g: [a-z]+: \d+ listed", line)]


def test_verbose_names_every_change_once(gallery: HeldGallery, tmp_path: Path) -> None:
    gallery.release()
    out = tmp_path / "out"
    first = run("fetch", "g", "--dest", str(out), "-v")
    assert first.exit_code == 0, first.stderr
    expected = sorted(f"g: new {rel} (50.0 KB)" for rel in gallery.files())
    assert sorted(verbose_lines(first.stderr)) == expected
    assert "g: ok: 60 listed, 60 new" in first.stderr

    gallery.write("0/img00.jpg", os.urandom(SIZE + 1000))  # changed at the source
    (gallery.root / "1/img01.jpg").unlink()  # gone at the source
    gallery.write("new/fresh.jpg", b"fresh")  # new at the source
    (out / "2/img02.jpg").write_bytes(b"edited here")  # changed locally
    again = run("fetch", "g", "--dest", str(out), "-v", "--prune")
    assert again.exit_code == 0, again.stderr
    assert sorted(verbose_lines(again.stderr)) == [
        "g: new new/fresh.jpg (5 B)",
        "g: pruned 1/img01.jpg",
        "g: skipped 2/img02.jpg: changed locally since pixsrc wrote it; use --force to replace it",
        "g: updated 0/img00.jpg (51.0 KB)",
    ]

    # -q -v: the asset lines stay (the conflict too: it is still there), the summary goes;
    # unchanged assets are never named
    gallery.write("0/img03.jpg", b"third version")
    quiet = run("-q", "fetch", "g", "--dest", str(out), "-v")
    assert quiet.exit_code == 0
    assert sorted(quiet.stderr.splitlines()) == [
        "g: skipped 2/img02.jpg: changed locally since pixsrc wrote it; use --force to replace it",
        "g: updated 0/img03.jpg (13 B)",
    ]


def test_verbose_names_adopted_and_failed_files(gallery: HeldGallery, tmp_path: Path) -> None:
    gallery.release()
    out = tmp_path / "out"
    out.mkdir()
    (out / "0").mkdir()
    (out / "0/img00.jpg").write_bytes((gallery.root / "0/img00.jpg").read_bytes())  # already there, unrecorded
    gallery.set_status("1/img01.jpg", 404)
    result = run("fetch", "g", "--dest", str(out), "-v")
    assert result.exit_code == 5
    lines = verbose_lines(result.stderr)
    assert "g: adopted 0/img00.jpg (50.0 KB)" in lines
    assert "g: failed 1/img01.jpg: HTTP 404" in lines
    assert len(lines) == len(set(lines)) == FILES  # the error is not listed again after the summary


def test_quiet_keeps_warnings(gallery: HeldGallery, tmp_path: Path) -> None:
    gallery.release()
    done = run("-q", "fetch", "g", "--dest", str(tmp_path / "out"))
    assert done.exit_code == 0
    assert (done.stdout, done.stderr) == ("", "")
    nothing = run("-q", "fetch", "g", "--dest", str(tmp_path / "out"), "--include", "nomatch/*")
    assert nothing.exit_code == 0
    assert nothing.stderr.startswith("warning: g: --include 'nomatch/*' left 0 of 60 listed assets")
    assert len(nothing.stderr.splitlines()) == 1
