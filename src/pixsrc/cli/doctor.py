"""``pixsrc doctor``: check this machine's setup (paths, config, keyring, credentials, network,
destinations, clock, locks), one line per check, each problem with its fix."""

from __future__ import annotations

from typing import Annotated

import typer

from pixsrc.cli.common import app_state, handle_errors, print_json, print_table, say

app = typer.Typer()


@app.command(epilog="Examples: pixsrc doctor\n\n"
                    "  pixsrc doctor client-assets --json\n\n"
                    "  env -i HOME=$HOME PATH=/usr/bin:/bin pixsrc doctor   # as cron would run it")
@handle_errors
def doctor(
    ctx: typer.Context,
    source_ref: Annotated[str | None, typer.Argument(metavar="SOURCE", help="Only this source's checks.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check that fetching will work here: exit 0 (warnings too), 2 config, 3 credentials, 4 network or disk."""
    from pixsrc import doctor as core

    report = core.run(app_state(ctx).config_override, source_ref)
    if json_out:
        print_json(report.as_json())
    else:
        print_table(["STATUS", "CHECK", "SOURCE", "DETAIL"],  # details carry network libraries' words
                    [[c.status, c.check, c.source or "-", c.detail + (f"; fix: {c.fix}" if c.fix else "")]
                     for c in report.checks], patterns=True)
    counts = {status: sum(c.status == status for c in report.checks) for status in ("ok", "warn", "fail")}
    say(f"{counts['ok']} ok, {counts['warn']} warning{'s' if counts['warn'] != 1 else ''}, "
        f"{counts['fail']} failure{'s' if counts['fail'] != 1 else ''}")
    raise typer.Exit(report.exit_code)
