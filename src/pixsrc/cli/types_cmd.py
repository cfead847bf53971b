"""``pixsrc types``: the installed source types, where each comes from, and their fields."""

from __future__ import annotations

from typing import Annotated

import typer

from pixsrc.cli.common import handle_errors, print_json, print_table, warn

app = typer.Typer()


@app.command("types", epilog="Example: pixsrc types remote-gallery --json")
@handle_errors
def types_(
    type_id: Annotated[str | None, typer.Argument(metavar="TYPE", help="Show this type's fields.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the source types (built-in and from plugins, with the package of each); with TYPE, its fields."""
    from pixsrc import registry

    if type_id is not None:
        found = registry.installed(type_id)
        if json_out:
            print_json([found.as_dict()])
            return
        stype, auth = found.type, found.type.auth
        print(f"{stype.id}: {stype.name} ({stype.category})\n  {stype.description}")
        print(f"  origin: {found.origin.label}")
        scopes = f" scopes: {' '.join(auth.scopes)}" if auth.scopes else ""
        optional = "" if auth.required or auth.kind == "none" else " (optional)"
        print(f"  auth: {auth.kind}{optional}{' provider: ' + auth.provider if auth.provider else ''}{scopes}")
        print("  fields:")
        for spec in stype.fields():
            extra = "required" if spec.required else f"default: {spec.default!r}"
            choices = f" one of: {', '.join(spec.options)}" if spec.options else ""
            print(f"    {spec.key:16} {spec.type:8} {spec.label} ({extra}){choices}")
        return
    types, problems = registry.installed_all()
    if json_out:
        print_json([t.as_dict() for t in types])
    else:
        print_table(["TYPE", "NAME", "CATEGORY", "AUTH", "ORIGIN", "DESCRIPTION"],
                    [[t.type.id, t.type.name, t.type.category, t.type.auth.kind, t.origin.label,
                      t.type.description] for t in types])
    for problem in problems:
        warn(f"warning: type {problem.type_id!r} ({problem.origin}) {problem.error}")
