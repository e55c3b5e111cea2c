"""Write docs/reliability.md from the bad-input table and the fuzz pass, as the test results say.

    .venv/bin/python scripts/reliability_report.py                 # runs pytest on tests/badinput (a few minutes)
    .venv/bin/python scripts/reliability_report.py --junit r.xml   # reads an existing junit file instead

Counts come from the junit XML only (what ran, what passed), never from the table's own length, so the page
cannot claim a case that did not run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET  # our own pytest's junit output, not untrusted input
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASE_TEST = "test_bad_input_is_one_line_error_and_leaves_nothing"


def run_pytest(junit: Path) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/badinput", f"--junitxml={junit}",
           "-o", "junit_family=xunit1"]  # xunit1 keeps the fuzz counts (record_property)
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO).returncode


def outcome(case: ET.Element) -> tuple[str, str]:
    for kind in ("failure", "error"):
        el = case.find(kind)
        if el is not None:
            return "failed", (el.get("message") or "").splitlines()[0][:160] if el.get("message") else kind
    if case.find("skipped") is not None:
        return "skipped", ""
    return "passed", ""


def report(junit: Path) -> str:
    sys.path.insert(0, str(REPO))
    from tests.badinput.cases import CASES

    commands = {c.id: c.command for c in CASES}
    tree = ET.parse(junit)
    per_command: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failures: list[tuple[str, str]] = []
    fuzz: list[tuple[str, str, int, int]] = []
    for case in tree.iter("testcase"):
        name = case.get("name", "")
        state, message = outcome(case)
        if name.startswith(CASE_TEST + "["):
            cid = name[len(CASE_TEST) + 1:-1]
            per_command[commands.get(cid, "?")][state] += 1
            if state != "passed":
                failures.append((cid, message))
        elif case.get("classname", "").endswith("test_fuzz"):
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            fuzz.append((name.removeprefix("test_"), state, int(props.get("fuzz_examples", 0)),
                         int(props.get("fuzz_refused", 0))))
    tried = sum(sum(v.values()) for v in per_command.values())
    passed = sum(v["passed"] for v in per_command.values())
    lines = [
        "# Reliability: bad input and fuzzing",
        "",
        "Written by `scripts/reliability_report.py` from the junit XML of `pytest tests/badinput` (do not edit).",
        "Each case of `tests/badinput/cases.py` runs the real CLI in a subprocess and passes when it prints one",
        "`error:` line naming the cause (or, for `deltatwin validate`, an error finding in `--json`), exits",
        "non-zero, shows no traceback, and leaves no file at or beside the output (no `.part`, no staging in",
        "`$TMPDIR`). The fuzz pass feeds hypothesis examples to the parsers eotwin owns; only `EotwinError` may",
        "escape.",
        "",
        "## Bad input, by command",
        "",
        "| command | cases | passed | failed |",
        "|---|---:|---:|---:|",
    ]
    for command in sorted(per_command):
        v = per_command[command]
        lines.append(f"| `{command}` | {sum(v.values())} | {v['passed']} | {v['failed'] + v['skipped']} |")
    lines += [f"| **all** | **{tried}** | **{passed}** | **{tried - passed}** |", ""]
    if failures:
        lines += ["Failing cases:", ""] + [f"- `{cid}`: {msg}" for cid, msg in failures] + [""]
    lines += ["## Fuzzing, by parser", "", "| parser (test) | outcome | examples | refused with EotwinError |",
              "|---|---|---:|---:|"]
    for name, state, examples, refused in fuzz:
        lines.append(f"| `{name}` | {state} | {examples} | {refused} |")
    total = sum(f[2] for f in fuzz)
    lines += ["", f"Closing count: {tried} bad-input cases tried, {passed} passed; {len(fuzz)} parsers fuzzed with "
              f"{total} examples, {sum(f[1] == 'passed' for f in fuzz)} passed.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", type=Path, help="Read this junit XML instead of running pytest.")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args()
    code = 0
    junit = args.junit
    if junit is None:
        junit = Path(tempfile.mkdtemp(prefix="eotwin-reliability-")) / "junit.xml"
        code = run_pytest(junit)
    text = report(junit)
    tmp = args.output.with_name(args.output.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, args.output)
    print(text.splitlines()[-2])
    return code


if __name__ == "__main__":
    sys.exit(main())
