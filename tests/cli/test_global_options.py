"""Global options (--config, --debug, --version) work before the command and after it, as rclone's do."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import run, run_subprocess

from pixsrc import __version__


@pytest.fixture
def other(tmp_path: Path) -> Path:
    return tmp_path / "elsewhere" / "sources.toml"


def add_to(config: Path, name: str, folder: Path, *where: str) -> None:
    args = ["add", "local-fs", "--name", name, "--set", f"path={folder}", "--no-input"]
    result = run(*(["--config", str(config), *args] if "before" in where else [*args, "--config", str(config)]))
    assert result.exit_code == 0, result.stderr


def test_config_after_the_command(config_file: Path, other: Path, tmp_path: Path) -> None:
    add_to(other, "Elsewhere", tmp_path, "after")
    assert set(tomllib.loads(other.read_text())["sources"]) == {"elsewhere"}
    assert not config_file.exists()  # $PIXSRC_CONFIG was not touched
    listed = run("list", "--config", str(other))
    assert listed.exit_code == 0, listed.stderr
    assert "elsewhere" in listed.stdout
    assert run("show", "elsewhere", "--config", str(other), "--json").exit_code == 0
    assert run("show", "elsewhere").exit_code == 2  # not in the default file


def test_config_between_arguments_and_in_a_sub_group(other: Path, tmp_path: Path) -> None:
    add_to(other, "Elsewhere", tmp_path, "before")
    assert run("edit", "--config", str(other), "elsewhere", "--dest", str(tmp_path)).exit_code == 0
    status = run("auth", "status", "elsewhere", "--config", str(other))
    assert status.exit_code == 0, status.stderr
    assert "elsewhere" in status.stdout + status.stderr
    assert run("auth", "--config", str(other), "status", "elsewhere").exit_code == 0
    listed = run("fetch", "elsewhere", "--list", "--config", str(other))
    assert listed.exit_code == 0, listed.stderr


def test_the_last_one_given_wins(config_file: Path, other: Path, tmp_path: Path) -> None:
    add_to(config_file, "Default", tmp_path, "before")
    add_to(other, "Elsewhere", tmp_path, "after")
    after = run("--config", str(config_file), "list", "--config", str(other))
    assert "elsewhere" in after.stdout and "default" not in after.stdout
    before = run("--config", str(other), "list")
    assert "elsewhere" in before.stdout and "default" not in before.stdout


def test_version_and_debug_after_the_command() -> None:
    assert run("list", "--version").stdout == f"pixsrc {__version__}\n"
    assert run("auth", "status", "--version").stdout == f"pixsrc {__version__}\n"
    assert run("list", "--debug").exit_code == 0


def test_debug_after_the_command_shows_the_traceback(other: Path) -> None:
    """An unreadable config is a clean error (no traceback); --debug after the command is still --debug."""
    other.parent.mkdir(parents=True)
    other.write_text("not = [valid")
    plain = run("list", "--config", str(other))
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    from pixsrc.cli.app import app
    from pixsrc.cli.common import handle_errors

    @handle_errors
    def crash() -> None:
        raise RuntimeError("a bug")

    app.command("crash")(crash)
    try:
        debug = run("crash", "--debug")
        assert debug.exit_code == 1 and "Traceback" in debug.stderr and "RuntimeError: a bug" in debug.stderr
        plain = run("crash")  # the next invocation (same process) starts without it
        assert plain.exit_code == 1 and "Traceback" not in plain.stderr and "--debug" in plain.stderr
    finally:
        app.registered_commands.pop()


def test_help_of_every_command_lists_the_global_options() -> None:
    for args in (["--help"], ["list", "--help"], ["fetch", "--help"], ["auth", "login", "--help"]):
        result = run(*args)
        assert result.exit_code == 0
        assert "Global options" in result.stdout, args
        assert "--config" in result.stdout and "--debug" in result.stdout, args


def test_subprocess_config_after_the_command(other: Path, tmp_path: Path) -> None:
    """The installed executable, with $PIXSRC_CONFIG pointing elsewhere: the flag wins."""
    added = run_subprocess("add", "local-fs", "--name", "Sub", "--set", f"path={tmp_path}", "--config", str(other))
    assert added.returncode == 0, added.stderr
    listed = run_subprocess("list", "--json", "--config", str(other))
    assert listed.returncode == 0 and '"id": "sub"' in listed.stdout
    missing = run_subprocess("list", "--config")
    assert missing.returncode == 2 and "--config" in missing.stderr


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _help_texts() -> list[Any]:
    import typer

    from pixsrc.cli.app import app

    return [pytest.param(path, command.help, id=" ".join(path) or "pixsrc")
            for path, command in _commands(typer.main.get_command(app)) if command.help]


@pytest.mark.parametrize(("path", "text"), _help_texts())
def test_help_shows_every_word_of_the_description(path: tuple[str, ...], text: str) -> None:
    """Rich markup must not eat words: "[providers.PROVIDER]" was shown as "" ("goes in )")."""
    shown = " ".join(run(*path, "--help").stdout.replace("│", " ").split())
    for word in text.replace("\\[", "[").split():  # "\[" is Rich's escape for a literal "["
        assert word in shown, (path, word)


def _tree(command: Any) -> Any:
    """A Click command as comparable data: its name, help, parameters and sub-commands."""
    return (command.name, command.help, command.epilog,
            [(p.name, tuple(p.opts), p.required, repr(p.default)) for p in command.params],
            {name: _tree(sub) for name, sub in getattr(command, "commands", {}).items()})


def test_each_run_builds_only_its_command_and_gets_the_same_one() -> None:
    """main() imports and builds only the module of the command on its command line (start-up): the
    table naming each command's module must match the modules, and each command built alone must be
    the very one the whole app has, global options included."""
    import typer

    from pixsrc.cli import app as root

    whole = typer.main.get_command(root.whole_app())
    assert list(whole.commands) == list(root.COMMANDS)  # every command, in the table's (help's) order
    for name, command in whole.commands.items():
        for argv in ([name], ["--config", "x.toml", "-q", name, "--json"], ["--debug", name, "--help"]):
            module = root._module_of(argv)
            assert module is not None and module.__name__ == f"pixsrc.cli.{root.COMMANDS[name]}", argv
            slim = typer.main.get_command(root._root((module,)))
            assert list(slim.commands) == [n for n, m in root.COMMANDS.items() if m == root.COMMANDS[name]]
            assert _tree(slim.commands[name]) == _tree(command), name
    for argv in ([], ["--help"], ["-h", "list"], ["--version"], ["lst"], ["--config", "list"]):
        assert root._module_of(argv) is None, argv  # the whole app: its help, or its "Did you mean"
