"""The real ``pixsrc`` executable the way cron runs it: no TTY, empty stdin, exit codes only."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support.cli import run_subprocess

from pixsrc import __version__

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "sample-assets"
SAMPLE_IMAGES = sorted(["ocean.png", "sunrise.png", "logos/pixsrc-mark.png", "logos/pixsrc-mark-inverse.png"])
PROMPT_MARKERS = ("[e.g.", "(optional)", "Type (number or id)", "Name for this source", "API key")


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def assert_no_prompt(result: subprocess.CompletedProcess[str]) -> None:
    for marker in PROMPT_MARKERS:
        assert marker not in result.stdout + result.stderr, marker


def test_cron_add_and_fetch(config_file: Path, tmp_path: Path) -> None:
    dest = tmp_path / "assets"
    add = run_subprocess("add", "local-fs", "--name", "Samples", "--set", f"path={SAMPLES}", timeout=30)
    assert add.returncode == 0, add.stderr
    assert add.stdout == ""
    assert_no_prompt(add)
    fetch = run_subprocess("fetch", "samples", "--dest", str(dest), timeout=60)
    assert fetch.returncode == 0, fetch.stderr
    assert fetch.stdout == ""  # stdout is for data; the summary goes to stderr
    assert "samples: ok: 4 listed, 4 new, 0 updated, 0 unchanged" in fetch.stderr
    assert "\x1b[" not in fetch.stderr  # no progress bars or colours without a terminal
    assert files_under(dest) == SAMPLE_IMAGES
    for rel in SAMPLE_IMAGES:
        assert filecmp.cmp(SAMPLES / rel, dest / rel, shallow=False)
    again = run_subprocess("fetch", "--all", "--dest", str(dest), "--json", "-q", timeout=60)
    assert again.returncode == 0
    assert again.stderr == ""
    report = json.loads(again.stdout)
    assert report["schema"] == 1
    [source] = report["sources"]
    assert (source["source"], source["status"], source["unchanged"], source["downloaded"]) == (
        "samples",
        "ok",
        4,
        0,
    )


def test_fetch_list_json_lines(config_file: Path) -> None:
    assert run_subprocess("add", "local-fs", "--name", "Samples", "--set", f"path={SAMPLES}").returncode == 0
    result = run_subprocess("fetch", "samples", "--list", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["path"] for r in rows) == SAMPLE_IMAGES
    sizes = {r["path"]: r["size"] for r in rows}
    assert sizes["ocean.png"] == (SAMPLES / "ocean.png").stat().st_size


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "remote-gallery", "--name", "G"], "missing required field(s) for remote-gallery: url"),
        (["add"], "missing TYPE"),
        (["remove", "whatever"], "no source named 'whatever'"),
        (["auth", "login", "whatever"], "no source named 'whatever'"),
    ],
)
def test_no_prompt_without_a_tty(config_file: Path, args: list[str], message: str) -> None:
    # stdin is empty and not a terminal: any prompt would read EOF (or block); we want exit 2 at once
    result = run_subprocess(*args, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_prompt(result)
    assert not config_file.exists()


def test_remove_needs_yes_without_a_tty(config_file: Path) -> None:
    assert run_subprocess("add", "local-fs", "--name", "S", "--set", f"path={SAMPLES}").returncode == 0
    before = config_file.read_bytes()
    result = run_subprocess("remove", "s", timeout=30)
    assert result.returncode == 2
    assert "needs confirmation" in result.stderr and "--yes" in result.stderr
    assert_no_prompt(result)
    assert config_file.read_bytes() == before
    assert run_subprocess("remove", "s", "--yes").returncode == 0
    assert tomllib.loads(config_file.read_text()).get("sources", {}) == {}


def test_python_dash_m_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pixsrc", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0
    assert result.stdout == f"pixsrc {__version__}\n"


def test_internal_error_has_no_traceback_without_debug(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.mkdir()  # a folder where the file should be
    result = run_subprocess("list")
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr
    assert str(config_file) in result.stderr


# -- start-up cost: what `pixsrc --help` and `pixsrc list` import ----------------------------------

PROBE = r"""
import json, os, runpy, sys
sys.argv = ["pixsrc", *json.loads(os.environ["PROBE_ARGS"])]
code = 0
try:
    runpy.run_module("pixsrc", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
with open(os.environ["PROBE_OUT"], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

HEAVY = (
    "httpx",
    "keyring",
    "pydantic",
    "pydantic_core",
    "pixsrc.types",
    "pycurl",
    "tenacity",
    "tomlkit",  # only a write of the config file needs it
    "pixsrc.api",
    "pixsrc.transfer",
    "pixsrc.sources",
    "pixsrc.sources.local_fs",
    "pixsrc.sources.remote_gallery",
    "pixsrc.sync",
    "pixsrc.tokens",
)


def imported_by(tmp_path: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / "probe.json"
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PROBE_ARGS": json.dumps(args), "PROBE_OUT": str(out)},
    )
    data = json.loads(out.read_text())
    assert data["code"] in (0, None), result.stderr
    return set(data["modules"]), result


@pytest.fixture
def configured(config_file: Path) -> Path:
    for args in (
        ["add", "local-fs", "--name", "Samples", "--set", f"path={SAMPLES}"],
        ["add", "remote-gallery", "--name", "Gallery", "--set", "url=https://g.example/"],
    ):
        assert run_subprocess(*args).returncode == 0
    return config_file


@pytest.mark.parametrize(
    "args", [["--help"], ["list"], ["list", "--json"], ["fetch", "--help"], ["--version"]]
)
def test_light_commands_do_not_import_heavy_modules(
    configured: Path, tmp_path: Path, args: list[str]
) -> None:
    modules, result = imported_by(tmp_path, *args)
    if args[0] == "list":
        assert "samples" in result.stdout and "gallery" in result.stdout  # it really ran
    assert "pixsrc.cli.app" in modules
    assert sorted(m for m in HEAVY if m in modules) == []


def test_the_probe_sees_heavy_imports(configured: Path, tmp_path: Path) -> None:
    """Control: the same probe does see keyring and pydantic when a command needs them."""
    # a key pixsrc stored in the keyring is looked up there (a public gallery's never-stored one is not)
    state = Path(os.environ["PIXSRC_STATE_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    (state / "credentials-index.json").write_text('["gallery"]')
    modules, result = imported_by(tmp_path, "show", "gallery", "--json")
    assert json.loads(result.stdout)["id"] == "gallery"
    assert {"keyring", "pydantic", "pixsrc.sources.remote_gallery"} <= modules
