"""A PLY header is untrusted: every lie in it is a one-line error, never a crash or a huge allocation."""

from __future__ import annotations

import pytest

from eotwin.cli.main import run

GOOD_HEAD = (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty double x\nproperty double y\n"
             b"property double z\nend_header\n")
GOOD_BODY = bytes(48)

CASES = {
    "count beyond the file": (GOOD_HEAD.replace(b"vertex 2", b"vertex 1000000000000"), GOOD_BODY, "declares"),
    "negative count": (GOOD_HEAD.replace(b"vertex 2", b"vertex -5"), GOOD_BODY, "no valid vertex count"),
    "count not a number": (GOOD_HEAD.replace(b"vertex 2", b"vertex lots"), GOOD_BODY, "malformed PLY header"),
    "unknown type": (GOOD_HEAD.replace(b"property double z", b"property quad z"), GOOD_BODY, "unknown PLY property"),
    "repeated property": (GOOD_HEAD.replace(b"property double z", b"property double x"), GOOD_BODY, "repeated"),
    "no end of header": (b"ply\nformat binary_little_endian 1.0\n" + b"comment x\n" * 200_000, b"", "longer than"),
    "truncated header": (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\n", b"", "truncated PLY header"),
    "bad origin": (GOOD_HEAD.replace(b"end_header", b"comment origin 1 2 nanx\nend_header"), GOOD_BODY, "origin"),
    "ascii ply": (GOOD_HEAD.replace(b"binary_little_endian", b"ascii"), GOOD_BODY, "only binary_little_endian"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lying_ply_headers_are_one_line_errors(tmp_path, capsys, name):
    head, body, expected = CASES[name]
    path = tmp_path / "cloud.ply"
    path.write_bytes(head + body)
    code = run(["pointcloud", "info", str(path), "--json"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], err


def test_an_honest_ply_still_reads(tmp_path, capsys):
    import json

    path = tmp_path / "cloud.ply"
    path.write_bytes(GOOD_HEAD + GOOD_BODY)
    assert run(["pointcloud", "info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2
