"""``pixsrc stats``: runs, failures, bytes and durations per source, from the run history."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from pixsrc.cli.common import handle_errors, load, print_json, print_table, say
from pixsrc.durations import format_duration, human_size, parse_duration

app = typer.Typer()

CHART_DAYS = 31  # one bar a line: a month still fits a terminal


@app.command(epilog="Examples: pixsrc stats --since 7d\n\n  pixsrc stats client-assets --json")
@handle_errors
def stats(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(metavar="[SOURCE]", help="Id or name (default: all).")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="DURATION", help="Only runs started in the last 30m, 6h, 7d, 2w, ... (default: all).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Runs, failures, assets, bytes and durations per source, from the history fetch records."""
    from pixsrc.stats import collect

    window = parse_duration(since, "--since") if since is not None else None
    data = collect(load(ctx), ref, window)
    if json_out:
        print_json(data)
        return
    if not data["sources"]:
        say("no sources and no run history yet; add a source: pixsrc add")
        return
    _table(data)
    if sys.stdout.isatty() and data["days"]:
        _chart(data)


def _table(data: dict[str, Any]) -> None:
    now = datetime.fromisoformat(data["until"])
    rows = []
    for s in data["sources"]:
        failures = ", ".join(f"{n} {status}" for status, n in s["by_status"].items() if status != "ok")
        last, success = s["last_run"], s["last_success"]
        rows.append([
            s["id"] if s["configured"] else f"{s['id']} (removed)",
            str(s["runs"]),
            str(s["successes"]),
            failures or "-",
            str(s["assets"]["downloaded"] + s["assets"]["updated"]),
            human_size(s["bytes"]),
            format_duration(s["mean_seconds"]) if s["mean_seconds"] is not None else "-",
            f"{_ago(now, last['at'])}, {last['status']}, took {format_duration(last['seconds'])}" if last else "never",
            _ago(now, success["at"]) if success else "never",
        ])
    print_table(["SOURCE", "RUNS", "OK", "FAILED", "FETCHED", "BYTES", "MEAN", "LAST RUN", "LAST SUCCESS"], rows)
    errors = [s for s in data["sources"] if s["last_error"]]
    if errors:
        sys.stdout.write("\n")
    for s in errors:
        error = s["last_error"]
        sys.stdout.write(f"{s['id']}: last error {_ago(now, error['at'])} ({error['status']}): "
                         f"{error['message'] or 'no message recorded'}\n")


def _chart(data: dict[str, Any]) -> None:
    from rich.bar import Bar
    from rich.console import Console
    from rich.table import Table

    console = Console()
    days = data["days"][-CHART_DAYS:]
    largest = max(1, *(d["bytes"] for d in days))
    grid = Table.grid(padding=(0, 1))
    grid.add_column()
    grid.add_column(width=max(10, min(50, console.width - 24)))
    grid.add_column(justify="right")
    for day in days:
        grid.add_row(day["date"], Bar(largest, 0, day["bytes"], color="cyan"), human_size(day["bytes"]))
    shown = "" if len(days) == len(data["days"]) else f", the last {len(days)} days"
    total = human_size(sum(d["bytes"] for d in days))
    console.print()
    console.print(f"[bold]Bytes fetched per day[/bold] ({total} in all; local dates{shown})", highlight=False)
    console.print(grid)


def _ago(now: datetime, iso: str) -> str:
    span = now - datetime.fromisoformat(iso)
    return "just now" if span.total_seconds() < 1 else format_duration(span) + " ago"
