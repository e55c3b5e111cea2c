"""``eotwin deltatwin``: validate a DeltaTwin component, and run one offline without Docker."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eotwin.cli import _common

app = typer.Typer(help="DeltaTwin components: validate them, run them offline.", no_args_is_help=True)


@app.command("validate")
def validate_command(
    component: Path = typer.Argument(..., help="Component folder (manifest.json, workflow.yml, models/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON on stdout."),
    components: list[Path] = typer.Option(
        [], "--components", "-c", help="Folder of local components, to check the ports of dependencies (repeatable)."
    ),
) -> None:
    """Check the deltaVersion 1.4 schema and what it misses (types, refs, ports, cycles, placeholders, globs).

    Exits 0 when there is no error (warnings allowed), 1 otherwise.
    """
    from eotwin.deltatwin.validate import validate_component
    from eotwin.errors import EotwinError

    if not component.is_dir():
        raise EotwinError(f"{component}: not a component folder")
    report = validate_component(component, components=tuple(components))
    if as_json:
        _common.out.print_json(json.dumps(report.to_dict()))
    else:
        for finding in report.findings:
            style = "bold red" if finding.severity == "error" else "yellow"
            _common.out.print(f"[{style}]{finding.severity}[/]: {_where(finding)}: {finding.message}",
                              highlight=False, soft_wrap=True)
        verdict = "[green]valid[/]" if report.ok else "[bold red]invalid[/]"
        _common.out.print(f"{component}: {verdict} ({len(report.errors)} errors, {len(report.warnings)} warnings)",
                          highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(code=1)


def _where(finding) -> str:
    from rich.markup import escape

    return escape(f"{finding.file}:{finding.key}" if finding.key else finding.file)
