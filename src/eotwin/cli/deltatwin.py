"""``eotwin deltatwin``: validate a DeltaTwin component, and run one offline without Docker."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from eotwin.cli import _common

app = typer.Typer(help="DeltaTwin components: build, validate and run them offline.", no_args_is_help=True)


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
            _common.out.print(f"[{style}]{finding.severity}[/]: {_where(finding)}: {escape(finding.message)}",
                              highlight=False, markup=True)
        verdict = "[green]valid[/]" if report.ok else "[bold red]invalid[/]"
        _common.out.print(f"{escape(str(component))}: {verdict} ({len(report.errors)} errors, "
                          f"{len(report.warnings)} warnings)", highlight=False, markup=True)
    if not report.ok:
        raise typer.Exit(code=1)


def _where(finding) -> str:

    return escape(f"{finding.file}:{finding.key}" if finding.key else finding.file)


@app.command("run")
def run_command(
    component: Path = typer.Argument(..., help="Component folder to run."),
    inputs_file: Path | None = typer.Option(None, "--inputs", "--input-file", "-i", help="inputs_file.json: {name: {type, value}}."),
    run_dir: Path | None = typer.Option(None, "--output", "-o",
                                        help="New run folder (default deltatwin-runs/<name>-<time>)."),
    components: list[Path] = typer.Option([], "--components", "-c",
                                          help="Folder of local components for dependencies (repeatable)."),
    no_limits: bool = typer.Option(False, "--no-limits", help="Do not enforce hardwareRequirements (memory, CPU)."),
    timeout: float | None = typer.Option(None, "--node-timeout", min=1, help="Stop a model after this many seconds."),
) -> None:
    """Run a component offline (no Docker): each model in its own folder and Python environment, with limits.

    Writes per-node logs and run.json (inputs with secrets masked, timings, peak memory, output checksums).
    """
    from eotwin.deltatwin.runner import RunOptions, run_component
    from eotwin.deltatwin.runreport import RECORD_FILE
    from eotwin.errors import EotwinError

    options = RunOptions(component=component, inputs_file=inputs_file, run_dir=run_dir, components=components,
                         enforce_limits=not no_limits, node_timeout_s=timeout)
    result = run_component(options, progress=_common.progress())
    _print_nodes(result.record["nodes"], "")
    for name, out in result.outputs.items():
        _common.out.print(f"output {name}: {out.get('path', out.get('value'))} ({out.get('size', '?')} bytes, "
                          f"sha256 {str(out.get('sha256', ''))[:12]})", highlight=False, soft_wrap=True)
    _common.out.print(f"record: {result.run_dir / RECORD_FILE}", highlight=False, soft_wrap=True)
    if not result.ok:
        raise EotwinError(f"run failed: {result.record.get('error')}", exit_code=1)


def _print_nodes(nodes: list[dict], indent: str) -> None:

    colours = {"succeeded": "green", "failed": "bold red", "skipped": "yellow"}
    for node in nodes:
        if not node["ref"].startswith(("models.", "dependencies.")):
            continue
        peak = node.get("peak_rss_bytes")
        extra = f" {node['duration_s']:.2f} s" if node.get("duration_s") is not None else ""
        extra += f", peak {peak / 2**20:.0f} MiB" if peak else ""
        status = node["status"]
        _common.out.print(f"{indent}[{colours.get(status, 'white')}]{status:9s}[/] {escape(node['id'])} "
                          f"({escape(node['ref'])}){extra}", highlight=False, markup=True)
        _print_nodes(node.get("nodes", []), indent + "  ")


@app.command("build")
def build_command(
    names: list[str] = typer.Argument(None, help="Components to build (default: every one this eotwin can run); "
                                                 "see --list."),
    output: Path = typer.Option(Path("components"), "--output", "-o", help="Folder to write the components into."),
    wheel: Path | None = typer.Option(None, "--wheel", help="Ship this eotwin wheel instead of building one."),
    sizing: Path | None = typer.Option(None, "--sizing", help="Measured peaks to size ram from (JSON written by "
                                                              "--measure; default: the figures shipped with eotwin)."),
    measure: Path | None = typer.Option(None, "--measure", help="Run the components on the sample scene, write the "
                                                                "measured peaks to this JSON and size ram from them."),
    list_only: bool = typer.Option(False, "--list", help="List the known components and what each still needs."),
    deltatwin_cli: bool = typer.Option(False, "--deltatwin-cli", help="Also check each with deltatwin-cli's own "
                                                                      "validation (needs .venv-deltatwin)."),
) -> None:
    """Write ready-to-publish DeltaTwin components (manifest.json, workflow.yml, models/ with eotwin's wheel and
    pinned requirements, inputs_file.json, README) for the eotwin pipelines, and validate each.
    """
    from eotwin.deltatwin.blueprints import available
    from eotwin.deltatwin.build import BuildOptions, build_components
    from eotwin.deltatwin.sizing import load_sizing, measure_components, merge_sizing
    from eotwin.io.files import write_json_atomic

    if list_only:
        for name, lacking in available().items():
            state = "[green]buildable[/]" if not lacking else f"[yellow]needs {'; '.join(lacking)}[/]"
            _common.out.print(f"{name}: {state}", highlight=False, soft_wrap=True)
        return
    options = BuildOptions(names=list(names or []), output=output, wheel=wheel, sizing=sizing)
    built = build_components(options, progress=_common.progress())
    if measure is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="eotwin-measure-") as tmp:
            doc = measure_components(output, built, Path(tmp), progress=_common.progress())
        # keep figures measured elsewhere (the live component's, from its test; full tiles, from benchmarks/memory.py)
        write_json_atomic(measure, merge_sizing(load_sizing(sizing), doc))
        _common.err.print(f"measured peaks written to {measure}; sizing the components from them",
                          highlight=False, soft_wrap=True)
        built = build_components(BuildOptions(names=options.names, output=output, wheel=wheel, sizing=measure))
    for b in built:
        sized = "; ".join(f"{m}: {note}" for m, note in b.sizing.items()) or "no model (dependencies only)"
        _common.out.print(f"{b.name}: {b.path} ({sized})", highlight=False, soft_wrap=True)
    if deltatwin_cli:
        from eotwin.deltatwin.reference import deltatwin_cli_python, deltatwin_cli_verdicts
        from eotwin.errors import EotwinError

        python = deltatwin_cli_python()
        if python is None:
            raise EotwinError("no .venv-deltatwin: run scripts/setup_deltatwin_cli.sh first")
        verdicts = deltatwin_cli_verdicts([b.path for b in built], python)
        for v in verdicts:
            state = "[green]ok[/]" if v["ok"] else f"[bold red]rejected[/] {'; '.join(v['messages'])[:300]}"
            _common.out.print(f"deltatwin-cli: {Path(v['folder']).name}: {state}", highlight=False, soft_wrap=True)
        if not all(v["ok"] for v in verdicts):
            raise EotwinError("deltatwin-cli rejects a generated component", exit_code=1)
