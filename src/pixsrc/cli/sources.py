"""Managing sources: add, list, show, edit, enable, disable, remove."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsrc.cli.common import app_state, choose, handle_errors, is_interactive, print_json, print_table, say, warn
from pixsrc.errors import UsageError

if TYPE_CHECKING:
    from pixsrc.config import Config, Source
    from pixsrc.types import FieldSpec, SourceType

SetOption = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                     help="A config field; repeat for several.")]


def _parse_value(spec: FieldSpec, raw: str) -> Any:
    if spec.type == "list":  # the rule globs follow everywhere: a comma inside {a,b} separates nothing
        from pixsrc.paths import split_globs

        return split_globs(raw)
    if spec.type == "path" and raw and not raw.startswith("~"):
        return os.path.abspath(raw)  # relative to where the user typed it, not where cron runs
    return raw


def _parse_sets(stype: SourceType, pairs: list[str]) -> dict[str, Any]:
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
        values[key] = _parse_value(fields[key], raw)
    return values


def _stored_config(stype: SourceType, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate, then keep only the keys the user gave (in their converted form)."""
    model = stype.validate(values, where)
    return model.model_dump(mode="json", include=set(values))


def _ask_field(spec: FieldSpec, current: Any) -> Any:
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
    return _parse_value(spec, str(answer)) if answer != "" else None


def _wizard_fields(stype: SourceType, values: dict[str, Any]) -> dict[str, Any]:
    """Ask each field the flags did not give, re-asking when the answer does not validate."""
    from pydantic import ValidationError

    for spec in stype.fields():
        if spec.key in values:
            continue
        while True:
            answer = _ask_field(spec, spec.default)
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
    optional = "" if stype.auth.required else " (Enter to skip)"
    value = typer.prompt(f"{stype.auth.label}{optional}", default="", hide_input=True, show_default=False)
    return value.strip() or None


def _oauth_step(ctx: typer.Context, stype: SourceType, config: dict[str, Any] | None = None) -> Any:
    """The wizard's sign-in step: returns the new tokens, or None to sign in later."""
    from pixsrc import oauth
    from pixsrc.errors import PixsrcError

    provider = stype.auth.oauth
    if provider is None or not typer.confirm(f"Sign in to {provider.display_name} now?", default=True):
        return None
    settings = oauth.settings_for(provider, _load(ctx).providers())
    if not settings.client_id:
        say(f"pixsrc has no OAuth client for {provider.display_name} yet: "
            + oauth.setup_steps(settings, "<this source>"))
        return None
    try:
        model = stype.validate(config, "sources.new.config") if config is not None else None
        scopes = stype.auth.scopes_of(model)
        return oauth.login(settings, scopes, provider.display_name, stdin=sys.stdin)
    except PixsrcError as exc:
        say(f"sign-in failed: {exc.message}; the source is added anyway, sign in later with `pixsrc auth login`")
        return None


class _Unchanged(Exception):
    """``edit`` found nothing to change: leave the file (and its updated_at) as it was."""


def _load(ctx: typer.Context) -> Config:
    from pixsrc.config import load_config

    return load_config(app_state(ctx).config_path)


def register(app: typer.Typer) -> None:
    @app.command(epilog="Example: pixsrc add remote-gallery --name 'Client Assets' "
                        "--set url=https://assets.example.com/gallery/")
    @handle_errors
    def add(
        ctx: typer.Context,
        type_id: Annotated[str | None, typer.Argument(metavar="TYPE", help="Source type (see `pixsrc types`).")] = None,
        name: Annotated[str | None, typer.Option("--name", help="Display name, e.g. 'Client Assets'.")] = None,
        source_id: Annotated[str | None, typer.Option(
            "--id", help="Id (a slug); derived from the name if omitted.")] = None,
        sets: SetOption = None,
        dest: Annotated[str | None, typer.Option(
            "--dest", metavar="DIR", help="Download folder for this source.")] = None,
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
        values = _parse_sets(stype, sets or [])
        missing = [f for f in stype.fields() if f.required and f.key not in values]
        if interactive and (missing or not sets):
            values = _wizard_fields(stype, values)
        elif missing:
            raise UsageError(
                f"missing required field(s) for {stype.id}: " + ", ".join(f"{f.key} ({f.label})" for f in missing),
                hint=" ".join(f"--set {f.key}=..." for f in missing),
            )
        if source_id is not None and not SLUG_RE.match(source_id):
            raise UsageError(f"--id {source_id!r}: use lower-case letters, digits and '-' (at most 64)")
        config = _stored_config(stype, values, f"sources.{source_id or 'new'}.config")
        secret = _ask_api_key(stype) if interactive and stype.auth.kind == "api-key" else None
        token_set = _oauth_step(ctx, stype, config) if interactive and stype.auth.kind == "oauth2" else None
        if interactive and name is None:
            name = typer.prompt("Name for this source", default=source_id or stype.name)
        chosen = name is not None  # a name the user gave must be free; a default is made free
        name = (name or source_id or stype.name).strip()
        if not name:
            raise UsageError("--name must not be empty")
        path = app_state(ctx).config_path
        with edit_config(path) as cfg:
            taken = {s.name.casefold() for s in cfg.sources.values()}
            if name.casefold() in taken and chosen:
                raise UsageError(f"a source is already named {name!r}", hint="pick another --name")
            base, n = name, 1
            while name.casefold() in taken:  # "Local folder" is taken: "Local folder 2"
                n += 1
                name = f"{base} {n}"
            if source_id is None:
                source_id = cfg.unique_id(name)
            elif source_id in cfg.sources:
                raise UsageError(f"a source with id {source_id!r} already exists")
            stamp = now_utc()
            cfg.sources[source_id] = Source(source_id, name, stype.id, not disabled, config, dest, stamp, stamp)
        say(f"added {source_id!r} ({stype.name}) to {path}")
        if secret:
            from pixsrc import tokens

            say(f"credential stored in {tokens.put(source_id, secret)}")
        if token_set is not None:
            from pixsrc import oauth

            # with the provider's settings, a grant that cannot be stored anywhere is revoked, not left live
            settings = oauth.settings_for(stype.auth.oauth, _load(ctx).providers()) if stype.auth.oauth else None
            say(f"tokens stored in {oauth.store_new_tokens(source_id, token_set, None, settings)}")
        elif stype.auth.kind == "oauth2":
            say(f"next: pixsrc auth login {source_id}")

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

        cfg = _load(ctx)
        rows = [s for s in cfg.sources.values() if type_filter is None or s.type == type_filter]
        if json_out:
            print_json([{**s.as_json(), "available": registry.is_installed(s.type)} for s in rows])
            return
        if not rows:
            say(f"no sources in {cfg.path}; add one with `pixsrc add`")
            return
        print_table(["ID", "NAME", "TYPE", "ENABLED", "DEST"], [
            [s.id, s.name, s.type if registry.is_installed(s.type) else f"{s.type} (not installed)",
             "yes" if s.enabled else "no", s.dest or ""] for s in rows])

    @app.command(epilog="Example: pixsrc show client-assets --json")
    @handle_errors
    def show(
        ctx: typer.Context,
        source_ref: Annotated[str, typer.Argument(metavar="SOURCE", help="Id or name.")],
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Show one source, its config and where its credential is (never the credential)."""
        from pixsrc import registry, tokens

        source = _load(ctx).find(source_ref)
        data: dict[str, Any] = {**source.as_json(), "available": registry.is_installed(source.type)}
        problem = None
        if data["available"]:
            stype = registry.get(source.type)
            try:
                stype.validate(source.config, f"sources.{source.id}.config")
            except UsageError as exc:
                problem = exc.message
            data["auth"] = tokens.describe(source.id, stype.auth)
        else:
            problem = f"type {source.type!r} is not installed"
            data["auth"] = None
        data["problem"] = problem
        if json_out:
            print_json(data)
        else:
            _print_source(source, data, problem)
        if problem:  # shown in full above, but scripts and cron must notice: exit 2 like fetch would
            from pixsrc.errors import ConfigError

            raise ConfigError(problem, hint=f"fix it with `pixsrc edit {source.id}`" if data["available"] else
                              f"reinstall the plugin that provides it, or `pixsrc remove {source.id}`")

    def _print_source(source: Source, data: dict[str, Any], problem: str | None) -> None:
        lines = [f"{source.name} ({source.id})", f"  type:     {source.type}",
                 f"  enabled:  {'yes' if source.enabled else 'no'}", f"  dest:     {source.dest or '(default)'}"]
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
        source_ref: Annotated[str, typer.Argument(metavar="SOURCE", help="Id or name.")],
        sets: SetOption = None,
        unsets: Annotated[list[str] | None, typer.Option("--unset", metavar="KEY", help="Back to the default.")] = None,
        name: Annotated[str | None, typer.Option("--name", help="New display name.")] = None,
        dest: Annotated[str | None, typer.Option(
            "--dest", metavar="DIR", help="Download folder ('' clears it).")] = None,
    ) -> None:
        """Change a source's config, name or download folder."""
        from pixsrc import registry
        from pixsrc.config import edit_config, now_utc

        path = app_state(ctx).config_path
        flags = bool(sets or unsets or name is not None or dest is not None)
        interactive = is_interactive() and not flags
        try:
            with edit_config(path) as cfg:
                source = cfg.find(source_ref)
                before = (dict(source.config), source.name, source.dest)
                stype = registry.get(source.type)
                values = dict(source.config)
                if interactive:
                    for spec in stype.fields():
                        answer = _ask_field(spec, values.get(spec.key, spec.default))
                        if answer is not None and answer != spec.default:
                            values[spec.key] = answer
                        else:
                            values.pop(spec.key, None)
                    name = typer.prompt("Name", default=source.name)
                values.update(_parse_sets(stype, sets or []))
                keys = {f.key for f in stype.fields()}
                for key in unsets or []:
                    if key not in keys:
                        raise UsageError(f"--unset {key}: {stype.id} has no field {key!r}")
                    values.pop(key, None)
                source.config = _stored_config(stype, values, f"sources.{source.id}.config")
                if name is not None:
                    name = name.strip()
                    if not name:
                        raise UsageError("--name must not be empty")
                    if any(s.name.casefold() == name.casefold() and s.id != source.id for s in cfg.sources.values()):
                        raise UsageError(f"a source is already named {name!r}")
                    source.name = name
                if dest is not None:
                    source.dest = dest or None
                if (source.config, source.name, source.dest) == before:
                    raise _Unchanged  # edit_config writes nothing when its block raises
                source.updated_at = now_utc()
        except _Unchanged:
            if interactive:
                say(f"nothing to change in {source.id!r}")
            elif flags:
                say(f"nothing to change in {source.id!r}: it already has those values")
            else:
                say(f"nothing to change in {source.id!r}: give --set KEY=VALUE, --unset KEY, --name or --dest")
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
    def enable(ctx: typer.Context,
               source_ref: Annotated[str, typer.Argument(metavar="SOURCE", help="Id or name.")]) -> None:
        """Include a source in `fetch --all` again."""
        _set_enabled(ctx, source_ref, True)

    @app.command(epilog="Example: pixsrc disable client-assets")
    @handle_errors
    def disable(ctx: typer.Context,
                source_ref: Annotated[str, typer.Argument(metavar="SOURCE", help="Id or name.")]) -> None:
        """Leave a source out of `fetch --all` (it stays configured)."""
        _set_enabled(ctx, source_ref, False)

    @app.command(epilog="Example: pixsrc remove client-assets --yes")
    @handle_errors
    def remove(
        ctx: typer.Context,
        source_ref: Annotated[str, typer.Argument(metavar="SOURCE", help="Id or name.")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ) -> None:
        """Remove a source, its stored credential and its manifest. Downloaded files stay."""
        from pixsrc.config import edit_config, state_dir

        path = app_state(ctx).config_path
        source = _load(ctx).find(source_ref)
        if not yes:
            if not is_interactive():
                raise UsageError(f"removing {source.id!r} needs confirmation", hint="pass --yes")
            typer.confirm(f"Remove {source.name!r} ({source.id})? Downloaded files are kept.", abort=True)
        with edit_config(path) as cfg:
            cfg.sources.pop(cfg.find(source.id).id)
        say(f"removed {source.id!r} from {path}")
        from pixsrc import registry, tokens
        from pixsrc.errors import AuthRequired

        if not registry.is_installed(source.type) or registry.get(source.type).auth.kind != "none":
            try:
                for where in tokens.delete(source.id):
                    say(f"deleted its credential from {where}")
            except AuthRequired as exc:
                warn(f"warning: could not delete its credential: {exc.message}")
        db = state_dir() / "state.db"
        if db.exists():
            from pixsrc.state import State

            state = State(db)
            state.drop_source(source.id)
            state.close()

