"""Unit tests of pixsrc.paths: sanitising remote names, unique stable local paths, glob selection."""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys
import unicodedata

import pytest

from pixsrc.errors import UsageError
from pixsrc.paths import (
    assign_paths,
    check_globs,
    glob_match,
    sanitize_component,
    sanitize_path,
    selected,
    split_globs,
    with_suffix_tag,
)


def sha8(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# -- sanitize_path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("windows", [False, True])
@pytest.mark.parametrize(("raw", "expected"), [
    ("photo.jpg", "photo.jpg"),
    ("a/b/c.jpg", "a/b/c.jpg"),
    ("../x.jpg", "x.jpg"),
    ("../../../../etc/passwd", "etc/passwd"),
    ("a/../../b.jpg", "a/b.jpg"),
    ("/abs.jpg", "abs.jpg"),
    ("//server/share/x.jpg", "server/share/x.jpg"),
    ("a//b/./c.jpg", "a/b/c.jpg"),
    ("..\\..\\win.jpg", "win.jpg"),
    ("dir\\sub\\f.jpg", "dir/sub/f.jpg"),
    ("nul\x00byte.jpg", "nul_byte.jpg"),
    ("tab\there\nnewline\x7f.jpg", "tab_here_newline_.jpg"),
    ("", "_"),
    ("..", "_"),
    ("/", "_"),
    ("./../.", "_"),
    ("caf\u0065\u0301.jpg", "caf\u00e9.jpg"),  # NFD -> NFC
])
def test_sanitize_path_common(raw: str, expected: str, windows: bool) -> None:
    assert sanitize_path(raw, windows=windows) == expected


@pytest.mark.parametrize(("raw", "posix", "windows"), [
    ("con.jpg", "con.jpg", "con_.jpg"),
    ("CON", "CON", "CON_"),
    ("Aux.tar.gz", "Aux.tar.gz", "Aux_.tar.gz"),
    ("sub/nul/x.jpg", "sub/nul/x.jpg", "sub/nul_/x.jpg"),
    ("com1.png", "com1.png", "com1_.png"),
    ("lpt9.png", "lpt9.png", "lpt9_.png"),
    ("console.jpg", "console.jpg", "console.jpg"),
    ("com10.jpg", "com10.jpg", "com10.jpg"),
    ('a<b>c:d"e|f?g*.jpg', 'a<b>c:d"e|f?g*.jpg', "a_b_c_d_e_f_g_.jpg"),
    ("trailing dot.", "trailing dot.", "trailing dot"),
    ("trailing space.jpg ", "trailing space.jpg ", "trailing space.jpg"),
    ("folder. /x.jpg", "folder. /x.jpg", "folder/x.jpg"),
    ("... /x.jpg", "... /x.jpg", "x.jpg"),
])
def test_sanitize_path_windows_vs_posix(raw: str, posix: str, windows: str) -> None:
    assert sanitize_path(raw, windows=False) == posix
    assert sanitize_path(raw, windows=True) == windows


@pytest.mark.parametrize("windows", [False, True])
def test_long_components_are_capped_with_a_stable_tag(windows: bool) -> None:
    name = "x" * 296 + ".jpg"
    capped = sanitize_path(name, windows=windows)
    assert len(capped.encode()) == 255
    assert capped.endswith(f"~{sha8(name)}.jpg")
    assert capped == sanitize_path(name, windows=windows)
    # only the long component is touched
    assert sanitize_path(f"short/{name}", windows=windows) == f"short/{capped}"


def test_long_multibyte_names_are_cut_on_character_boundaries() -> None:
    name = "\u00e9" * 200 + ".jpeg"  # 405 bytes
    capped = sanitize_component(name, windows=False)
    encoded = capped.encode("utf-8")  # would raise if a character had been cut in half
    assert len(encoded) <= 255
    assert capped.endswith(f"~{sha8(name)}.jpeg")
    assert set(capped[: -len(f"~{sha8(name)}.jpeg")]) == {"\u00e9"}


def test_long_extension_is_not_kept_whole() -> None:
    name = "a." + "b" * 300
    capped = sanitize_component(name, windows=False)
    assert len(capped.encode()) <= 255
    assert capped.endswith(f"~{sha8(name)}")


def test_distinct_long_names_stay_distinct() -> None:
    one, two = "p" * 280 + "1.jpg", "p" * 280 + "2.jpg"
    assert sanitize_component(one, False) != sanitize_component(two, False)


def test_names_at_the_limit_are_untouched() -> None:
    name = "y" * 251 + ".jpg"
    assert sanitize_component(name, False) == name


# -- assign_paths -------------------------------------------------------------------------------------


def test_unique_paths_are_kept() -> None:
    wanted = [("1", "a.jpg"), ("2", "b.jpg"), ("3", "sub/a.jpg")]
    assert assign_paths(wanted, {}) == {"1": "a.jpg", "2": "b.jpg", "3": "sub/a.jpg"}


def test_clash_smallest_id_keeps_the_name_others_get_their_id_tag() -> None:
    wanted = [("zeta", "x.jpg"), ("alpha", "x.jpg"), ("mid", "x.jpg")]
    assert assign_paths(wanted, {}) == {
        "alpha": "x.jpg", "mid": f"x~{sha8('mid')}.jpg", "zeta": f"x~{sha8('zeta')}.jpg"}


def test_clash_is_case_insensitive() -> None:
    result = assign_paths([("b", "Photo.JPG"), ("a", "photo.jpg")], {})
    assert result == {"a": "photo.jpg", "b": f"Photo~{sha8('b')}.JPG"}


def test_assignment_does_not_depend_on_listing_order() -> None:
    wanted = [("k1", "d/x.jpg"), ("k2", "d/X.jpg"), ("k3", "d/x.jpg"), ("k4", "y.png"), ("k5", "Y.PNG")]
    results = {tuple(sorted(assign_paths(order, {}).items())) for order in itertools.permutations(wanted)}
    assert len(results) == 1


def test_the_previous_holder_keeps_its_path() -> None:
    wanted = [("a", "x.jpg"), ("z", "x.jpg")]
    assert assign_paths(wanted, {"z": "x.jpg"}) == {"z": "x.jpg", "a": f"x~{sha8('a')}.jpg"}
    # the tag an asset got is the tag it gets again: a re-run is stable
    first = assign_paths(wanted, {})
    assert assign_paths(wanted, first) == first


def test_tag_clashing_with_a_real_name_is_tagged_again() -> None:
    tagged = with_suffix_tag("x.jpg", "b")
    wanted = [("a", "x.jpg"), ("b", "x.jpg"), ("c", tagged)]
    result = assign_paths(wanted, {})
    assert result["a"] == "x.jpg" and result["c"] == tagged
    assert result["b"] not in ("x.jpg", tagged)
    assert len({p.casefold() for p in result.values()}) == 3


def test_nfc_and_nfd_forms_get_two_paths() -> None:
    nfc = unicodedata.normalize("NFC", "\u00e9t\u00e9.jpg")
    nfd = unicodedata.normalize("NFD", "\u00e9t\u00e9.jpg")
    wanted = [(nfc, sanitize_path(nfc, windows=False)), (nfd, sanitize_path(nfd, windows=False))]
    result = assign_paths(wanted, {})
    assert result[nfd] == nfc  # NFD sorts first ("e" < "\u00e9")
    assert result[nfc] == f"\u00e9t\u00e9~{sha8(nfc)}.jpg"


@pytest.mark.parametrize(("path", "asset_id", "expected"), [
    ("x.jpg", "id", f"x~{sha8('id')}.jpg"),
    ("d/x.tar.gz", "id", f"d/x.tar~{sha8('id')}.gz"),
    ("noext", "id", f"noext~{sha8('id')}"),
    ("d.v/noext", "id", f"d.v/noext~{sha8('id')}"),
    (".hidden", "id", f".hidden~{sha8('id')}"),
])
def test_with_suffix_tag(path: str, asset_id: str, expected: str) -> None:
    assert with_suffix_tag(path, asset_id) == expected


def test_with_suffix_tag_keeps_long_names_within_the_limit() -> None:
    name = "n" * 251 + ".jpg"
    tagged = with_suffix_tag(name, "id")
    assert len(tagged.encode()) <= 255 and tagged.endswith(".jpg")


# -- glob selection ------------------------------------------------------------------------------------
# One syntax on the command line and in the config, as rclone's: `*` and `?` stay inside one folder,
# `**` crosses folders, `{a,b}` alternatives; no "/" matches the file name anywhere, a "/" the whole path.


@pytest.mark.parametrize(("path", "pattern", "matches"), [
    ("a.jpg", "*.jpg", True),
    ("deep/er/a.jpg", "*.jpg", True),  # no slash: the file name, anywhere
    ("a.jpeg", "*.jpg", False),
    ("a.JPG", "*.jpg", False),  # case-sensitive unless the source says otherwise (Dropbox)
    ("sub/.hidden.jpg", "*.jpg", True),  # dot files are not special, as in rclone
    ("sub/a.jpg", "sub/*", True),
    ("sub/deep/a.jpg", "sub/*", False),  # `*` stays inside one folder
    ("2024/summer/x.jpg", "2024/*", False),
    ("2024/summer/x.jpg", "2024/**", True),  # `**` crosses folders
    ("2024/x.jpg", "2024/**", True),
    ("2024/a/b/c/x.jpg", "2024/**/x.jpg", True),
    ("2024/x.jpg", "2024/**/x.jpg", True),  # `**/` also matches no folder at all
    ("x.jpg", "**/*.jpg", True),
    ("a/.git/x.jpg", "**/*.jpg", True),
    ("other/sub/a.jpg", "sub/*", False),  # a slash anchors at the root
    ("other/sub/a.jpg", "**/sub/*", True),
    ("sub/a.jpg", "/sub/*", True),  # a leading slash anchors too, which paths always are
    ("sub/a.jpg", "/a.jpg", False),  # ... also when nothing else has a slash
    ("a.jpg", "/a.jpg", True),
    ("sub/deep/a.jpg", "sub/deep", True),  # a folder named without wildcards: what is below it
    ("sub/deep/x/a.jpg", "sub/deep/", True),  # ... and with a trailing slash
    ("sub/deeper/a.jpg", "sub/deep", False),
    ("sub/deeper/a.jpg", "sub/deep/", False),
    ("sub/a.jpg", "sub", False),  # no slash: a file name, not a folder
    ("2024/05/x.png", "2024/*/x.png", True),
    ("x1.jpg", "x?.jpg", True),
    ("x/1.jpg", "x?1.jpg", False),  # `?` never matches a "/"
    ("xa.jpg", "x[0-9].jpg", False),
    ("x5.jpg", "x[0-9].jpg", True),
    ("a.png", "*.{jpg,png}", True),  # alternatives
    ("a.gif", "*.{jpg,png}", False),
    ("2024/summer/a.png", "{2023,2024}/**/*.{jpg,png}", True),
    ("a.png", "*.jpg,*.png", True),  # comma-separated, the same rule in the config and on the CLI
    ("a.png", "*.jpg, *.png", True),  # spaces around the commas are dropped
    ("b,c.jpg", "b\\,c.jpg", True),  # an escaped comma is a comma in the name
    ("b,c.jpg", "b,c.jpg", False),  # ... an unescaped one separates two patterns
])
def test_glob_match(path: str, pattern: str, matches: bool) -> None:
    assert glob_match(path, pattern) is matches


@pytest.mark.parametrize(("value", "patterns"), [
    ("*.jpg", ["*.jpg"]),
    ("*.jpg,*.png", ["*.jpg", "*.png"]),
    (" *.jpg , *.png ,", ["*.jpg", "*.png"]),
    ("*.{jpg,png},2024/**", ["*.{jpg,png}", "2024/**"]),  # a comma inside braces stays
    ("{a,{b,c}}/*,x", ["{a,{b,c}}/*", "x"]),
    ("b\\,c.jpg,d", ["b\\,c.jpg", "d"]),
    ("", []),
    (",,", []),
])
def test_split_globs(value: str, patterns: list[str]) -> None:
    assert split_globs(value) == patterns


@pytest.mark.parametrize(("value", "message"), [
    ("*.{jpg,png", "'{' without its '}'"),
    ("*.jpg}", "'}' without its '{'"),
    ("{1..5000}.jpg", "more than"),
])
def test_bad_globs_are_usage_errors(value: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        selected("a.jpg", [value], [])
    assert value in info.value.message and info.value.hint
    with pytest.raises(UsageError):
        check_globs([value], "--include")


def test_check_globs_flattens_what_the_user_typed() -> None:
    assert check_globs(["*.jpg,*.png", "*.{gif,webp}", ""], "--include") == ["*.jpg", "*.png", "*.{gif,webp}"]
    with pytest.raises(UsageError, match=r"^--exclude '\*\.\{jpg': "):
        check_globs(["*.{jpg"], "--exclude")


def test_ignore_case_for_case_insensitive_sources() -> None:
    assert selected("Trip/Beach.JPG", ["*.jpg"], [], ignore_case=True)
    assert not selected("Trip/Beach.JPG", ["*.jpg"], [])
    assert not selected("Trip/Skip.gif", [], ["TRIP/SKIP*"], ignore_case=True)
    assert selected("Trip/X.gif", [], ["trip/[a-w]*"], ignore_case=True)


def test_selected() -> None:
    assert selected("a.jpg", [], [])
    assert selected("a.jpg", ["*.jpg"], [])
    assert not selected("a.png", ["*.jpg"], [])
    assert selected("a.png", ["*.jpg", "*.png"], [])
    assert not selected("tmp/a.jpg", ["*.jpg"], ["tmp/*"])
    assert not selected("a.jpg", [], ["*.jpg"])
    assert selected("keep/a.jpg", [], ["tmp/*"])
    assert selected("a.jpg", [""], [" , "])  # patterns that split to nothing filter nothing
    # generators are fine too (they are read once per call)
    assert selected("a.jpg", (p for p in ["*.jpg"]), (p for p in ["*.png"]))


def test_wcmatch_is_imported_only_when_a_filter_is_given() -> None:
    code = ("import sys; from pixsrc.paths import selected; assert selected('a.jpg', [], []); "
            "assert 'wcmatch' not in sys.modules; assert selected('a.jpg', ['*.jpg'], []); "
            "assert 'wcmatch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
