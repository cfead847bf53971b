"""Plugins through the real entry-point machinery, with tests/plugins/pixsrc-demo-plugin installed.

That package registers three entry points in ``pixsrc.source_types``: ``demo-pattern`` (a working
type), ``broken-demo`` (its module raises ImportError) and ``local-fs`` (tries to replace a
built-in). Install it with ``pip install tests/plugins/pixsrc-demo-plugin``. With the example plugin
(``pip install ./examples/pixsrc-example-plugin``, the ``json-feed`` type) installed too, the tests
here also check that every sample of docs/plugins.md is still real.
"""

from __future__ import annotations

import json
import re
import shlex
import struct
import zlib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from support.cli import run, run_subprocess

from pixsrc import __version__, registry
from pixsrc.errors import UsageError
from pixsrc.registry import GROUP

ROOT = Path(__file__).resolve().parent.parent

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


def test_commands_that_must_go_on_do_so_past_a_source_of_the_broken_type(config_file: Path) -> None:
    """remove, auth status, auth check and show name the load failure for that source and still do
    their work (remove looks for a stored key everywhere, the type's auth being unknown)."""
    config_file.parent.mkdir(parents=True)
    config_file.write_text('version = 1\n[sources.bad]\nname = "Bad"\ntype = "broken-demo"\n'
                           '[sources.fine]\nname = "Fine"\ntype = "local-fs"\n[sources.fine.config]\npath = "/tmp"\n')
    status = run_subprocess("auth", "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["source"]: row for row in json.loads(status.stdout)}
    assert rows["bad"]["status"] == "unavailable" and "failed to load" in rows["bad"]["detail"]
    assert rows["fine"]["status"] != "unavailable"
    check = run_subprocess("auth", "check", "--json")
    assert "internal error" not in check.stderr and "failed to load" in check.stdout, check.stderr
    shown = run_subprocess("show", "bad")
    assert shown.returncode == 2 and "failed to load" in shown.stderr and "reinstall" in shown.stderr
    removed = run_subprocess("remove", "bad", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "removed 'bad'" in removed.stderr
    assert [s["id"] for s in json.loads(run_subprocess("list", "--json").stdout)] == ["fine"]


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


# -- where each type comes from: `pixsrc types` names the distribution ---------------------------------


def test_types_table_names_the_distribution_of_each_type() -> None:
    result = run("types")
    assert result.exit_code == 0
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["TYPE", "NAME", "CATEGORY", "AUTH", "ORIGIN", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines}
    for builtin in registry.BUILTINS:
        assert "pixsrc (built-in)" in rows[builtin]
    assert "pixsrc-demo-plugin 0.1.0" in rows["demo-pattern"]
    assert "pixsrc-demo-plugin" not in rows["local-fs"]  # the hijack does not take the built-in's place
    # the column starts at the same place on every row
    column = header.index("ORIGIN")
    assert rows["local-fs"][column:].startswith("pixsrc (built-in)")
    assert rows["demo-pattern"][column:].startswith("pixsrc-demo-plugin 0.1.0")


def test_types_json_has_a_stable_origin_object() -> None:
    result = run_subprocess("types", "--json")
    assert result.returncode == 0, result.stderr
    origins = {t["id"]: t["origin"] for t in json.loads(result.stdout)}
    assert origins["local-fs"] == {"builtin": True, "distribution": "pixsrc", "version": __version__}
    assert origins["demo-pattern"] == {"builtin": False, "distribution": "pixsrc-demo-plugin", "version": "0.1.0"}
    assert all(set(o) == {"builtin", "distribution", "version"} for o in origins.values())


@pytest.mark.parametrize(("type_id", "label"), [("demo-pattern", "pixsrc-demo-plugin 0.1.0"),
                                                ("local-fs", "pixsrc (built-in)")])
def test_types_type_shows_its_origin(type_id: str, label: str) -> None:
    shown = run("types", type_id)
    assert shown.exit_code == 0
    assert f"\n  origin: {label}\n" in shown.stdout
    data = json.loads(run("types", type_id, "--json").stdout)
    assert data[0]["origin"]["builtin"] is (type_id == "local-fs")


def test_origin_of_an_entry_point_without_a_distribution() -> None:
    from importlib.metadata import EntryPoint

    made_by_hand = EntryPoint("hand-made", "somewhere:TYPE", GROUP)
    origin = registry._plugin_origin(made_by_hand)
    assert origin == registry.Origin(False, None, None)
    assert origin.label == "unknown distribution"
    assert registry._origin(made_by_hand) == "plugin somewhere:TYPE"


def test_origin_of_an_unknown_type_suggests_one() -> None:
    with pytest.raises(UsageError, match="unknown source type 'demo-patern'") as caught:
        registry.origin("demo-patern")
    assert caught.value.hint == "did you mean 'demo-pattern'? (see `pixsrc types`)"


# -- docs/plugins.md: every code sample is real ---------------------------------------------------------

DOC = ROOT / "docs" / "plugins.md"
_BLOCK = re.compile(r"(?:<!-- (from|output): (.+?) -->\n)?```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def doc_blocks() -> list[tuple[str | None, str, str, str]]:
    """(marker, what it names, language, text) of every fenced block of docs/plugins.md."""
    return [(m[1], m[2], m[3], m[4]) for m in _BLOCK.finditer(DOC.read_text())]


def test_every_code_sample_of_the_plugin_guide_is_in_the_file_it_names() -> None:
    blocks = doc_blocks()
    code = [b for b in blocks if b[2] in ("python", "toml")]
    assert len(code) >= 10
    for marker, where, language, text in code:
        assert marker == "from", f"a {language} sample without <!-- from: FILE -->:\n{text}"
        assert text in (ROOT / where).read_text(), f"not (or no longer) in {where}:\n{text}"
    assert {b[2] for b in blocks} <= {"python", "toml", "console", "text"}


@pytest.mark.skipif("json-feed" not in _NAMES,
                    reason="the example plugin is not installed: pip install ./examples/pixsrc-example-plugin")
def test_every_output_sample_of_the_plugin_guide_is_what_pixsrc_prints() -> None:
    outputs = [(where, text) for marker, where, _, text in doc_blocks() if marker == "output"]
    assert outputs
    for command, text in outputs:
        argv = shlex.split(command)
        assert argv[0] == "pixsrc"
        result = run(*argv[1:])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == text


@pytest.mark.skipif("json-feed" not in _NAMES,
                    reason="the example plugin is not installed: pip install ./examples/pixsrc-example-plugin")
def test_the_example_plugin_is_listed_with_its_distribution() -> None:
    result = run_subprocess("types", "--json")
    found = {t["id"]: t for t in json.loads(result.stdout)}["json-feed"]
    assert found["origin"] == {"builtin": False, "distribution": "pixsrc-json-feed", "version": "0.1.0"}
    assert found["auth"] == {"kind": "api-key", "provider": None, "scopes": [], "required": False}
    assert [f["key"] for f in found["fields"]] == ["url", "max_pages", "attachments", "banner_images"]
