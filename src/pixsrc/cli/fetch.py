"""``pixsrc fetch``: list or download the assets of sources."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsrc.cli.common import app_state, handle_errors, load, print_json, say, source_ids, warn
from pixsrc.durations import human_size

if TYPE_CHECKING:
    from pixsrc.cli.progress import Tally
    from pixsrc.config import Config, Source
    from pixsrc.sync import Outcome, Report

app = typer.Typer()

Globs = Annotated[list[str] | None, typer.Option(
    metavar="GLOB", help="Repeatable or comma-separated: '*.{jpg,png}' (any folder), '2024/*' (that folder only), "
                         "'2024/**' (and below).")]


@app.command(epilog="Examples: pixsrc fetch client-assets --dest ~/assets\n\n"
                    "  pixsrc fetch --all --json -q > report.json\n\n"
                    "  pixsrc fetch --all -q -v 2>> fetch.log\n\n"
                    "  pixsrc fetch client-assets --list --json\n\n"
                    "  pixsrc fetch inbox --include '2024/**/*.{jpg,png}' --exclude 'tmp/**'")
@handle_errors
def fetch(
    ctx: typer.Context,
    refs: Annotated[list[str] | None, typer.Argument(metavar="[SOURCE]...", help="Ids or names.",
                                                     autocompletion=source_ids)] = None,
    all_enabled: Annotated[bool, typer.Option("--all", help="Every enabled source.")] = False,
    due: Annotated[bool, typer.Option(
        "--due", help="Only the (named, else enabled) sources whose interval has passed since their last "
                      "successful fetch: one cron line for all, e.g. */5 * * * * pixsrc fetch --due -q.")] = False,
    list_only: Annotated[bool, typer.Option("--list", help="List assets, download nothing.")] = False,
    dest: Annotated[str | None, typer.Option(
        "--dest", metavar="DIR", help="Download folder; beats a source's own dest (several: DIR/<id>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Parallel downloads.")] = 8,
    include: Globs = None,
    exclude: Globs = None,
    prune: Annotated[bool, typer.Option("--prune", help="Delete local files whose asset is gone.")] = False,
    max_delete: Annotated[int | None, typer.Option(
        "--max-delete", metavar="N", min=0,
        help="With --prune: delete at most N files (default: 100, or half the source if fewer).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace files changed locally.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for another fetch of a source to end.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="A line per asset fetched, updated, adopted, renamed, skipped, gone or pruned "
                                "(also with -q).")] = False,
) -> None:
    """Download new and changed assets (or --list them). Re-runs fetch only what changed."""
    from pixsrc.fetch import select_sources
    from pixsrc.paths import check_globs

    quiet = app_state(ctx).quiet

    # one syntax with the config's lists: split on commas outside {...}, checked before any listing
    include, exclude = check_globs(include or [], "--include"), check_globs(exclude or [], "--exclude")
    cfg = load(ctx)
    sources = select_sources(cfg, refs or [], all_enabled or (due and not refs))
    if not sources:
        say(f"no enabled sources in {cfg.path}; see `pixsrc list`")
    not_due: list[dict[str, Any]] = []
    if due:  # schedule.py has the rules; the sources not due are named, and listed in --json
        from pixsrc.config import state_dir
        from pixsrc.schedule import describe, due_sources

        sources, waiting = due_sources(cfg, sources, state_dir())
        for plan in waiting:
            say(describe(plan))
        not_due = [plan.as_json() for plan in waiting]
    if list_only:
        _list(sources, include or [], exclude or [], json_out, cfg.providers())
        return
    _fetch(cfg, sources, dest, dry_run, jobs, include or [], exclude or [], prune, force, wait, json_out,
           quiet, max_delete, verbose, not_due=not_due)


def _list(sources: list[Source], include: list[str], exclude: list[str], json_out: bool,
          providers: dict[str, Any]) -> None:
    from pixsrc import registry
    from pixsrc.fetch import list_assets
    from pixsrc.paths import sanitize_path

    for source in sources:
        registry.of(source)
    out = sys.stdout
    for source in sources:
        def warn_about(message: str, source_id: str = source.id) -> None:
            warn(f"warning: {source_id}: {message}")

        for asset in list_assets(source, include, exclude, providers, warn=warn_about):
            path = sanitize_path(asset.path)
            if json_out:
                out.write(json.dumps({
                    "source": source.id, "id": asset.id, "path": path, "size": asset.size,
                    "modified": asset.modified.isoformat().replace("+00:00", "Z") if asset.modified else None,
                    "version": asset.version, "media_type": asset.media_type,
                }, ensure_ascii=False) + "\n")
            else:
                size = human_size(asset.size) if asset.size is not None else "?"
                out.write(f"{source.id}\t{size:>9}\t{path}\n")


def _fetch(cfg: Config, sources: list[Source], dest: str | None, dry_run: bool, jobs: int, include: list[str],
           exclude: list[str], prune: bool, force: bool, wait: bool, json_out: bool, quiet: bool,
           max_delete: int | None = None, verbose: bool = False, not_due: list[dict[str, Any]] | None = None) -> None:
    from pixsrc.cli.progress import asset_line, for_terminal
    from pixsrc.fetch import destination, empty_warning, exit_code, fetch_source, install_sigterm_handler
    from pixsrc.sync import Options

    install_sigterm_handler()
    several = len(sources) > 1
    reports = []
    print_plan = dry_run and not json_out
    asset_lines = verbose and not dry_run  # a dry run lists its changes on stdout already
    for source in sources:
        options = Options(dest=destination(cfg, source, dest, several), jobs=jobs, include=include,
                          exclude=exclude, dry_run=dry_run, prune=prune, force=force, max_delete=max_delete)
        progress = None if quiet else for_terminal(source.id)

        def on_outcome(outcome: Outcome, progress: Tally | None = progress, source_id: str = source.id) -> None:
            if print_plan:
                _print_dry_run(outcome)
            if asset_lines and (line := asset_line(source_id, outcome)):
                if progress is not None:
                    progress.print(line)
                else:
                    warn(line)
            if progress is not None:
                progress.outcome(outcome)

        hooks: dict[str, Any] = {} if progress is None else {
            "on_bytes": progress.add_bytes, "on_plan": progress.plan, "on_found": progress.found,
            "on_start": progress.start}
        with progress or contextlib.nullcontext():  # no progress: no hooks, nothing to count
            report, reason = fetch_source(source, options, wait=wait, providers=cfg.providers(),
                                          on_outcome=on_outcome, **hooks)
        reports.append(report)
        if reason:  # controllers name their source too: say it once
            warn(f"error: {source.id}: {reason.removeprefix(f'{source.id}: ')}")
        elif report.kept:  # exit 5 even with -q: a cron log must say why nothing was pruned
            warn(f"warning: {source.id}: {report.message}")
        if not reason and (empty := empty_warning(source, report.found, report.listed, include, exclude)):
            warn(f"warning: {source.id}: {empty}")  # even with -q: a cron log must say why nothing came
        say(summary(report, options.dest))  # say() is silent under -q
        if not asset_lines and (not quiet or report.failed):  # -v named each of them already
            for error in report.errors[:20]:
                warn(f"  {error['path']}: {error['error']}")
            if len(report.errors) > 20:
                warn(f"  ... and {len(report.errors) - 20} more (see --json)")
        if report.status == "interrupted":
            break
    if json_out:
        print_json({"schema": 1, "sources": [*(r.as_json() for r in reports), *(not_due or [])]})
    code = exit_code(reports)
    if code:
        raise typer.Exit(code)


def _print_dry_run(outcome: Outcome) -> None:
    if outcome.action in ("downloaded", "updated", "pruned", "renamed"):
        print(f"would {'fetch' if outcome.action == 'downloaded' else outcome.action.rstrip('d')}: {outcome.path}")


def summary(report: Report, dest: Path) -> str:
    """The one line a fetch of a source ends with (fetch and watch)."""
    verb = "would fetch" if report.dry_run else "fetched"
    parts = [f"{report.listed} listed", f"{report.downloaded} new", f"{report.updated} updated",
             f"{report.unchanged} unchanged"]
    if report.conflicts:
        parts.append(f"{report.conflicts} conflicts")
    if report.failed:
        parts.append(f"{report.failed} failed")
    if report.deleted or report.pruned:
        parts.append(f"{report.deleted} deleted at source, {report.pruned} pruned")
    rate = ""
    if report.bytes and report.seconds > 0 and not report.dry_run:
        rate = f" ({human_size(report.bytes / report.seconds)}/s)"  # the average over the whole run, listing included
    return (f"{report.source}: {report.status}: {', '.join(parts)}; {verb} {human_size(report.bytes)} "
            f"in {report.seconds:.1f} s{rate} -> {dest}")
