"""The offline runner on small components built in tmp_path, with Python scripts as models."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from eotwin.cli.main import run
from eotwin.deltatwin.runner import RunOptions, run_component
from eotwin.errors import EotwinError
from tests.deltatwin.conftest import LICENSE, write_component

SECRET = "s3cr3t-TOKEN-4711"
NASTY = "a b; touch PWNED_1 && echo $(touch PWNED_2) `touch PWNED_3` 'single' \"double\"\nsecond line | cat"


def _inputs(tmp_path: Path, payload: dict, name: str = "inputs.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def test_values_are_whole_arguments_never_shell_code(tmp_path, echo_component):
    root = echo_component()
    inputs = _inputs(tmp_path, {"text": {"type": "string", "value": NASTY}, "token": {"type": "secret", "value": SECRET}})
    result = run_component(RunOptions(component=root, inputs_file=inputs, run_dir=tmp_path / "run"))
    assert result.ok, result.record.get("error")
    out = Path(result.outputs["result"]["path"])
    assert json.loads(out.read_text()) == [NASTY, "3", SECRET]  # count comes from the manifest default
    assert not list(tmp_path.rglob("PWNED_*"))
    assert result.record["nodes"][3]["command"].endswith(" 3 ***")
    assert result.outputs["result"]["size"] == out.stat().st_size and len(result.outputs["result"]["sha256"]) == 64


def test_empty_and_prefixed_values_follow_the_service(tmp_path, echo_component):
    def mutate(m, w):
        m["models"]["echo"]["inputs"]["count"]["prefix"] = "--count"
        m["models"]["echo"]["inputs"]["flag"] = {"type": "boolean", "prefix": "--flag", "value": True}
        m["models"]["echo"]["parameters"]["command"] += " $(inputs.flag)"

    inputs = _inputs(tmp_path, {"text": {"type": "string", "value": ""}, "count": {"type": "integer", "value": 7},
                                "token": {"type": "secret", "value": SECRET}})
    result = run_component(RunOptions(component=echo_component(mutate), inputs_file=inputs, run_dir=tmp_path / "r"))
    assert json.loads(Path(result.outputs["result"]["path"]).read_text()) == ["--count", "7", SECRET, "--flag"]


def test_secret_never_in_logs_record_or_other_files(tmp_path, echo_component, capsys):
    root = echo_component()
    inputs = _inputs(tmp_path, {"text": {"type": "string", "value": "x"}, "token": {"type": "secret", "value": SECRET}})
    code = run(["deltatwin", "run", str(root), "-i", str(inputs), "-o", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 0 and SECRET not in captured.out + captured.err
    run_dir = tmp_path / "run"
    log = (run_dir / "nodes" / "echo" / "log.txt").read_text()
    assert "echo got 3 arguments" in log and "***" in log and SECRET not in log  # the model printed it: masked
    page = (run_dir / "run.html").read_text()
    assert "tiny-echo" in page and "succeeded" in page and SECRET not in page and "&lt;" not in page
    record = (run_dir / "run.json").read_text()
    assert SECRET not in record and json.loads(record)["inputs"]["token"] == {"type": "secret", "value": "***"}
    holders = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                     if p.is_file() and SECRET.encode() in p.read_bytes())
    # only the model's own file, where this test model deliberately writes its argv
    assert holders == ["nodes/echo/outputs/result/result.txt", "nodes/echo/work/result.txt",
                       "outputs/result/result.txt"]


STEP_PY = textwrap.dedent('''
    import pathlib, sys
    mode, out = sys.argv[1], sys.argv[2]
    src = sys.argv[3] if len(sys.argv) > 3 else None
    print("step", mode)
    if mode == "fail":
        sys.exit(3)
    if mode == "alloc":
        hog = bytearray(1024 * 2**20)
    if mode == "touch-input":
        try:
            with open(src, "a") as f:
                f.write("changed")
            print("input was writable")
        except PermissionError:
            print("input is read-only")
    if mode == "cpus":
        import os
        mode = f"cpus={len(os.sched_getaffinity(0))} omp={os.environ['OMP_NUM_THREADS']}"
    if mode == "sleep":
        import os, time
        pathlib.Path(out).write_text(str(os.getpid()))
        time.sleep(120)
    if mode == "env":
        import os
        mode = " ".join(sorted(os.environ))
    if mode == "two":
        pathlib.Path("extra.txt").write_text("x")
        pathlib.Path("extra2.txt").write_text("y")
    if mode != "none":
        text = pathlib.Path(src).read_text() if src else ""
        pathlib.Path(out).write_text(text + mode + "\\n")
''')


def chain(tmp_path: Path, modes: dict[str, str], *, ram: str = "1Gi", glob: str = "out.txt",
          name: str = "chain") -> Path:
    """infile -> a -> b -> final, and infile -> c -> side; each node runs step.py in the mode of its resource."""
    manifest = {
        "deltaVersion": "1.4", "name": "step-chain", "description": "d", "owner": "o", "license": LICENSE,
        "inputs": {"infile": {"type": "Data", "description": "a text file"}},
        "outputs": {"final": {"type": "Data"}, "side": {"type": "Data"}},
        "resources": {f"mode_{k}": {"type": "string", "value": v} for k, v in modes.items()},
        "models": {"step": {
            "path": "models", "type": "python",
            "parameters": {"pythonVersion": "3.11", "hardwareRequirements": {"cpu": "1", "ram": ram},
                           "command": "python step.py $(inputs.mode) out.txt $(inputs.src)"},
            "inputs": {"mode": {"type": "string"}, "src": {"type": "Data"}},
            "outputs": {"out": {"type": "Data", "glob": glob}},
        }},
    }
    nodes = [{"id": "infile", "ref": "inputs.infile"}]
    nodes += [{"id": f"mode_{k}", "ref": f"resources.mode_{k}"} for k in modes]
    nodes += [{"id": k, "ref": "models.step"} for k in modes]
    nodes += [{"id": "final", "ref": "outputs.final"}, {"id": "side", "ref": "outputs.side"}]
    e = [("infile", None, "a", "src"), ("a", "out", "b", "src"), ("b", "out", "final", None),
         ("infile", None, "c", "src"), ("c", "out", "side", None)]
    e += [(f"mode_{k}", None, k, "mode") for k in modes]
    edges = [{"from": {"id": s, **({"port": sp} if sp else {})}, "to": {"id": d, **({"port": dp} if dp else {})}}
             for s, sp, d, dp in e]
    return write_component(tmp_path / name, manifest, {"nodes": nodes, "edges": edges}, {"models/step.py": STEP_PY})


def _chain_inputs(tmp_path: Path) -> Path:
    data = tmp_path / "data.txt"
    data.write_text("start\n")
    return _inputs(tmp_path, {"infile": {"type": "Data", "url": "data.txt"}}, "chain_inputs.json")


def test_data_flows_through_files(tmp_path):
    root = chain(tmp_path, {"a": "ok", "b": "ok", "c": "cpus"})
    result = run_component(RunOptions(component=root, inputs_file=_chain_inputs(tmp_path), run_dir=tmp_path / "run"))
    assert result.ok, result.record.get("error")
    assert Path(result.outputs["final"]["path"]).read_text() == "start\nok\nok\n"
    assert Path(result.outputs["side"]["path"]).read_text() == "start\ncpus=1 omp=1\n"  # hardware cpu: "1"
    staged = Path(result.record["inputs"]["infile"]["path"])
    assert not stat.S_IMODE(staged.stat().st_mode) & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert result.record["inputs"]["infile"]["url"] == str((tmp_path / "data.txt").resolve())
    order = [n["id"] for n in result.record["nodes"] if n["ref"] == "models.step"]
    assert order == ["a", "b", "c"]
    assert all(n["peak_rss_bytes"] >= 0 and n["limits"] == {"ram_bytes": 2**30, "cpus": 1, "enforced": True}
               for n in result.record["nodes"] if n["ref"] == "models.step")


def test_data_inputs_are_read_only(tmp_path):
    root = chain(tmp_path, {"a": "touch-input", "b": "ok", "c": "ok"})
    result = run_component(RunOptions(component=root, inputs_file=_chain_inputs(tmp_path), run_dir=tmp_path / "run"))
    assert (tmp_path / "data.txt").read_text() == "start\n"  # the user's file is never handed to a model
    log = (tmp_path / "run" / "nodes" / "a" / "log.txt").read_text()
    a = next(n for n in result.record["nodes"] if n["id"] == "a")
    if os.geteuid() == 0:  # root writes through file modes: the runner notices and fails the node
        assert "input was writable" in log
        assert a["status"] == "failed" and a["error"] == "the model modified its read-only Data input(s) src"
    else:
        assert "input is read-only" in log and a["status"] == "succeeded" and result.ok


def test_failing_node_stops_its_dependants_only(tmp_path, capsys):
    root = chain(tmp_path, {"a": "fail", "b": "ok", "c": "ok"})
    result = run_component(RunOptions(component=root, inputs_file=_chain_inputs(tmp_path), run_dir=tmp_path / "run"))
    status = {n["id"]: n["status"] for n in result.record["nodes"]}
    assert status["a"] == "failed" and status["b"] == "skipped" and status["final"] == "skipped"
    assert status["c"] == "succeeded" and status["side"] == "succeeded"
    assert not result.ok and result.record["status"] == "failed"
    a = next(n for n in result.record["nodes"] if n["id"] == "a")
    assert a["exit_code"] == 3 and a["error"].startswith("exit status 3; last log line: step fail")
    assert next(n for n in result.record["nodes"] if n["id"] == "b")["error"] == "not run: upstream node a failed"
    assert list(result.outputs) == ["side"]
    code = run(["deltatwin", "run", str(root), "-i", str(_chain_inputs(tmp_path)), "-o", str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert code == 1 and "error: run failed: node a: exit status 3" in err


@pytest.mark.parametrize(("mode", "glob", "found"), [("none", "out.txt", "found no match"),
                                                     ("two", "*.txt", "found 3 matches (extra.txt, extra2.txt, out.txt)")])
def test_output_glob_must_match_exactly_one_file(tmp_path, mode, glob, found):
    root = chain(tmp_path, {"a": mode, "b": "ok", "c": "ok"}, glob=glob)
    result = run_component(RunOptions(component=root, inputs_file=_chain_inputs(tmp_path), run_dir=tmp_path / "run"))
    a = next(n for n in result.record["nodes"] if n["id"] == "a")
    pattern = glob
    assert a["status"] == "failed" and a["exit_code"] == 0
    assert a["error"] == (f"output out: glob '{pattern}' must match exactly one file in the working directory, "
                          f"{found}")


def test_memory_limit_stops_the_model(tmp_path):
    root = chain(tmp_path, {"a": "alloc", "b": "ok", "c": "ok"}, ram="200Mi")
    result = run_component(RunOptions(component=root, inputs_file=_chain_inputs(tmp_path), run_dir=tmp_path / "run"))
    a = next(n for n in result.record["nodes"] if n["id"] == "a")
    assert a["status"] == "failed" and a["memory_limit_hit"] is True
    assert "stopped by its memory limit of 209715200 bytes" in a["error"]
    assert "MemoryError" in (tmp_path / "run" / "nodes" / "a" / "log.txt").read_text()
    assert next(n for n in result.record["nodes"] if n["id"] == "c")["status"] == "succeeded"
    # the same model without limits allocates its 1 GiB and succeeds
    free = run_component(RunOptions(component=root, inputs_file=_chain_inputs(tmp_path), run_dir=tmp_path / "free",
                                    enforce_limits=False))
    assert free.ok


def test_dependency_from_local_components(tmp_path, echo_component):
    echo_component(name="lib/echo")  # component tiny-echo

    def parent(m, w):
        m["name"] = "parent"
        m["dependencies"] = {"child": {"id": "tiny-echo", "version": "1.0"}}
        m["models"] = {}
        m["outputs"] = {"result": {"type": "Data"}}
        w["nodes"] = [{"id": "text", "ref": "inputs.text"}, {"id": "count", "ref": "inputs.count"},
                      {"id": "token", "ref": "inputs.token"}, {"id": "child", "ref": "dependencies.child"},
                      {"id": "result", "ref": "outputs.result"}]
        w["edges"] = [{"from": {"id": i}, "to": {"id": "child", "port": i}} for i in ("text", "count", "token")]
        w["edges"].append({"from": {"id": "child", "port": "result"}, "to": {"id": "result"}})

    root = echo_component(parent, name="parent")
    inputs = _inputs(tmp_path, {"text": {"type": "string", "value": "via parent"},
                                "token": {"type": "secret", "value": SECRET}})
    result = run_component(RunOptions(component=root, inputs_file=inputs, run_dir=tmp_path / "run",
                                      components=[tmp_path / "lib"]))
    assert result.ok, result.record.get("error")
    assert json.loads(Path(result.outputs["result"]["path"]).read_text()) == ["via parent", "3", SECRET]
    child = next(n for n in result.record["nodes"] if n["id"] == "child")
    assert child["component"]["folder"] == str((tmp_path / "lib" / "echo").resolve())
    assert [n["status"] for n in child["nodes"]] == ["succeeded"] * 5
    missing = run_component  # without --components the dependency cannot be found
    res = missing(RunOptions(component=root, inputs_file=inputs, run_dir=tmp_path / "run2"))
    assert "dependency tiny-echo 1.0 not found" in res.record["error"]


def test_bad_runs_are_refused_with_one_line(tmp_path, echo_component, shared_fixtures):
    root = echo_component()
    with pytest.raises(EotwinError, match="is not a valid component"):
        run_component(RunOptions(component=shared_fixtures / "deltatwin" / "DeltaTwin-od-mucilage",
                                 run_dir=tmp_path / "x"))
    cases = [({"txt": {"type": "string", "value": "a"}}, "unknown input 'txt'"),
             ({"text": {"type": "integer", "value": 1}}, "input 'text' must be of type string but is of type integer"),
             ({"text": {"type": "string", "value": "a"}}, r"inputs \['token'\] required"),
             ({"text": {"type": "string", "value": 5}, "token": {"type": "secret", "value": "t"}},
              "must be of type string but its value is a JSON int")]
    for payload, message in cases:
        with pytest.raises(EotwinError, match=message):
            run_component(RunOptions(component=root, inputs_file=_inputs(tmp_path, payload), run_dir=tmp_path / "y"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    ok_inputs = _inputs(tmp_path, {"text": {"type": "string", "value": "a"}, "token": {"type": "secret", "value": "t"}})
    with pytest.raises(EotwinError, match="already exists and is not empty"):
        run_component(RunOptions(component=root, inputs_file=ok_inputs, run_dir=tmp_path / "busy"))
    assert not (tmp_path / "y").exists() and not (tmp_path / "x").exists()
    assert os.listdir(tmp_path / "busy") == ["f"]


HOG_PY = textwrap.dedent('''
    import subprocess, sys, time
    mode = sys.argv[1]
    print("hog", mode, flush=True)
    if mode == "sleep":
        time.sleep(60)
    if mode == "tree":  # three processes, each under the address-space limit, together over the RAM limit
        code = "import time; b = b'x' * (100 * 2**20); time.sleep(30)"
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
        for p in procs:
            p.wait()
    open("out.txt", "w").write("done")
''')


def _hog(tmp_path: Path) -> Path:
    manifest = {"deltaVersion": "1.4", "name": "hog", "description": "d", "owner": "o", "license": LICENSE,
                "inputs": {"mode": {"type": "string"}}, "outputs": {"out": {"type": "Data"}},
                "models": {"hog": {"path": "models", "type": "python", "parameters": {
                    "pythonVersion": "3.11", "command": "python hog.py $(inputs.mode)",
                    "hardwareRequirements": {"cpu": "500m", "ram": "200Mi"}},
                    "inputs": {"mode": {"type": "string"}}, "outputs": {"out": {"type": "Data", "glob": "out.txt"}}}}}
    workflow = {"nodes": [{"id": "mode", "ref": "inputs.mode"}, {"id": "hog", "ref": "models.hog"},
                          {"id": "out", "ref": "outputs.out"}],
                "edges": [{"from": {"id": "mode"}, "to": {"id": "hog", "port": "mode"}},
                          {"from": {"id": "hog", "port": "out"}, "to": {"id": "out"}}]}
    return write_component(tmp_path / "hog", manifest, workflow, {"models/hog.py": HOG_PY})


def test_resident_memory_of_the_process_tree_is_watched(tmp_path):
    root = _hog(tmp_path)
    inputs = _inputs(tmp_path, {"mode": {"type": "string", "value": "tree"}})
    result = run_component(RunOptions(component=root, inputs_file=inputs, run_dir=tmp_path / "run"))
    hog = result.record["nodes"][1]
    assert hog["status"] == "failed" and hog["memory_limit_hit"] is True and hog["exit_code"] == -9
    assert hog["error"].startswith("stopped: resident memory ") and "passed the limit of 209715200 bytes" in hog["error"]
    assert hog["peak_rss_bytes"] > 200 * 2**20 and hog["wall_s"] < 25


def test_node_timeout(tmp_path):
    root = _hog(tmp_path)
    inputs = _inputs(tmp_path, {"mode": {"type": "string", "value": "sleep"}})
    result = run_component(RunOptions(component=root, inputs_file=inputs, run_dir=tmp_path / "run", node_timeout_s=1))
    hog = result.record["nodes"][1]
    assert hog["status"] == "failed" and hog["error"].startswith("stopped: ran past the 1 s timeout")
    assert hog["memory_limit_hit"] is False and 1 <= hog["wall_s"] < 10


def test_secret_with_json_special_characters_is_masked_in_the_record(tmp_path, echo_component):
    secret = 'tok"en\\x-42'

    def mutate(m, w):
        m["models"]["echo"]["parameters"]["command"] = "python echo.py $(inputs.text) $(inputs.count) $(inputs.token)x"

    inputs = _inputs(tmp_path, {"text": {"type": "string", "value": "a"}, "token": {"type": "secret", "value": secret}})
    with pytest.raises(EotwinError, match="is not a valid component"):  # '$(inputs.token)x' is refused up front
        run_component(RunOptions(component=echo_component(mutate), inputs_file=inputs, run_dir=tmp_path / "bad"))
    root = echo_component(name="ok")
    (root / "models" / "echo.py").write_text("import sys\nprint(sys.argv[3])\nraise SystemExit(sys.argv[3])\n")
    result = run_component(RunOptions(component=root, inputs_file=inputs, run_dir=tmp_path / "run"))
    text = (tmp_path / "run" / "run.json").read_text()
    assert not result.ok and secret not in text and json.dumps(secret)[1:-1] not in text
    assert "last log line: ***" in result.record["nodes"][3]["error"]
    assert secret not in (tmp_path / "run" / "nodes" / "echo" / "log.txt").read_text()


def test_models_get_only_declared_environment(tmp_path, monkeypatch):
    """CDSE keys, tokens and other secrets of the runner's environment never reach a model."""
    for name in ("CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY", "EDH_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
                 "EOTWIN_API_KEY", "SOME_UNRELATED_VAR"):
        monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv("EOTWIN_STAC_URL", "http://127.0.0.1:9/stac")  # a service setting, not a secret: kept
    root = chain(tmp_path, {"a": "ok", "b": "ok", "c": "env"})
    result = run_component(RunOptions(component=root, inputs_file=_chain_inputs(tmp_path), run_dir=tmp_path / "run"))
    assert result.ok, result.record.get("error")
    names = set(Path(result.outputs["side"]["path"]).read_text().split())
    assert {"PATH", "HOME", "OMP_NUM_THREADS", "EOTWIN_STAC_URL"} <= names
    assert not names & {"CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY", "EDH_TOKEN", "AWS_SECRET_ACCESS_KEY",
                        "GITHUB_TOKEN", "EOTWIN_API_KEY", "SOME_UNRELATED_VAR"}
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_sigterm_stops_the_run_and_its_models(tmp_path):
    """A container stop (SIGTERM) ends the runner with 143 and takes the model's process group with it."""
    import signal
    import subprocess
    import sys
    import time

    root = chain(tmp_path, {"a": "sleep", "b": "ok", "c": "ok"})
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "eotwin", "-q", "deltatwin", "run", str(root), "-i",
                             str(_chain_inputs(tmp_path)), "-o", str(run_dir)], stderr=subprocess.PIPE, text=True)
    pid_file = run_dir / "nodes" / "a" / "work" / "out.txt"
    deadline = time.time() + 120
    while time.time() < deadline and not (pid_file.exists() and pid_file.read_text().strip()):
        time.sleep(0.1)
    model_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(model_pid, 0)


# run.sh: what every process on the machine shows as its command line while the model runs, and what it received
_CMDLINES_SH = textwrap.dedent('''\
    for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f" 2>/dev/null; echo; done > cmdlines.txt
    python -c 'import sys; print(sys.argv[1])' "$1" > result.txt   # the text input, through a program's argv
    printf '%s' "$2" | sha256sum > result.txt.secret
    cat result.txt.secret >> result.txt
    ''')


def test_secrets_of_a_bash_model_are_on_no_command_line(tmp_path, echo_component):
    """`bash run.sh ... $(inputs.token)`: the secret arrives as $2 but no process in the list shows it."""
    import hashlib

    def mutate(m, w):
        m["models"]["echo"]["parameters"]["command"] = "bash run.sh $(inputs.text) $(inputs.token)"

    root = echo_component(mutate, files={"models/run.sh": _CMDLINES_SH})
    inputs = _inputs(tmp_path, {"text": {"type": "string", "value": "visible words"},
                                "token": {"type": "secret", "value": SECRET}})
    result = run_component(RunOptions(component=root, inputs_file=inputs, run_dir=tmp_path / "run"))
    assert result.ok, result.record.get("error")
    work = tmp_path / "run" / "nodes" / "echo" / "work"
    cmdlines = (work / "cmdlines.txt").read_text()
    assert "run.sh" in cmdlines and "visible words" in cmdlines  # the listing did see the model's shell
    assert SECRET not in cmdlines
    got = Path(result.outputs["result"]["path"]).read_text().split()
    assert got[:2] == ["visible", "words"] and got[2] == hashlib.sha256(SECRET.encode()).hexdigest()
    node = next(n for n in result.record["nodes"] if n.get("model") == "echo")
    assert "warning" not in node and node["command"].endswith("'visible words' ***")


def test_a_secret_passed_to_a_program_argument_is_flagged_in_the_record(tmp_path, echo_component):
    inputs = _inputs(tmp_path, {"text": {"type": "string", "value": "x"}, "token": {"type": "secret", "value": SECRET}})
    result = run_component(RunOptions(component=echo_component(), inputs_file=inputs, run_dir=tmp_path / "run"))
    assert result.ok
    node = next(n for n in result.record["nodes"] if n.get("model") == "echo")
    assert "process list" in node["warning"]
