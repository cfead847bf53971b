"""Globs mean the same on the command line and in the config (rclone's syntax), and a run that ends
up with nothing says so: an empty listing, filters that leave 0 of N, a gallery URL that is a file.

Everything through the real CLI, with local-fs sources in tmp folders and the gallery server."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w
from support.cli import run
from support.gallery_server import GalleryServer

FILES = {
    "a.jpg": b"\xff\xd8 a",
    "b.png": b"\x89PNG b",
    "c.gif": b"GIF89a c",
    "2024/x.jpg": b"\xff\xd8 x",
    "2024/summer/y.jpg": b"\xff\xd8 y",
    "2024/summer/z.png": b"\x89PNG z",
}


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def add_inbox(folder: Path, *sets: str) -> None:
    result = run("add", "local-fs", "--id", "inbox", "--name", "Inbox", "--set", f"path={folder}",
                 *(arg for item in sets for arg in ("--set", item)), "--no-input")
    assert result.exit_code == 0, result.stderr


def set_config(config_file: Path, **values: list[str]) -> None:
    """Write glob lists into the config file the way a person edits it: TOML arrays of strings."""
    data = tomllib.loads(config_file.read_text("utf-8"))
    data["sources"]["inbox"]["config"].update(values)
    config_file.write_text(tomli_w.dumps(data), "utf-8")


def listed(*args: str) -> list[str]:
    result = run("fetch", "inbox", "--list", "--json", *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return sorted(json.loads(line)["path"] for line in result.stdout.splitlines())


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    write_tree(folder, FILES)
    add_inbox(folder)
    return folder


# -- one glob syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["--include", "*.jpg,*.png"], ["2024/summer/y.jpg", "2024/summer/z.png", "2024/x.jpg", "a.jpg", "b.png"]),
    (["--include", "*.jpg, *.png"], ["2024/summer/y.jpg", "2024/summer/z.png", "2024/x.jpg", "a.jpg", "b.png"]),
    (["--include", "*.{jpg,png}"], ["2024/summer/y.jpg", "2024/summer/z.png", "2024/x.jpg", "a.jpg", "b.png"]),
    (["--include", "*.jpg", "--include", "*.gif"], ["2024/summer/y.jpg", "2024/x.jpg", "a.jpg", "c.gif"]),
    (["--include", "2024/*"], ["2024/x.jpg"]),  # `*` stays inside one folder
    (["--include", "2024/**"], ["2024/summer/y.jpg", "2024/summer/z.png", "2024/x.jpg"]),
    (["--include", "2024/summer/"], ["2024/summer/y.jpg", "2024/summer/z.png"]),
    (["--include", "**/summer/*.png"], ["2024/summer/z.png"]),
    (["--exclude", "2024/**,*.gif"], ["a.jpg", "b.png"]),
    (["--include", "{2024,2023}/**/*.{jpg,png}", "--exclude", "*.png"], ["2024/summer/y.jpg", "2024/x.jpg"]),
])
def test_cli_globs_list(inbox: Path, args: list[str], expected: list[str]) -> None:
    assert listed(*args) == expected


def test_cli_globs_fetch_what_they_list(inbox: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    result = run("fetch", "inbox", "--dest", str(dest), "--include", "2024/*,*.png")
    assert result.exit_code == 0, result.stderr
    assert files_under(dest) == ["2024/summer/z.png", "2024/x.jpg", "b.png"]
    assert "warning" not in result.stderr


@pytest.mark.parametrize("values", [
    ["*.jpg,*.png"],  # the same comma-separated value that works on the command line
    ["*.jpg", "*.png"],
    ["*.{jpg,png}"],
])
def test_config_globs_match_the_cli_ones(inbox: Path, config_file: Path, values: list[str]) -> None:
    cli = listed("--include", ",".join(values))
    set_config(config_file, include=values)
    assert listed() == cli == ["2024/summer/y.jpg", "2024/summer/z.png", "2024/x.jpg", "a.jpg", "b.png"]


def test_config_star_stays_inside_one_folder(inbox: Path, config_file: Path, tmp_path: Path) -> None:
    set_config(config_file, include=["2024/*"], exclude=[])
    assert listed() == ["2024/x.jpg"]
    set_config(config_file, include=["2024/**"], exclude=["**/summer/*.png"])
    assert listed() == ["2024/summer/y.jpg", "2024/x.jpg"]
    dest = tmp_path / "dest"
    result = run("fetch", "inbox", "--dest", str(dest))
    assert result.exit_code == 0, result.stderr
    assert files_under(dest) == ["2024/summer/y.jpg", "2024/x.jpg"]


def test_set_keeps_commas_inside_braces(inbox: Path, config_file: Path) -> None:
    # `--set include=...` splits its value by the same rule: a comma inside {...} is no separator
    result = run("edit", "inbox", "--set", "include=*.{jpg,png},*.gif")
    assert result.exit_code == 0, result.stderr
    assert listed() == sorted(FILES)


@pytest.mark.parametrize(("glob", "message"), [
    ("*.{jpg,png", "--include '*.{jpg,png': a '{' without its '}'"),
    ("{1..5000}", "--include '{1..5000}': expands to more than"),
])
def test_a_bad_glob_is_one_line_exit_2(inbox: Path, tmp_path: Path, glob: str, message: str) -> None:
    for extra in (["--list"], ["--dest", str(tmp_path / "dest")]):
        result = run("fetch", "inbox", "--include", glob, *extra)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith(f"error: {message}")
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "dest").exists()


def test_a_bad_glob_in_the_config_names_the_source(inbox: Path, config_file: Path, tmp_path: Path) -> None:
    set_config(config_file, exclude=["*.{tmp"])
    result = run("fetch", "inbox", "--dest", str(tmp_path / "dest"))
    assert result.exit_code == 2, result.stderr
    assert "error: inbox:" in result.stderr and "'*.{tmp': a '{' without its '}'" in result.stderr
    assert "internal error" not in result.stderr


# -- filters that leave nothing ---------------------------------------------------------------------


def test_cli_filter_leaving_nothing_warns(inbox: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    result = run("fetch", "inbox", "--dest", str(dest), "--include", "*.JPG")
    assert result.exit_code == 0, result.stderr
    assert "warning: inbox: --include '*.JPG' left 0 of 6 listed assets" in result.stderr
    assert "inbox: ok: 0 listed" in result.stderr
    listing = run("fetch", "inbox", "--list", "--include", "*.JPG", "--exclude", "*.png")
    assert listing.exit_code == 0 and listing.stdout == ""
    assert "warning: inbox: --include '*.JPG' --exclude '*.png' left 0 of 6 listed assets" in listing.stderr


def test_the_warning_stays_with_quiet_and_json(inbox: Path, tmp_path: Path) -> None:
    # -q keeps errors and warnings about what went wrong: a cron log must say why nothing arrived
    result = run("fetch", "inbox", "--dest", str(tmp_path / "dest"), "--exclude", "**", "-q", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == ["warning: inbox: --exclude '**' left 0 of 6 listed assets; "
                                          "'*' stays inside one folder, '**' crosses folders "
                                          "(see pixsrc fetch --help)"]
    (report,) = json.loads(result.stdout)["sources"]
    assert (report["found"], report["listed"]) == (6, 0)


def test_a_filter_that_leaves_something_does_not_warn(inbox: Path, tmp_path: Path) -> None:
    result = run("fetch", "inbox", "--dest", str(tmp_path / "dest"), "--include", "c.gif", "--json")
    assert result.exit_code == 0 and "warning" not in result.stderr
    (report,) = json.loads(result.stdout)["sources"]
    assert (report["found"], report["listed"]) == (6, 1)


def test_config_filter_leaving_nothing_says_so(inbox: Path, config_file: Path, tmp_path: Path) -> None:
    set_config(config_file, include=["*.tiff"])
    for extra in (["--list"], ["--dest", str(tmp_path / "dest")]):
        result = run("fetch", "inbox", *extra)
        assert result.exit_code == 0, result.stderr
        assert ("warning: inbox: nothing listed after the source's own include '*.tiff'; "
                "check them: pixsrc show inbox") in result.stderr


# -- silent empties -----------------------------------------------------------------------------------


def test_an_empty_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    add_inbox(tmp_path / "empty")
    message = ("warning: inbox: nothing listed at the source (is it empty, or is its path or URL wrong?); "
               "check its settings: pixsrc show inbox")
    for extra in (["--list"], ["--dest", str(tmp_path / "dest")], ["--dest", str(tmp_path / "dest"), "-q"]):
        result = run("fetch", "inbox", *extra)
        assert result.exit_code == 0, result.stderr
        assert message in result.stderr.splitlines(), result.stderr
    # a filter on an empty listing blames the listing, not the filter
    result = run("fetch", "inbox", "--list", "--include", "*.jpg")
    assert result.stderr.splitlines() == [message]


def test_a_gallery_url_that_points_at_a_file_says_so(tmp_path: Path) -> None:
    with GalleryServer(tmp_path / "gallery") as gallery:
        gallery.write("photo.png", b"\x89PNG\r\n\x1a\n a picture, not a listing")
        gallery.write("other.jpg", b"\xff\xd8 another")
        url = gallery.url + "photo.png"
        added = run("add", "remote-gallery", "--id", "pics", "--name", "Pics", "--set", f"url={url}",
                    "--no-input")
        assert added.exit_code == 0, added.stderr
        expected = (f"warning: pics: {url} is a file (image/png), not a gallery folder or JSON index; "
                    f"use its folder: pixsrc edit pics --set url={gallery.url}")
        for index in ("auto", "html", "json"):
            assert run("edit", "pics", "--set", f"index={index}").exit_code == 0
            for extra in (["--list"], ["--dest", str(tmp_path / "dest")]):
                result = run("fetch", "pics", *extra)
                assert result.exit_code == 0, (index, result.stderr)
                assert expected in result.stderr.splitlines(), (index, result.stderr)
                assert "nothing listed at the source" in result.stderr
        assert not (tmp_path / "dest").exists() or files_under(tmp_path / "dest") == []
        # the folder URL it suggests is the gallery, and it lists both files
        assert run("edit", "pics", "--set", f"url={gallery.url}", "--set", "index=auto").exit_code == 0
        result = run("fetch", "pics", "--list")
        assert result.exit_code == 0 and "warning" not in result.stderr
        assert sorted(line.split("\t")[2] for line in result.stdout.splitlines()) == ["other.jpg", "photo.png"]
