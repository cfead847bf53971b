"""``pixsrc watch``: fetch sources when they are due, and within seconds of a change where the provider
can tell (Dropbox, Google Drive). The loop is ``pixsrc.watch``; this module parses and renders."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from pixsrc.cli.common import app_state, handle_errors, load, print_json, say, source_ids, warn

if TYPE_CHECKING:
    from pixsrc.config import Source
    from pixsrc.watch import Fetched

app = typer.Typer()


@app.command(epilog="Examples: pixsrc watch   # every enabled source with an interval\n\n"
                    "  pixsrc watch inbox client-drive --poll 1m\n\n"
                    "  pixsrc watch -q --json >> watch.jsonl")
@handle_errors
def watch(
    ctx: typer.Context,
    refs: Annotated[list[str] | None, typer.Argument(
        metavar="[SOURCE]...", help="Ids or names (default: every enabled source).",
        autocompletion=source_ids)] = None,
    poll: Annotated[str, typer.Option(
        "--poll", metavar="DURATION",
        help="How often to ask a provider that can only be polled for changes (Google Drive).")] = "30s",
    first_backoff: Annotated[str, typer.Option(
        "--backoff", metavar="DURATION",
        help="The wait after a failed fetch; it doubles with each failure in a row, up to 1h.")] = "1m",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Parallel downloads.")] = 8,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON object per fetch on stdout (JSON Lines).")] = False,
) -> None:
    """Stay in the foreground and fetch each source when its interval has passed, or as soon as it
    changes (Dropbox and Google Drive). Ctrl-C stops (exit 130), SIGTERM too (exit 0)."""
    from pixsrc.durations import parse_duration
    from pixsrc.schedule import MAX_BACKOFF
    from pixsrc.watch import Watch, WatchOptions, watchable

    every = parse_duration(poll, "--poll")
    wait = parse_duration(first_backoff, "--backoff")
    cfg = load(ctx)
    sources, warnings = watchable(cfg, refs or [])
    for message in warnings:
        warn(message)
    quiet = app_state(ctx).quiet
    options = WatchOptions(poll=every.total_seconds(), first_backoff=min(wait, MAX_BACKOFF), jobs=jobs)

    def on_fetch(event: Fetched) -> None:
        _show(event, json_out, quiet)

    say("watching " + ", ".join(_watching(cfg.default_interval, s) for s in sources) + "; Ctrl-C to stop")
    code = Watch(cfg, sources, options, on_fetch, warn).run()
    say("stopped" if code == 0 else "interrupted")
    if code:
        raise typer.Exit(code)


def _watching(default: str | None, source: Source) -> str:
    interval, origin = source.effective_interval(default)
    return f"{source.id} (every {interval}{', the default' if origin == 'defaults' else ''})"


def _show(event: Fetched, json_out: bool, quiet: bool) -> None:
    from pixsrc.durations import rfc3339

    report, after = event.report, event.after
    source_id = event.source.id
    if json_out:  # one line per fetch (JSON Lines), as it happens
        print_json({"schema": 1, "time": rfc3339(event.started), "trigger": event.trigger, **report.as_json(),
                    "dest": str(event.dest), "next_due": rfc3339(after.next_due)}, indent=None)
        sys.stdout.flush()
    next_try = rfc3339(after.next_due)
    if event.reason:
        warn(f"error: {source_id}: {event.reason.removeprefix(f'{source_id}: ')}; next try at {next_try}")
    elif report.status == "partial":
        first = report.errors[0] if report.errors else None
        detail = f" (first: {first['path']}: {first['error']})" if first else f" ({report.message})"
        warn(f"warning: {source_id}: {report.failed} failed{detail}; next try at {next_try}")
    if not quiet and not event.reason:  # a fetch that failed said so in its one line already
        from pixsrc.cli.fetch import summary

        say(f"{rfc3339(event.started)} ({event.trigger}) {summary(report, event.dest)}; next due {next_try}")
