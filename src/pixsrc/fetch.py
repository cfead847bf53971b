"""Running fetches: pick sources, resolve destinations, open controllers, lock, run, record.

The CLI calls into this module; the engine (sync.py) knows nothing about config, locks or
credentials.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pixsrc import __version__
from pixsrc.config import Config, Source, state_dir
from pixsrc.errors import (
    EXIT_AUTH,
    EXIT_BUSY,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    AuthRequired,
    PixsrcError,
    SourceUnavailable,
    UsageError,
    worst,
)
from pixsrc.locks import FileLock
from pixsrc.state import State
from pixsrc.sync import Options, Outcome, Report, SyncRun
from pixsrc.types import Asset, Controller, MemoryCache, SourceCache, SourceContext

# A run's exit code is that of its most severe source (errors.SEVERITY).
STATUS_EXIT = {"error": EXIT_INTERNAL, "interrupted": EXIT_INTERRUPTED, "invalid": EXIT_USAGE, "auth": EXIT_AUTH,
               "unavailable": EXIT_UNAVAILABLE, "busy": EXIT_BUSY, "partial": EXIT_PARTIAL, "ok": EXIT_OK}


def exit_code(reports: list[Report]) -> int:
    return worst(STATUS_EXIT[r.status] for r in reports)


def select_sources(config: Config, refs: list[str], all_enabled: bool) -> list[Source]:
    if refs and all_enabled:
        raise UsageError("name sources or pass --all, not both")
    if all_enabled:
        return [s for s in config.sources.values() if s.enabled]
    if not refs:
        raise UsageError("which sources? name them (see `pixsrc list`) or pass --all")
    chosen: dict[str, Source] = {}
    for ref in refs:
        source = config.find(ref)
        if not source.enabled:
            raise UsageError(f"source {source.id!r} is disabled", hint=f"run: pixsrc enable {source.id}")
        chosen[source.id] = source
    return list(chosen.values())


def destination(config: Config, source: Source, cli_dest: str | None, several: bool) -> Path:
    """Where a source's files go, first match wins: ``--dest`` (``DIR/<id>`` with several sources),
    the source's own ``dest``, ``defaults.dest/<id>``, the pictures folder. A flag beats the config,
    as everywhere else on the command line."""
    if cli_dest:
        base = Path(cli_dest).expanduser()
        return base / source.id if several else base
    if source.dest:
        return Path(source.dest).expanduser()
    if config.default_dest:
        return Path(config.default_dest).expanduser() / source.id
    from platformdirs import user_pictures_dir

    return Path(user_pictures_dir()) / "pixsrc" / source.id


def _warn(source_id: str) -> Callable[[str], None]:
    def warn(message: str) -> None:
        from pixsrc.redact import redact

        print(redact(f"warning: {source_id}: {message}"), file=sys.stderr)

    return warn


def open_controller(source: Source, jobs: int, providers: dict[str, Any] | None = None,
                    cache: SourceCache | None = None,
                    cancel: threading.Event | None = None, *,
                    secret: str | None = None) -> tuple[Controller, SourceContext]:
    """The source's controller. ``secret``: use this API key instead of the stored one (`auth rotate`
    checks a new key before it replaces the old one)."""
    from pixsrc import registry

    stype = registry.of(source)
    model = stype.validate(source.config, f"sources.{source.id}.config")
    auth = settings = None
    if stype.auth.kind == "oauth2" and stype.auth.oauth is not None:
        from pixsrc import oauth

        settings = oauth.settings_for(stype.auth.oauth, providers or {})
        auth = oauth.OAuthSession(source.id, settings, warn=_warn(source.id))

    def get_secret() -> str | None:
        if stype.auth.kind == "none":
            return None
        if secret is not None:
            return secret
        from pixsrc import tokens

        try:
            credential = tokens.get(source.id, optional=not stype.auth.required)
        except tokens.KeyringUnavailable as exc:
            if stype.auth.required:
                raise
            # an optional credential (a public gallery) must not need a keyring: cron on a server
            # has none. Say so and go on; a server that does want the key answers 401 -> exit 3.
            _warn(source.id)(f"{exc.message}; going on without a credential ({exc.hint})")
            return None
        if credential is None and stype.auth.required:
            raise AuthRequired(f"source {source.id!r} has no stored credential",
                               hint=f"run: pixsrc auth login {source.id}")
        return credential.value if credential else None

    context = SourceContext(source.id, source.name, model, jobs=jobs, get_secret=get_secret,
                            user_agent=f"pixsrc/{__version__}", auth=auth, provider=settings,
                            cache=cache or MemoryCache(), warn=_warn(source.id),
                            cancel=cancel or threading.Event())
    return stype.factory(context), context


def list_assets(source: Source, include: list[str], exclude: list[str],
                providers: dict[str, Any] | None = None,
                warn: Callable[[str], None] | None = None) -> Iterator[Asset]:
    """The source's assets that pass the filters; ``warn`` hears it when none did (see empty_warning)."""
    from pixsrc.paths import selected

    controller, _ = open_controller(source, jobs=8, providers=providers)
    found = kept = 0
    try:
        for asset in controller.list_assets():
            found += 1
            if selected(asset.path, include, exclude):
                kept += 1
                yield asset
    finally:
        controller.close()
    message = empty_warning(source, found, kept, include, exclude)
    if message and warn is not None:
        warn(message)


def empty_warning(source: Source, found: int, kept: int, include: list[str], exclude: list[str]) -> str | None:
    """What to tell the person when a completed listing leaves nothing to fetch (None: something was).

    ``found`` is what the source listed (after its own config filters), ``kept`` what --include and
    --exclude left of it. "ok: 0 listed" alone reads like success; an unmounted share, a typo in a
    glob or a URL that names a file should not look like a quiet day."""
    import shlex

    if kept:
        return None
    if found and (include or exclude):
        flags = " ".join([*(f"--include {shlex.quote(p)}" for p in include),
                          *(f"--exclude {shlex.quote(p)}" for p in exclude)])
        return (f"{flags} left 0 of {found} listed assets; '*' stays inside one folder, '**' crosses "
                "folders (see pixsrc fetch --help)")
    own = [(key, values) for key in ("include", "exclude")
           if isinstance(values := source.config.get(key), list) and values]
    if own:
        shown = " and ".join(f"{key} " + ", ".join(f"'{p}'" for p in values) for key, values in own)
        return f"nothing listed after the source's own {shown}; check them: pixsrc show {source.id}"
    return (f"nothing listed at the source (is it empty, or is its path or URL wrong?); check its settings: "
            f"pixsrc show {source.id}")


def fetch_source(source: Source, options: Options, *, wait: bool, providers: dict[str, Any] | None = None,
                 on_outcome: Callable[[Outcome], None] = lambda o: None,
                 on_bytes: Callable[[int], None] | None = None,
                 on_plan: Callable[[int, int], None] | None = None,
                 on_found: Callable[[int], None] | None = None,
                 on_start: Callable[[str, int | None], None] | None = None) -> tuple[Report, str | None]:
    """Fetch one source; returns its report and, when it ended early, the one-line reason.

    The ``on_*`` hooks are SyncRun's (progress: assets found, the plan, transfers started, bytes).

    Ctrl-C ends the run with status "interrupted" (what finished is recorded); the caller stops there.
    """
    report = Report(source.id, dry_run=options.dry_run)
    root = state_dir()
    lock = FileLock(root / "locks" / f"{source.id}.lock")
    if not lock.acquire(blocking=wait):
        report.status = "busy"
        report.message = (f"another pixsrc is fetching {source.id!r} right now "
                          "(wait for it, or pass --wait to queue behind it)")
        return report, report.message
    started = time.time()
    state = State(root / "state.db")
    reason: str | None = None
    try:
        cache = state.cache(source.id)
        cancel = threading.Event()
        controller, context = open_controller(source, options.jobs, providers, cache, cancel)
        try:
            limit = context.provider.rate_limit() if context.provider is not None else None
            run = SyncRun(source.id, controller, state, options, on_bytes=on_bytes, on_plan=on_plan,
                          on_found=on_found, on_start=on_start, cancel=cancel, limit=limit,
                          user_agent=context.user_agent)
            try:
                for outcome in run:
                    on_outcome(outcome)
            finally:
                report = run.report
        finally:
            controller.close()
        report.status = "partial" if report.failed or report.kept else "ok"
        if not options.dry_run:
            cache.commit()  # the listing completed: cursors and snapshots may move on
    except KeyboardInterrupt:
        report.status = "interrupted"
        reason = report.message = "interrupted; run again to resume"
    except PixsrcError as exc:
        report.status = "invalid"
        if isinstance(exc, AuthRequired):
            report.status = "auth"
        elif isinstance(exc, SourceUnavailable):
            report.status = "unavailable"
        reason = report.message = _describe(exc)
    except Exception as exc:  # a bug: the history must not call this run a success (fetch --due trusts it)
        report.status = "error"
        report.message = f"internal error: {type(exc).__name__}"
        raise
    finally:
        if not options.dry_run:
            state.add_run(source.id, started, report.status, STATUS_EXIT[report.status], report.__dict__)
        state.close()
        lock.release()
    return report, reason


def _describe(exc: PixsrcError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def install_sigterm_handler() -> None:
    """cron and CI stop jobs with SIGTERM: treat it like Ctrl-C so finished assets are recorded."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if os.name != "nt":
        signal.signal(signal.SIGTERM, handler)
