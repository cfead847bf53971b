"""Managing sources: list, show, edit, enable, disable, remove (``add`` has its own module)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsrc.cli.add import IntervalOption, SetOption, ask_field, parse_sets, stored_config, take_interval
from pixsrc.cli.common import (
    SourceArg,
    app_state,
    handle_errors,
    is_interactive,
    load,
    print_json,
    print_table,
    say,
    warn,
)
from pixsrc.errors import UsageError

if TYPE_CHECKING:
    from pixsrc.config import Source

app = typer.Typer()


class _Unchanged(Exception):
    """``edit`` found nothing to change: leave the file (and its updated_at) as it was."""


@app.command("list", epilog="Example: pixsrc list --json | jq -r '.[].id'")
@handle_errors
def list_(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    type_filter: Annotated[str | None, typer.Option(
        "--type", metavar="T", help="Only sources of this type.")] = None,
) -> None:
    """List the configured sources."""
    from pixsrc import registry

    cfg = load(ctx)
    rows = [s for s in cfg.sources.values() if type_filter is None or s.type == type_filter]
    if json_out:
        print_json([{**s.as_json(), "effective_interval": s.effective_interval(cfg.default_interval)[0],
                     "available": registry.is_installed(s.type)} for s in rows])
        return
    if not rows:
        say(f"no sources in {cfg.path}; add one with `pixsrc add`")
        return
    print_table(["ID", "NAME", "TYPE", "ENABLED", "INTERVAL", "DEST"], [
        [s.id, s.name, s.type if registry.is_installed(s.type) else f"{s.type} (not installed)",
         "yes" if s.enabled else "no", _interval(s, cfg.default_interval), s.dest or ""] for s in rows])


def _interval(source: Source, default: str | None) -> str:
    """The interval as list and show print it: its own, the default one (marked), or nothing."""
    interval, origin = source.effective_interval(default)
    return f"{interval} (default)" if origin == "defaults" else interval or ""


@app.command(epilog="Example: pixsrc show client-assets --json")
@handle_errors
def show(
    ctx: typer.Context,
    source_ref: SourceArg,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one source, its config and where its credential is (never the credential)."""
    from pixsrc import registry, tokens

    cfg = load(ctx)
    source = cfg.find(source_ref)
    data: dict[str, Any] = {**source.as_json(),
                            "effective_interval": source.effective_interval(cfg.default_interval)[0],
                            "available": registry.is_installed(source.type)}
    stype, problem = registry.usable(source.type)
    data["auth"] = None
    if stype is not None:
        try:
            stype.validate(source.config, f"sources.{source.id}.config")
        except UsageError as exc:
            problem = exc.message
        data["auth"] = tokens.describe(source.id, stype.auth, cfg.providers())
    data["problem"] = problem
    if json_out:
        print_json(data)
    else:
        _print_source(source, data, problem, _interval(source, cfg.default_interval))
    if problem:  # shown in full above, but scripts and cron must notice: exit 2 like fetch would
        from pixsrc.errors import ConfigError

        raise ConfigError(problem, hint=f"fix it with `pixsrc edit {source.id}`" if stype is not None else
                          f"reinstall the plugin that provides it, or `pixsrc remove {source.id}`")


def _print_source(source: Source, data: dict[str, Any], problem: str | None, interval: str = "") -> None:
    lines = [f"{source.name} ({source.id})", f"  type:     {source.type}",
             f"  enabled:  {'yes' if source.enabled else 'no'}", f"  dest:     {source.dest or '(default)'}",
             f"  interval: {interval or '(none: fetch --due and watch skip it)'}"]
    lines += [f"  {key}: {value}" for key, value in source.config.items()]
    if data["auth"]:
        auth = data["auth"]
        where = auth["stored_in"] or auth["detail"]
        lines.append(f"  auth:     {auth['kind']}: {auth['status']}" + (f" ({where})" if where else ""))
    if problem:
        lines.append(f"  problem:  {problem}")
    print("\n".join(lines))


@app.command(epilog="Example: pixsrc edit client-assets --set index=json --unset max_depth")
@handle_errors
def edit(
    ctx: typer.Context,
    source_ref: SourceArg,
    sets: SetOption = None,
    unsets: Annotated[list[str] | None, typer.Option("--unset", metavar="KEY", help="Back to the default.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="New display name.")] = None,
    dest: Annotated[str | None, typer.Option(
        "--dest", metavar="DIR", help="Download folder ('' clears it).")] = None,
    interval: IntervalOption = None,
) -> None:
    """Change a source's config, name, download folder or interval."""
    from pixsrc import registry
    from pixsrc.config import edit_config, now_utc

    path = app_state(ctx).config_path
    flags = bool(sets or unsets or name is not None or dest is not None or interval is not None)
    sets, interval = take_interval(sets or [], interval)
    if "interval" in (unsets or []):  # reserved like --set interval=: the source's own setting
        if interval:
            raise UsageError("--unset interval and a new interval contradict each other; give one of them")
        unsets = [key for key in unsets or [] if key != "interval"]
        interval = ""
    interactive = is_interactive() and not flags
    try:
        with edit_config(path) as cfg:
            source = cfg.find(source_ref)
            before = (dict(source.config), source.name, source.dest, source.interval)
            stype = registry.get(source.type)
            values = dict(source.config)
            if interactive:
                for spec in stype.fields():
                    answer = ask_field(spec, values.get(spec.key, spec.default))
                    if answer is not None and answer != spec.default:
                        values[spec.key] = answer
                    else:
                        values.pop(spec.key, None)
                name = typer.prompt("Name", default=source.name)
            values.update(parse_sets(stype, sets or []))
            keys = {f.key for f in stype.fields()}
            for key in unsets or []:
                if key not in keys:
                    raise UsageError(f"--unset {key}: {stype.id} has no field {key!r}")
                values.pop(key, None)
            source.config = stored_config(stype, values, f"sources.{source.id}.config")
            if name is not None:
                source.name = cfg.check_name(name, but=source.id)
            if dest is not None:
                source.dest = dest or None
            if interval is not None:
                source.interval = interval or None
            if (source.config, source.name, source.dest, source.interval) == before:
                raise _Unchanged  # edit_config writes nothing when its block raises
            source.updated_at = now_utc()
    except _Unchanged:
        if interactive:
            say(f"nothing to change in {source.id!r}")
        elif flags:
            say(f"nothing to change in {source.id!r}: it already has those values")
        else:
            say(f"nothing to change in {source.id!r}: give --set KEY=VALUE, --unset KEY, --name, --dest or --interval")
        return
    say(f"updated {source.id!r}")


def _set_enabled(ctx: typer.Context, source_ref: str, enabled: bool) -> None:
    from pixsrc.config import edit_config, now_utc

    with edit_config(app_state(ctx).config_path) as cfg:
        source: Source = cfg.find(source_ref)
        if source.enabled != enabled:
            source.enabled = enabled
            source.updated_at = now_utc()
    say(f"{'enabled' if enabled else 'disabled'} {source.id!r}")


@app.command(epilog="Example: pixsrc enable client-assets")
@handle_errors
def enable(ctx: typer.Context, source_ref: SourceArg) -> None:
    """Include a source in `fetch --all` again."""
    _set_enabled(ctx, source_ref, True)


@app.command(epilog="Example: pixsrc disable client-assets")
@handle_errors
def disable(ctx: typer.Context, source_ref: SourceArg) -> None:
    """Leave a source out of `fetch --all` (it stays configured)."""
    _set_enabled(ctx, source_ref, False)


@app.command(epilog="Example: pixsrc remove client-assets --yes")
@handle_errors
def remove(
    ctx: typer.Context,
    source_ref: SourceArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a source, its stored credential and its manifest. Downloaded files stay."""
    from pixsrc.config import edit_config, state_dir

    path = app_state(ctx).config_path
    source = load(ctx).find(source_ref)
    if not yes:
        if not is_interactive():
            raise UsageError(f"removing {source.id!r} needs confirmation", hint="pass --yes")
        typer.confirm(f"Remove {source.name!r} ({source.id})? Downloaded files are kept.", abort=True)
    db = state_dir() / "state.db"
    from pixsrc.state import State

    state = State(db) if db.exists() else None  # opened first: a damaged one stops us before any change
    try:
        with edit_config(path) as cfg:
            cfg.sources.pop(cfg.find(source.id).id)
        say(f"removed {source.id!r} from {path}")
        if state is not None:
            state.drop_source(source.id)
    finally:
        if state is not None:
            state.close()
    from pixsrc import registry, tokens
    from pixsrc.errors import AuthRequired

    # tokens.forget asks no keyring for a type that needs no credential, nor for an optional one never stored
    stype, _ = registry.usable(source.type)  # not installed, or a plugin that fails to load: look everywhere
    auth = stype.auth if stype is not None else None
    try:
        for where in tokens.forget(source.id, auth):
            say(f"deleted its credential from {where}")
    except AuthRequired as exc:
        warn(f"warning: could not delete its credential: {exc.message}")
