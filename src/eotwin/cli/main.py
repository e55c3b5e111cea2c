"""The ``eotwin`` command: one Typer app per capability, and the single place errors become exit codes."""

from __future__ import annotations

import signal
import sys

import typer
from rich.markup import escape

from eotwin import __version__
from eotwin.cli import _common
from eotwin.cli.atmocorr import app as atmocorr_app
from eotwin.cli.ben import app as ben_app
from eotwin.cli.cache import app as cache_app
from eotwin.cli.deltatwin import app as deltatwin_app
from eotwin.cli.demo import demo_command
from eotwin.cli.pointcloud import app as pointcloud_app
from eotwin.cli.sample import sample_command
from eotwin.errors import EotwinError, Terminated
from eotwin.io.files import disk_full_error, disk_full_reason

app = typer.Typer(
    name="eotwin",
    help="Destination Earth Earth-observation workflows: point clouds, atmospheric correction, BigEarthNet, DeltaTwin.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        _common.out.print(f"eotwin {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _common.settings.verbosity = -1 if quiet else verbose
    _common.settings.debug = debug
    _common.configure_logging(_common.settings.verbosity)


app.command("sample")(sample_command)
app.command("demo")(demo_command)
# capability apps (each module imports its heavy libraries inside its commands, so --help stays fast)
app.add_typer(pointcloud_app, name="pointcloud")
app.add_typer(cache_app, name="cache")
app.add_typer(atmocorr_app, name="atmocorr")
app.add_typer(ben_app, name="ben")
app.add_typer(deltatwin_app, name="deltatwin")


def run(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line on stderr and a non-zero exit."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    previous = _on_sigterm_unwind()
    try:
        result = app(args=argv, standalone_mode=False)
    except EotwinError as exc:
        if debug:
            raise
        _common.err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _common.err.print("aborted")
        return 130
    except KeyboardInterrupt:
        _common.err.print("interrupted")
        return 130
    except Terminated:
        _common.err.print("terminated")
        return 143
    except OSError as exc:  # disk full, permission denied, vanished file: the user's environment, not a bug
        if debug:
            raise
        reason = disk_full_reason(exc)
        if reason:  # ENOSPC, EFBIG (a file-size limit), EDQUOT: say so, and what to do
            message = str(disk_full_error(exc.filename or "the output", reason))
            _common.err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            return 2
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""  # GDAL's errors carry no file name
        text = " ".join(str(exc.strerror or exc).split()) or type(exc).__name__
        _common.err.print(f"[bold red]error:[/] {escape(where)}{escape(text)}", highlight=False, soft_wrap=True)
        return 2
    except Exception as exc:  # the CLI is the one boundary: report, never a raw traceback
        if debug:
            raise
        kinds = {k.__name__ for k in type(exc).__mro__}  # typer vendors click: match its usage errors by name
        if "UsageError" in kinds and "NoArgsIsHelpError" not in kinds and hasattr(exc, "format_message"):
            # a bad option value is a user error like any other: one line, naming the option (scripts grep it)
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _common.err.print(f"[bold red]error:[/] {escape(' '.join(exc.format_message().split()))}{escape(where)}",
                              highlight=False, soft_wrap=True)
            return exc.exit_code
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):  # click/typer usage errors
            exc.show()
            return exc.exit_code
        if disk_full_reason(exc):  # a library's own error type (LMDB, GDAL) saying the disk is full
            line = f"disk full: {' '.join(str(exc).split())[:300]} (free some space or write elsewhere)"
            _common.err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            return 2
        _common.err.print(f"[bold red]error:[/] internal error: {type(exc).__name__}: {escape(str(exc))} "
                          "(run with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) else 0


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _on_sigterm_unwind():
    """SIGTERM raises :class:`Terminated` in the main thread, so every ``finally`` and staging clean-up runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def entry() -> None:  # pragma: no cover - console-script shim
    sys.exit(run())
