"""Sharing source definitions with a team: an export document without secrets, and merging one in.

The document is TOML, laid out like the sources file so that people can read and review it::

    # pixsrc 0.1.0 export of 2 sources, 2026-05-01
    format = 1
    [sources.<id>]          name, type, enabled, every other setting of a Source (dest only if asked)
    [sources.<id>.config]   the type's config fields
    [providers.<name>]      the shareable OAuth settings those sources need (client id, URLs)

Credentials, tokens, client secrets, state and timestamps stay on the machine: they live in the
keyring and the state dir, never in the sources file, and export copies only settings. Import is
strict: one invalid entry, or one key that looks like a credential, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from pixsrc.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from pixsrc.config import Config, Source
    from pixsrc.types import OAuthProvider

FORMAT = 1
Policy = Literal["rename", "skip", "replace"]
Action = Literal["added", "renamed", "skipped", "replaced"]
POLICIES: tuple[Policy, ...] = ("rename", "skip", "replace")

# Key names that hold a credential: refused on import, dropped on export. Exact names plus a few
# suffixes; not every "*_secret" (Pinterest's `include_secret` is a switch for secret boards)
_SECRET_NAMES = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth_token", "bearer", "secret", "client_secret",
    "api_key", "apikey", "key_secret", "password", "passwd", "passphrase", "private_key", "credential",
    "credentials",
})
_SECRET_SUFFIXES = ("_token", "_password", "_api_key", "_apikey", "_client_secret", "_secret_key", "_access_key",
                    "_private_key")
_TOP_KEYS = frozenset({"format", "sources", "providers"})


def looks_secret(key: str) -> bool:
    name = key.strip().lower().replace("-", "_")
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def _clean(value: Any, where: str, dropped: list[str]) -> Any:
    """A plain deep copy of TOML data without credential-looking keys; their paths go to ``dropped``."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if looks_secret(str(key)):
                dropped.append(here)
            else:
                out[str(key)] = _clean(item, here, dropped)
        return out
    if isinstance(value, list):
        return [_clean(item, where, dropped) for item in value]
    return value


def settings_of(source: Source, with_dest: bool) -> dict[str, Any]:
    """A source's settings in their TOML form: what the sources file holds, less what is not a setting.

    Taken from ``Source.to_toml`` so that a setting added to Source is shared without a change here;
    keys pixsrc does not know (``extra``) and timestamps (any date-time) are this machine's.
    """
    table = dict(source.to_toml())
    for key in source.extra:
        table.pop(key, None)
    if not with_dest:
        table.pop("dest", None)
    return {key: value for key, value in table.items() if not isinstance(value, datetime)}


def _oauth_provider(type_id: str) -> OAuthProvider | None:
    from pixsrc import registry

    stype, _ = registry.usable(type_id)  # a plugin that fails to load: `pixsrc types` reports it
    return stype.auth.oauth if stype is not None else None


# -- export ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exported:
    text: str
    count: int
    written_to: Path | None
    warnings: list[str]


def export_sources(cfg: Config, refs: Iterable[str], *, with_dest: bool = False, output: Path | None = None,
                   force: bool = False, today: date | None = None) -> Exported:
    """The export document of the chosen sources (all if ``refs`` is empty); written to ``output`` if given.

    ``output`` is replaced atomically, mode 0644 (the document is meant to be shared), and only with
    ``force`` if it exists; the sources file itself is never a target.
    """
    import tomlkit

    from pixsrc import __version__
    from pixsrc.oauth import PROVIDER_KEYS

    chosen: dict[str, Source] = {}
    for ref in refs:
        source = cfg.find(ref)
        chosen.setdefault(source.id, source)
    if not chosen:
        chosen = dict(cfg.sources)
    warnings: list[str] = []
    sources_table = tomlkit.table(is_super_table=True)
    needed: dict[str, None] = {}  # provider names, in the order the sources need them
    for source in chosen.values():
        dropped: list[str] = []
        table = _clean(settings_of(source, with_dest), f"sources.{source.id}", dropped)
        warnings += [f"{path}: looks like a credential; not exported (credentials stay on this machine)"
                     for path in dropped]
        provider = _oauth_provider(source.type)
        if provider is not None:
            needed.setdefault(provider.name, None)
        else:
            from pixsrc import registry

            if not registry.is_installed(source.type):
                warnings.append(f"sources.{source.id}: type {source.type!r} is not installed here; exported as it "
                                "is, without the [providers.*] table it may need")
        config = table.pop("config", {})
        item = tomlkit.table()
        item.update(table)
        item.add("config", config)  # last: a sub-table after the plain keys, as in the sources file
        sources_table.add(source.id, item)
    providers_table = tomlkit.table(is_super_table=True)
    for name in needed:
        mine = cfg.providers().get(name)
        if not isinstance(mine, Mapping):
            continue
        shared = {key: value for key, value in mine.items() if key in PROVIDER_KEYS}
        warnings += [f"providers.{name}.{key}: not exported ("
                     + ("credentials stay on this machine)" if looks_secret(key) else "not a provider setting)")
                     for key in mine if key not in PROVIDER_KEYS]
        if shared:
            providers_table.add(name, shared)

    doc = tomlkit.document()
    count = len(chosen)
    doc.add(tomlkit.comment(f"pixsrc {__version__} export of {count} source{'s' if count != 1 else ''}, "
                            f"{(today or date.today()).isoformat()}"))
    doc.add(tomlkit.comment("Settings only: no credentials, tokens, client secrets, state or timestamps."))
    doc.add(tomlkit.comment("Add these sources to a config with: pixsrc import FILE"))
    doc.add("format", FORMAT)
    if chosen:
        doc.add("sources", sources_table)
    if providers_table:
        doc.add("providers", providers_table)
    text = tomlkit.dumps(doc)
    if output is not None:
        _write_output(output, text, force, cfg.path)
    return Exported(text, count, output, warnings)


def _write_output(output: Path, text: str, force: bool, config_path: Path) -> None:
    from pixsrc.config import atomic_write, real_file

    target = real_file(output)
    if target.is_dir():
        raise UsageError(f"--output {output}: is a folder", hint="name a file, e.g. --output team-sources.toml")
    if target.exists():
        config_target = real_file(config_path)
        if config_target.exists() and os.path.samefile(target, config_target):
            raise UsageError(f"--output {output} is your sources file; an export is a separate document",
                             hint="choose another file, e.g. --output team-sources.toml")
        if not force:
            raise UsageError(f"--output {output} already exists", hint="pass --force to replace it")
    try:
        atomic_write(target, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None


# -- import ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One valid source of the document: parsed as the sources file would be, config validated."""

    source: Source
    has_dest: bool
    auth: str | None  # the type's auth kind; None when the type is not installed
    needs_credential: bool = False


@dataclass(frozen=True)
class SourceOutcome:
    action: Action
    id: str
    name: str
    type: str
    from_id: str
    from_name: str
    reason: str | None
    auth: str | None
    needs_credential: bool

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ProviderOutcome:
    name: str
    added: list[str]
    kept: list[str]

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ImportReport:
    file: str
    config: Path
    dry_run: bool
    on_conflict: Policy
    sources: list[SourceOutcome]
    providers: list[ProviderOutcome]
    warnings: list[str]

    @property
    def changed(self) -> bool:
        return any(s.action != "skipped" for s in self.sources) or any(p.added for p in self.providers)

    def as_json(self) -> dict[str, Any]:
        return {"schema": 1, "file": self.file, "config": str(self.config), "dry_run": self.dry_run,
                "on_conflict": self.on_conflict, "sources": [s.as_json() for s in self.sources],
                "providers": [p.as_json() for p in self.providers], "warnings": self.warnings}


class _Unchanged(Exception):
    """Nothing to add: leave the sources file as it is."""


def import_file(file: str, config_path: Path, *, on_conflict: str = "rename", dry_run: bool = False,
                stdin: TextIO | None = None) -> ImportReport:
    """Merge the export document ``file`` (``-``: ``stdin``) into the sources file, under its lock.

    The whole document is checked first; any problem raises ConfigError naming file, source and
    field, and nothing is written. ``dry_run`` plans the same merge and writes nothing.
    """
    from pixsrc.config import edit_config, load_config

    policy = next((p for p in POLICIES if p == on_conflict), None)
    if policy is None:
        raise UsageError(f"--on-conflict {on_conflict!r}: use one of {', '.join(POLICIES)}")
    origin = "<stdin>" if file == "-" else file
    entries, providers, warnings = check_document(_read(file, stdin), origin)
    if dry_run:
        cfg = load_config(config_path)  # planned on a copy that is never saved
        return _merge(cfg, entries, providers, policy, origin, warnings, dry_run=True)
    report: ImportReport | None = None
    try:
        with edit_config(config_path) as cfg:
            report = _merge(cfg, entries, providers, policy, origin, warnings, dry_run=False)
            if not report.changed:
                raise _Unchanged
    except _Unchanged:
        pass
    assert report is not None
    return report


def _read(file: str, stdin: TextIO | None) -> str:
    if file == "-":
        import sys

        return (stdin or sys.stdin).read()
    try:
        return Path(file).expanduser().read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{file}: no such file", hint="make one with `pixsrc export --output FILE`") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not valid UTF-8") from None
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None


def check_document(text: str, origin: str) -> tuple[list[Entry], dict[str, dict[str, Any]], list[str]]:
    """The document's sources and provider tables, and warnings; ConfigError lists every problem."""
    from pixsrc import registry
    from pixsrc.config import _parse_sources
    from pixsrc.oauth import PROVIDER_KEYS

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None
    if "format" not in doc:
        sources_file = "version" in doc or "defaults" in doc
        raise ConfigError(f"{origin}: not a pixsrc export document (it has no `format` key)",
                          hint="that looks like a sources file: export it with `pixsrc --config FILE export`"
                          if sources_file else "make one with `pixsrc export`")
    if isinstance(doc["format"], bool) or doc["format"] != FORMAT:  # true == 1 in Python
        raise ConfigError(f"{origin}: format {doc['format']!r} is not one this pixsrc reads (format {FORMAT})",
                          hint="upgrade pixsrc, or export again with this version")
    dropped = _credential_keys(doc)
    if dropped:
        # A shareable document with a credential in it has already leaked that credential; storing it
        # would also put it in the sources file, where pixsrc never keeps one. Dropping it quietly would
        # hide the leak, so the whole document is refused.
        raise ConfigError(f"{origin}: {', '.join(dropped)}: looks like a credential; a shared document must "
                          "not carry one, so nothing was imported",
                          hint="delete those keys from the file and treat the secrets as leaked; credentials "
                               "are set per machine: pixsrc auth login SOURCE, pixsrc auth client PROVIDER")
    problems = [f"{origin}: {key}: unknown key" for key in doc if key not in _TOP_KEYS]
    warnings: list[str] = []
    entries: list[Entry] = []
    tables = doc.get("sources", {})
    if not isinstance(tables, dict):
        problems.append(f"{origin}: sources: must be a table of [sources.<id>] tables")
        tables = {}
    for source_id, table in tables.items():
        try:
            source = _parse_sources(Path(origin), {"sources": {source_id: table}})[source_id]
        except ConfigError as exc:
            problems.append(exc.message)
            continue
        where = f"{origin}: sources.{source_id}"
        source.name = source.name.strip()  # as `add` keeps it: names are compared without the spaces
        problems += [f"{where}.{key}: unknown field" for key in source.extra]
        auth, needs_credential = None, False
        if registry.is_installed(source.type):
            try:
                stype = registry.get(source.type)
            except UsageError as exc:
                warnings.append(f"{where}: {exc.message}; kept as it is, unchecked")
            else:
                try:
                    model = stype.validate(source.config, f"{where}.config")
                except ConfigError as exc:
                    problems.append(exc.message)
                    continue
                source.config = model.model_dump(mode="json", include=set(source.config))
                auth, needs_credential = stype.auth.kind, stype.auth.kind != "none" and stype.auth.required
        else:
            hint = registry.suggest(source.type, registry.known_ids(), "pixsrc types")
            warnings.append(f"{where}: type {source.type!r} is not installed; kept as it is, unchecked; {hint}")
        entries.append(Entry(source, "dest" in table, auth, needs_credential))

    providers: dict[str, dict[str, Any]] = {}
    provider_tables = doc.get("providers", {})
    if not isinstance(provider_tables, dict):
        problems.append(f"{origin}: providers: must be a table of [providers.<name>] tables")
        provider_tables = {}
    known = _known_providers() if provider_tables else {}
    for name, table in provider_tables.items():
        if not isinstance(table, dict):
            problems.append(f"{origin}: providers.{name}: must be a table")
            continue
        unknown = [key for key in table if key not in PROVIDER_KEYS]
        problems += [f"{origin}: providers.{name}.{key}: unknown setting" for key in unknown]
        if "client_id" in table and not (isinstance(table["client_id"], str) and table["client_id"].strip()):
            problems.append(f"{origin}: providers.{name}.client_id: must be a non-empty string")
            continue
        if name in known and not unknown:
            from pixsrc.oauth import settings_for

            try:
                settings_for(known[name], {name: table})
            except ConfigError as exc:
                problems.append(f"{origin}: {exc.message}")
                continue
        providers[name] = table
    if problems:
        raise ConfigError("; ".join(problems), hint=f"fix {origin} (or export it again); nothing was imported")
    return entries, providers, warnings


def _credential_keys(doc: dict[str, Any]) -> list[str]:
    """Where the document has a key that looks like a credential (ids and provider names are not keys)."""
    found = [key for key in doc if looks_secret(key)]
    for section in ("sources", "providers"):
        tables = doc.get(section)
        if isinstance(tables, dict):
            for name, table in tables.items():
                _clean(table, f"{section}.{name}", found)
    return found


def _known_providers() -> dict[str, OAuthProvider]:
    from pixsrc import registry

    types, _problems = registry.load_all()
    return {t.auth.oauth.name: t.auth.oauth for t in types if t.auth.oauth is not None}


def _merge(cfg: Config, entries: list[Entry], providers: dict[str, dict[str, Any]], policy: Policy, origin: str,
           warnings: list[str], *, dry_run: bool) -> ImportReport:
    """Add the entries and provider settings to ``cfg`` (in memory), conflicts resolved by ``policy``."""
    from pixsrc.config import now_utc

    stamp = now_utc()
    warnings = list(warnings)
    outcomes: list[SourceOutcome] = []
    for entry in entries:
        new = entry.source
        existing = cfg.sources.get(new.id)
        owner = owner_source.id if (owner_source := cfg.named(new.name)) is not None else None

        if existing is not None and settings_of(existing, entry.has_dest) == settings_of(new, entry.has_dest):
            outcomes.append(_outcome(entry, "skipped", existing.id, existing.name, "identical"))
        elif existing is None and owner is None:
            cfg.sources[new.id] = dataclasses.replace(new, created_at=stamp, updated_at=stamp, extra={})
            outcomes.append(_outcome(entry, "added", new.id, new.name))
        elif policy == "skip":
            reason = f"id {new.id!r} exists" if existing is not None else f"name taken by {owner!r}"
            outcomes.append(_outcome(entry, "skipped", new.id, new.name, reason))
        elif policy == "replace" and existing is not None:
            name = new.name if owner in (None, existing.id) else cfg.free_name(new.name)
            cfg.sources[new.id] = dataclasses.replace(
                new, name=name, dest=new.dest if entry.has_dest else existing.dest,
                created_at=existing.created_at, updated_at=stamp, extra=existing.extra)
            outcomes.append(_outcome(entry, "replaced", new.id, name, None if name == new.name else "name taken"))
            if existing.type != new.type:
                warnings.append(f"sources.{new.id}: was {existing.type!r}, now {new.type!r}: its stored credential "
                                f"and download history belong to the old type (pixsrc auth logout {new.id})")
        else:  # rename; or replace with the name, not the id, taken by another source
            source_id = new.id if existing is None else cfg.unique_id(new.id)
            name = new.name if owner is None else cfg.free_name(new.name)
            cfg.sources[source_id] = dataclasses.replace(new, id=source_id, name=name, created_at=stamp,
                                                         updated_at=stamp, extra={})
            reason = " and ".join(what for what, clash in (("id", existing), ("name", owner)) if clash) + " taken"
            outcomes.append(_outcome(entry, "renamed", source_id, name, reason))
    provider_outcomes = _merge_providers(cfg, providers, origin, warnings)
    return ImportReport(origin, cfg.path, dry_run, policy, outcomes, provider_outcomes, warnings)


def _outcome(entry: Entry, action: Action, source_id: str, name: str, reason: str | None = None) -> SourceOutcome:
    return SourceOutcome(action, source_id, name, entry.source.type, entry.source.id, entry.source.name, reason,
                         entry.auth, entry.needs_credential)


def _merge_providers(cfg: Config, providers: dict[str, dict[str, Any]], origin: str,
                     warnings: list[str]) -> list[ProviderOutcome]:
    """Add missing provider tables and keys; the user's own values always stay."""
    if not providers:
        return []
    current = cfg.document.setdefault("providers", {})
    if not isinstance(current, dict):
        raise ConfigError(f"{cfg.path}: providers: must be a table of [providers.<name>] tables")
    outcomes = []
    for name, table in providers.items():
        mine = current.setdefault(name, {})
        if not isinstance(mine, dict):
            raise ConfigError(f"{cfg.path}: providers.{name}: must be a table")
        added, kept = [], []
        for key, value in table.items():
            if key not in mine:
                mine[key] = value
                added.append(key)
                if key == "allow_insecure" and value is True:
                    warnings.append(f"providers.{name}.allow_insecure = true came from {origin}: sign-ins may "
                                    "now use plain http:// endpoints; remove it unless this network is trusted")
            elif mine[key] != value:
                kept.append(key)
                why = " (pixsrc does not switch your OAuth client; sign-ins keep using yours)" \
                    if key == "client_id" else ""
                warnings.append(f"providers.{name}.{key}: kept yours ({mine[key]!r}); {origin} has "
                                f"{value!r}{why}")
        outcomes.append(ProviderOutcome(name, added, kept))
    return outcomes
