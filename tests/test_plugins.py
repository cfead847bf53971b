"""Plugins through the real entry-point machinery, with tests/plugins/pixsrc-demo-plugin installed.

That package registers three entry points in ``pixsrc.source_types``: ``demo-pattern`` (a working
type), ``broken-demo`` (its module raises ImportError) and ``local-fs`` (tries to replace a
built-in). Install it with ``pip install -e tests/plugins/pixsrc-demo-plugin``.
"""

from __future__ import annotations

import json
import struct
import zlib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from support.cli import run, run_subprocess

from pixsrc.registry import GROUP

_NAMES = {ep.name for ep in entry_points(group=GROUP)}
pytestmark = pytest.mark.skipif(
    not {"demo-pattern", "broken-demo"} <= _NAMES,
    reason="pixsrc-demo-plugin is not installed: pip install -e tests/plugins/pixsrc-demo-plugin",
)


def expected_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """Written from the PNG spec here, independently of the plugin's own encoder."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    pixels = (b"\x00" + bytes(rgb) * width) * height
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(pixels, 9))
            + chunk(b"IEND", b""))


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines), checking the signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kind == b"IEND"
    return width, height, zlib.decompress(idat)


def test_types_json_includes_the_plugin_type_and_its_fields() -> None:
    result = run_subprocess("types", "--json")
    assert result.returncode == 0, result.stderr
    types = {t["id"]: t for t in json.loads(result.stdout)}
    assert {"local-fs", "remote-gallery", "demo-pattern"} <= set(types)
    assert "broken-demo" not in types
    demo = types["demo-pattern"]
    assert (demo["category"], demo["auth"]["kind"]) == ("web", "none")
    fields = {f["key"]: f for f in demo["fields"]}
    assert set(fields) == {"prefix", "count", "color"}
    assert fields["count"]["type"] == "integer" and fields["count"]["default"] == 3
    assert fields["color"]["type"] == "select" and fields["color"]["options"] == ["red", "green", "blue"]
    assert fields["prefix"]["type"] == "text" and fields["prefix"]["required"] is True
    # the hijack is ignored: local-fs is still the built-in
    assert types["local-fs"]["name"] == "Local folder"


def test_types_reports_plugin_problems_on_stderr_and_exits_0() -> None:
    result = run_subprocess("types")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()]
    assert listed.count("local-fs") == 1
    assert {"local-fs", "remote-gallery", "demo-pattern"} <= set(listed)
    assert "broken-demo" not in result.stdout
    problems = result.stderr.splitlines()
    broken = [line for line in problems if "'broken-demo'" in line]
    assert broken and "ImportError" in broken[0] and "pixsrc-demo-plugin" in broken[0]
    assert "broken on purpose" in broken[0]
    assert len(broken) == 1 and broken[0].count("'broken-demo'") == 1
    assert broken[0].count("pixsrc-demo-plugin 0.1.0") == 1
    hijack = [line for line in problems if "'local-fs'" in line]
    assert hijack and "built-in" in hijack[0] and "pixsrc-demo-plugin" in hijack[0]
    assert "Traceback" not in result.stderr


def test_hijacked_builtin_still_shows_the_builtin() -> None:
    result = run("types", "local-fs", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["name"] == "Local folder"


def test_broken_plugin_does_not_break_other_commands(tmp_path: Path) -> None:
    pictures = tmp_path / "pics"
    pictures.mkdir()
    (pictures / "a.jpg").write_bytes(b"jpeg")
    listing = run_subprocess("list")
    assert listing.returncode == 0, listing.stderr
    added = run_subprocess("add", "local-fs", "--name", "Inbox", "--set", f"path={pictures}", "--no-input")
    assert added.returncode == 0, added.stderr
    assert "Traceback" not in added.stderr and "broken-demo" not in added.stderr
    fetched = run_subprocess("fetch", "inbox", "--dest", str(tmp_path / "out"), "-q")
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out" / "a.jpg").read_bytes() == b"jpeg"
    listing = run_subprocess("list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [s["id"] for s in json.loads(listing.stdout)] == ["inbox"]


def test_a_source_of_the_broken_type_fails_cleanly(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text('version = 1\n[sources.bad]\nname = "Bad"\ntype = "broken-demo"\n')
    listing = run_subprocess("list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)[0]["available"] is True  # installed, just broken
    fetched = run_subprocess("fetch", "bad", "--dest", str(config_file.parent / "out"))
    assert fetched.returncode == 2
    assert "broken-demo" in fetched.stderr and "failed to load" in fetched.stderr
    assert "Traceback" not in fetched.stderr


def test_add_rejects_a_choice_outside_the_select() -> None:
    result = run("add", "demo-pattern", "--set", "prefix=x", "--set", "color=purple", "--no-input")
    assert result.exit_code == 2
    assert "color" in result.stderr
    for choice in ("red", "green", "blue"):
        assert choice in result.stderr
    assert not run("list", "--json").stdout.strip("[]\n ")  # nothing was added


def test_add_rejects_the_plugins_own_validation() -> None:
    result = run("add", "demo-pattern", "--set", "prefix=a/b", "--no-input")
    assert result.exit_code == 2
    assert "prefix" in result.stderr and "without slashes" in result.stderr


def test_add_and_fetch_the_plugin_type(tmp_path: Path) -> None:
    added = run_subprocess("add", "demo-pattern", "--name", "Tiles", "--set", "prefix=tile",
                           "--set", "count=4", "--set", "color=blue", "--no-input")
    assert added.returncode == 0, added.stderr
    dest = tmp_path / "out"
    fetched = run_subprocess("fetch", "tiles", "--dest", str(dest), "--json", "-q")
    assert fetched.returncode == 0, fetched.stderr
    report = json.loads(fetched.stdout)["sources"][0]
    assert (report["listed"], report["downloaded"], report["failed"]) == (4, 4, 0)
    assert sorted(p.name for p in dest.iterdir()) == [f"tile-00{k}.png" for k in range(1, 5)]
    for k in range(1, 5):
        data = (dest / f"tile-00{k}.png").read_bytes()
        assert data == expected_png(k, 4, (0, 0, 255))
        width, height, raw = decode_png(data)
        assert (width, height) == (k, 4)
        assert raw == (b"\x00" + b"\x00\x00\xff" * k) * 4
    again = run_subprocess("fetch", "tiles", "--dest", str(dest), "--json", "-q")
    report = json.loads(again.stdout)["sources"][0]
    assert (report["unchanged"], report["downloaded"], report["updated"]) == (4, 0, 0)
    # a new colour is new content: every file is updated in place
    edited = run("edit", "tiles", "--set", "color=red")
    assert edited.exit_code == 0, edited.stderr
    third = run_subprocess("fetch", "tiles", "--dest", str(dest), "--json", "-q")
    assert json.loads(third.stdout)["sources"][0]["updated"] == 4
    assert (dest / "tile-003.png").read_bytes() == expected_png(3, 4, (255, 0, 0))
