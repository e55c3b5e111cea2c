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


def test_os_error_without_file_name_is_one_clean_line(monkeypatch, capsys):
    """GDAL's read errors are OSErrors with no file name: the line was 'error:: Read failed...'."""
    import eotwin.cli.main as main

    def failing_app(**_kwargs):
        raise OSError("Read failed. See previous exception for details.")

    monkeypatch.setattr(main, "app", failing_app)
    assert run(["pointcloud", "build"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: Read failed. See previous exception for details."]


def test_os_error_with_file_name_names_it(monkeypatch, capsys):
    import eotwin.cli.main as main

    def failing_app(**_kwargs):
        raise PermissionError(13, "Permission denied", "/data/out.laz")

    monkeypatch.setattr(main, "app", failing_app)
    assert run(["pointcloud", "build"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: /data/out.laz: Permission denied"]
