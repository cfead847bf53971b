"""``pixsrc add``: a new source from flags, or from a wizard on a terminal for whatever the flags left out."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsrc.cli.common import app_state, choose, handle_errors, is_interactive, load, say, warn
from pixsrc.errors import UsageError

if TYPE_CHECKING:
    from pixsrc.config import Config
    from pixsrc.types import FieldSpec, SourceType

app = typer.Typer()

SetOption = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                     help="A config field; repeat for several.")]


def parse_value(spec: FieldSpec, raw: str) -> Any:
    if spec.type == "list":  # the rule globs follow everywhere: a comma inside {a,b} separates nothing
        from pixsrc.paths import split_globs

        return split_globs(raw)
    if spec.type == "path" and raw and not raw.startswith("~"):
        return os.path.abspath(raw)  # relative to where the user typed it, not where cron runs
    return raw


def parse_sets(stype: SourceType, pairs: list[str]) -> dict[str, Any]:
    fields = {f.key: f for f in stype.fields()}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE")
        if key not in fields:
            raise UsageError(f"--set {key}: {stype.id} has no field {key!r}",
                             hint="its fields: " + ", ".join(fields))
        if fields[key].required and not raw.strip():
            raise UsageError(f"--set {key}: {fields[key].label} is required and must not be empty")
        values[key] = parse_value(fields[key], raw)
    return values


IntervalOption = Annotated[str | None, typer.Option(
    "--interval", metavar="DURATION",
    help="How often `fetch --due` and `watch` fetch it: 30m, 6h, 1d ('' clears it). Also: --set interval=6h.")]


def take_interval(pairs: list[str], flag: str | None) -> tuple[list[str], str | None]:
    """The interval given as --interval or as ``--set interval=...`` (a reserved key: the source's own
    setting, read before the type's fields), checked; and the other --set pairs. None: not given."""
    rest, given = [], [] if flag is None else [flag.strip()]
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if sep and key.strip() == "interval":
            given.append(raw.strip())
        else:
            rest.append(pair)
    if len(set(given)) > 1:
        raise UsageError("the interval is given twice, with different values", hint="give it once: --interval 6h")
    value = given[0] if given else None
    if value:
        from pixsrc.schedule import parse_interval

        parse_interval(value, "--interval")
    return rest, value


def stored_config(stype: SourceType, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate, then keep only the keys the user gave (in their converted form)."""
    model = stype.validate(values, where)
    return model.model_dump(mode="json", include=set(values))


def ask_field(spec: FieldSpec, current: Any) -> Any:
    label = spec.label + ("" if spec.required else " (optional)")
    if spec.placeholder and current is None:
        label += f" [e.g. {spec.placeholder}]"
    if spec.type == "boolean":
        return typer.confirm(label, default=bool(current))
    if spec.type == "select" and spec.options:
        return choose(label, spec.options, current)
    shown = ",".join(current) if isinstance(current, list) else current
    answer = typer.prompt(label, default="" if shown is None and not spec.required else shown,
                          show_default=shown not in (None, ""))
    if shown not in (None, "") and answer == shown:
        return current  # Enter on the shown default: keep it as it was (typed), do not pin "10" as a value
    return parse_value(spec, str(answer)) if answer != "" else None


def _wizard_fields(stype: SourceType, values: dict[str, Any]) -> dict[str, Any]:
    """Ask each field the flags did not give, re-asking when the answer does not validate."""
    from pydantic import ValidationError

    for spec in stype.fields():
        if spec.key in values:
            continue
        while True:
            answer = ask_field(spec, spec.default)
            if answer is None or answer == spec.default:
                if spec.required:
                    say(f"  {spec.label} is required")
                    continue
                break
            try:
                stype.config_model.model_validate({**values, spec.key: answer})
            except ValidationError as exc:
                mine = [e for e in exc.errors() if e["loc"][:1] == (spec.key,)]
                if mine:
                    say("  " + mine[0]["msg"].removeprefix("Value error, "))
                    continue
            values[spec.key] = answer
            break
    return values


def _pick_type() -> str:
    from pixsrc import registry

    types, _ = registry.load_all()
    say("Source types:")
    for number, stype in enumerate(types, 1):
        say(f"  {number}. {stype.id:16} {stype.description}")
    ids = [t.id for t in types]
    while True:
        choice = str(typer.prompt("Type (number or id)")).strip()
        if choice in ids:
            return choice
        if choice.isdigit() and 1 <= int(choice) <= len(ids):
            return ids[int(choice) - 1]
        say(f"  choose a number from 1 to {len(ids)} or one of: {', '.join(ids)}")


def _ask_api_key(stype: SourceType) -> str | None:
    from pixsrc import redact

    optional = "" if stype.auth.required else " (Enter to skip)"
    value = str(typer.prompt(f"{stype.auth.label}{optional}", default="", hide_input=True, show_default=False))
    redact.register(value.strip())  # from now on no message can show it
    return value.strip() or None


def _ask_name(cfg: Config, default: str) -> str:
    """Ask until the name is free: a taken name asks again, every other answer is kept."""
    while True:
        answer = str(typer.prompt("Name for this source", default=default))
        try:
            return cfg.check_name(answer)
        except UsageError as exc:
            say(f"  {exc.message}")


def _ask_dest(cfg: Config, source_id: str, name: str, type_id: str) -> str | None:
    """The download folder, the one fetch would use shown as the default; Enter keeps it unpinned."""
    from pixsrc.config import Source
    from pixsrc.fetch import destination

    default = str(destination(cfg, Source(source_id, name, type_id, True, {}), None, False))
    answer = str(typer.prompt("Download folder", default=default)).strip()
    if answer in ("", default):
        return None
    return answer if answer.startswith("~") else os.path.abspath(answer)


def _store_key(source_id: str, secret: str, interactive: bool) -> None:
    """Store a typed API key; without a keyring offer the file store, else keep nothing and say how."""
    from pixsrc import tokens

    try:
        say(f"credential stored in {tokens.put(source_id, secret)}")
        return
    except tokens.KeyringUnavailable as exc:
        warn(f"warning: {exc.message}")
    if interactive and typer.confirm(f"Keep the key in a mode-0600 file ({tokens.file_store_path()}) instead?",
                                     default=False):
        say(f"credential stored in {tokens.put(source_id, secret, 'file')}")
        return
    warn(f"the key was not kept; add it later with `pixsrc auth login {source_id}` "
         f"(or set {tokens.env_var(source_id)})")


def _sign_in(ctx: typer.Context, source_id: str, name: str, stype: SourceType) -> None:
    """The wizard's sign-in step: the one `auth login` runs, after the source is saved."""
    from pixsrc.cli.auth import oauth_login
    from pixsrc.errors import PixsrcError

    provider = stype.auth.oauth
    assert provider is not None
    if not typer.confirm(f"Sign in to {provider.display_name} now?", default=True):
        say(f"next: pixsrc auth login {source_id}")
        return
    try:
        oauth_login(load(ctx), source_id, name, stype)
    except PixsrcError as exc:
        warn(f"sign-in failed: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        warn(f"the source is added; sign in later with `pixsrc auth login {source_id}`")


@app.command(epilog="Examples: pixsrc add   # a wizard asks for everything\n\n"
                    "  pixsrc add remote-gallery --name 'Client Assets' --set url=https://assets.example.com/gallery/")
@handle_errors
def add(
    ctx: typer.Context,
    type_id: Annotated[str | None, typer.Argument(metavar="TYPE", help="Source type (see `pixsrc types`).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name, e.g. 'Client Assets'.")] = None,
    source_id: Annotated[str | None, typer.Option(
        "--id", help="Id (a slug); derived from the name if omitted.")] = None,
    sets: SetOption = None,
    dest: Annotated[str | None, typer.Option("--dest", metavar="DIR", help="Download folder for this source.")] = None,
    interval: IntervalOption = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it disabled.")] = False,
    no_input: Annotated[bool, typer.Option("--no-input", help="Never prompt; fail on missing fields.")] = False,
) -> None:
    """Add a source. On a terminal, a wizard asks for whatever the flags left out."""
    from pixsrc import registry
    from pixsrc.config import SLUG_RE, Source, edit_config, now_utc

    interactive = is_interactive(no_input)
    if type_id is None:
        if not interactive:
            raise UsageError("missing TYPE", hint="see `pixsrc types`; e.g. pixsrc add local-fs --set path=DIR")
        type_id = _pick_type()
    stype = registry.get(type_id)
    if source_id is not None and not SLUG_RE.match(source_id):
        raise UsageError(f"--id {source_id!r}: use lower-case letters, digits and '-' (at most 64)")
    sets, interval = take_interval(sets or [], interval)
    values = parse_sets(stype, sets)
    missing = [f for f in stype.fields() if f.required and f.key not in values]
    wizard = interactive and (missing or not sets)
    if wizard:
        values = _wizard_fields(stype, values)
    elif missing:
        raise UsageError(
            f"missing required field(s) for {stype.id}: " + ", ".join(f"{f.key} ({f.label})" for f in missing),
            hint=" ".join(f"--set {f.key}=..." for f in missing),
        )
    config = stored_config(stype, values, f"sources.{source_id or 'new'}.config")
    secret = _ask_api_key(stype) if interactive and stype.auth.kind == "api-key" else None
    cfg = load(ctx)
    if name is not None:
        name = cfg.check_name(name)
    elif interactive:
        name = _ask_name(cfg, cfg.free_name(source_id or stype.name))
    if wizard and dest is None:
        dest = _ask_dest(cfg, source_id or cfg.unique_id(name or stype.name), name or stype.name, stype.id)
    path = app_state(ctx).config_path
    with edit_config(path) as cfg:  # checked again under the lock: another process may have added one since
        name = cfg.check_name(name) if name is not None else cfg.free_name(source_id or stype.name)
        if source_id is None:
            source_id = cfg.unique_id(name)
        elif source_id in cfg.sources:
            raise UsageError(f"a source with id {source_id!r} already exists", hint="pick another --id")
        stamp = now_utc()
        cfg.sources[source_id] = Source(source_id, name, stype.id, not disabled, config, dest, stamp, stamp,
                                        interval=interval or None)
    say(f"added {source_id!r} ({stype.name}) to {path}")
    if secret:
        _store_key(source_id, secret, interactive)
    if stype.auth.kind == "oauth2":
        if interactive:
            _sign_in(ctx, source_id, name, stype)
        else:
            say(f"next: pixsrc auth login {source_id}")
