"""The registry of the commands' option models (eotwin.commands) and the Typer app agree, option for option.

The DeltaTwin builder learns from the registry which commands and options exist; it must never import the CLI
(an adapter reaching into the other adapter), so this test is what keeps the two descriptions in step.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from pydantic_core import PydanticUndefined

from eotwin.cli.main import app
from eotwin.commands import COMMANDS, command_flags
from eotwin.deltatwin.blueprints import BLUEPRINTS

# CLI defaults given as the text the command parses (the model holds the parsed value)
PARSED_DEFAULTS = {("pointcloud", "build"): {"mask_exclude", "stretch_range"}}


def _command(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _long_flags(param) -> set[str]:
    return {o for o in (*param.opts, *getattr(param, "secondary_opts", ())) if o.startswith("--")}


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_cli_option_is_in_the_model_and_back(path):
    entry = COMMANDS[path]
    params = _command(path).params
    cli_options = [p for p in params if p.param_type_name == "option"]
    cli_flags = set().union(*(_long_flags(p) for p in cli_options))
    assert cli_flags == entry.all_flags(), (
        f"only on the CLI: {sorted(cli_flags - entry.all_flags())}; "
        f"only in the model: {sorted(entry.all_flags() - cli_flags)}")
    arguments = [(p.metavar or p.name).lower() for p in params if p.param_type_name == "argument"]
    assert arguments == list(entry.arguments)
    fields = entry.fields()
    assert set(entry.arguments) <= set(fields)
    by_flag = {flag: name for name, flags in entry.option_flags().items() for flag in flags}
    for param in cli_options:
        name = by_flag[param.opts[0] if param.opts[0].startswith("--") else param.opts[1]]
        default = fields[name].default
        if param.default is None or default is PydanticUndefined or name in PARSED_DEFAULTS.get(path, ()):
            continue
        assert param.default == default, f"{path} {name}: CLI default {param.default!r}, model {default!r}"


def test_components_run_only_registered_commands_and_options():
    flags = command_flags()
    for make in BLUEPRINTS.values():
        for need in make().requires:
            path = tuple(p for p in need if not p.startswith("-"))
            assert path in flags, f"{make().name} runs eotwin {' '.join(path)}, which the registry does not hold"
            assert {p for p in need if p.startswith("-")} <= flags[path]


def test_deltatwin_never_imports_the_cli():
    code = ("import sys, eotwin.deltatwin.build, eotwin.deltatwin.runner, eotwin.deltatwin.validate, "
            "eotwin.deltatwin.blueprints as b; b.available(); "
            "print(sorted(m for m in sys.modules if m.startswith('eotwin.cli')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_live_mode_runs_from_the_model_the_component_fills(monkeypatch, tmp_path):
    """``pointcloud build --bbox`` builds :class:`PointcloudLiveOptions` (the registry's model) from its flags and
    runs from it: the model is what the CLI and the DeltaTwin component share, not a parallel argument list."""
    from eotwin.cli import pointcloud as cli_pointcloud
    from eotwin.cli.main import run
    from eotwin.commands import PointcloudLiveOptions

    seen = []
    monkeypatch.setattr(cli_pointcloud, "_build_live", lambda live, output, common, as_json: seen.append(live))
    secret = tmp_path / "secret"
    secret.write_text("not-a-real-secret\n")
    code = run(["-q", "pointcloud", "build", "--bbox", "10,46,10.1,46.1", "--date", "2024-07-01/2024-07-31",
                "--max-cloud", "35", "--tile-size", "5000", "--workers", "3", "--s3-secret-key-file", str(secret),
                "-o", str(tmp_path / "a.laz")])
    assert code == 0 and len(seen) == 1
    live = seen[0]
    assert isinstance(live, PointcloudLiveOptions)
    assert (live.bbox, live.date, live.max_cloud, live.tile_size, live.workers) == (
        "10,46,10.1,46.1", "2024-07-01/2024-07-31", 35.0, 5000.0, 3)
    assert live.s3_secret_key == "not-a-real-secret" and live.s3_secret_key_file == secret
    assert "not-a-real-secret" not in repr(live) + str(live)
