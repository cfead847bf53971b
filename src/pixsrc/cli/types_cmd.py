"""``pixsrc types``: the installed source types and their fields."""

from __future__ import annotations

from typing import Annotated

import typer

from pixsrc.cli.common import handle_errors, print_json, print_table, warn


def register(app: typer.Typer) -> None:
    @app.command("types", epilog="Example: pixsrc types remote-gallery --json")
    @handle_errors
    def types_(
        type_id: Annotated[str | None, typer.Argument(metavar="TYPE", help="Show this type's fields.")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """List the source types (built-in and from plugins); with TYPE, its config fields."""
        from pixsrc import registry

        if type_id is not None:
            stype = registry.get(type_id)
            if json_out:
                print_json([stype.as_dict()])
                return
            auth = stype.auth
            print(f"{stype.id}: {stype.name} ({stype.category})\n  {stype.description}")
            scopes = f" scopes: {' '.join(auth.scopes)}" if auth.scopes else ""
            optional = "" if auth.required or auth.kind == "none" else " (optional)"
            print(f"  auth: {auth.kind}{optional}{' provider: ' + auth.provider if auth.provider else ''}{scopes}")
            print("  fields:")
            for spec in stype.fields():
                extra = "required" if spec.required else f"default: {spec.default!r}"
                choices = f" one of: {', '.join(spec.options)}" if spec.options else ""
                print(f"    {spec.key:16} {spec.type:8} {spec.label} ({extra}){choices}")
            return
        types, problems = registry.load_all()
        if json_out:
            print_json([t.as_dict() for t in types])
        else:
            print_table(["TYPE", "NAME", "CATEGORY", "AUTH", "DESCRIPTION"],
                        [[t.id, t.name, t.category, t.auth.kind, t.description] for t in types])
        for problem in problems:
            warn(f"warning: type {problem.type_id!r} ({problem.origin}) {problem.error}")
