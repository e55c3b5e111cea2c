import subprocess
import sys

from eotwin.cli.main import run


def test_help_lists_commands(capsys):
    assert run(["--help"]) == 0
    assert "sample" in capsys.readouterr().out


def test_user_error_is_one_line_without_traceback(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    code = run(["sample", "-o", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code != 0 and "error:" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_usage_error_exit_code(capsys):
    assert run(["no-such-command"]) == 2


def test_console_script_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eotwin", "sample", "-o", str(tmp_path / "s"), "--size", "64"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s" / "dem.tif").exists()
