"""Our deltaVersion 1.4 schema gives deltatwin-cli's verdicts; quantities parse as Kubernetes does."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from eotwin.deltatwin.schema import parse_cpu, parse_memory, schema_errors

REPO = Path(__file__).resolve().parents[2]
DELTATWIN_PY = REPO / ".venv-deltatwin" / "bin" / "python"  # deltatwin-cli in its own environment

BASE = {"name": "x", "description": "d", "owner": "o",
        "license": {"name": "MIT", "url": "u", "copyrights": [{"years": [2024], "company": "c"}]}}


def _variants(shared_fixtures: Path) -> list[dict]:
    docs = [json.loads(p.read_text()) for p in sorted((shared_fixtures / "deltatwin").rglob("manifest.json"))]
    edits = [
        lambda m: m.pop("owner"),
        lambda m: m.update(deltaVersion="1.3"),
        lambda m: m.update(deltaVersion="1.4"),
        lambda m: m.update(typo=1),
        lambda m: m["license"].pop("url"),
        lambda m: m["license"]["copyrights"][0].update(years=[1900]),
        lambda m: m["license"]["copyrights"][0].update(years=[2020, 2020]),
        lambda m: m.update(resources={"r": {"type": "string"}}),
        lambda m: m.update(resources={"r": {"type": "string", "value": "v", "extra": 1}}),
        lambda m: m.update(inputs={"i": {"description": "no type"}}),
        lambda m: m.update(inputs={"i": {"type": "string", "value": None}}),
        lambda m: m.update(inputs={"I_UPPER": {"nothing": 1}}),  # unanchored pattern: no lower-case letter, unchecked
        lambda m: m.update(outputs={"o": {"type": 3}}),
        lambda m: m.update(models={"m": {"path": "p", "type": "python"}}),
        lambda m: m.update(models={"m": {"path": "p", "type": "python", "parameters": {}, "extra": 1}}),
        lambda m: m.update(models={"m": {"path": "p", "type": "python", "parameters": {},
                                         "inputs": {"a": {"type": "string", "anything": 1}},
                                         "outputs": {"b": {"type": "Data", "glob": 5}}}}),
        lambda m: m.update(dependencies={"d": {}}),
        lambda m: m.update(dependencies={"d": {"id": 1}}),
        lambda m: m.update(short_description=5),
    ]
    for edit in edits:
        doc = copy.deepcopy(BASE)
        edit(doc)
        docs.append(doc)
    docs.append([])  # not an object
    return docs


def test_verdicts_equal_deltatwin_cli(shared_fixtures):
    if not DELTATWIN_PY.exists():
        pytest.skip("deltatwin-cli environment missing: python3.11 -m venv .venv-deltatwin && "
                    ".venv-deltatwin/bin/pip install deltatwin-cli")
    docs = _variants(shared_fixtures)
    script = ("import json,sys\nfrom delta.manifest.manifest import check_manifest\n"
              "print(json.dumps([check_manifest(d) for d in json.load(sys.stdin)]))")
    proc = subprocess.run([str(DELTATWIN_PY), "-c", script], input=json.dumps(docs), capture_output=True,
                          text=True, timeout=120, check=True)
    theirs = json.loads(proc.stdout)
    ours = [not schema_errors(d) for d in docs]
    assert ours == theirs
    assert theirs.count(False) >= 12  # the variants do exercise rejections


def test_schema_error_keys():
    doc = copy.deepcopy(BASE)
    doc["license"]["copyrights"][0]["years"] = [1900]
    doc["models"] = {"m": {"path": "p", "type": "python"}}
    assert schema_errors(doc) == [
        ("license.copyrights[0].years[0]", "1900 is less than the minimum of 1970"),
        ("models.m", "'parameters' is a required property"),
    ]


def test_quantities():
    assert parse_memory("3Gi") == 3 * 2**30
    assert parse_memory("512Mi") == 512 * 2**20
    assert parse_memory("2G") == 2 * 10**9
    assert parse_memory("1.5Gi") == int(1.5 * 2**30)
    assert parse_cpu("500m") == 0.5 and parse_cpu("4000m") == 4.0 and parse_cpu("2") == 2.0
    for bad in ("2GB", "lots", "100m", ""):
        with pytest.raises(ValueError):
            parse_memory(bad)
    with pytest.raises(ValueError):
        parse_cpu("2Gi")
