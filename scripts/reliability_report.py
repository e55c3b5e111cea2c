"""Write docs/reliability.md from the test results: bad input, fuzzing, faults by rate, kills, disk full, concurrency.

    .venv/bin/python scripts/reliability_report.py                 # runs pytest on the tests below (minutes)
    .venv/bin/python scripts/reliability_report.py --junit r.xml   # reads an existing junit file instead

Counts and outcomes come from the junit XML only (what ran, what passed, the fault counts the tests record),
never from the tables' own length, so the page cannot claim a case that did not run. A row whose test did not
run says so.
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


# the tests behind the fault, kill, disk-full and concurrency tables (beside the bad-input table's)
TESTS = ["tests/badinput", "tests/hardening", "tests/live/test_fault_rates.py",
         "tests/live/test_live_faults_tiles.py::test_a_killed_tiled_run_resumes", "tests/cli/test_signals.py",
         "tests/deltatwin/test_deltatwin_runner.py::test_sigterm_stops_the_run_and_its_models"]

# test (file::name without parameters) -> (command, what is done to it, what must hold)
FAULT_TESTS = {
    "tests/live/test_fault_rates.py::test_a_build_through_random_faults_equals_a_clean_one":
        ("pointcloud build (live)", "LAZ points and STAC item (minus timestamps) equal a clean build's"),
    "tests/live/test_fault_rates.py::test_a_tiled_build_through_random_faults_equals_a_clean_one":
        ("pointcloud build (live, tiled)", "every tile's points and item equal a clean tiled build's"),
    "tests/live/test_fault_rates.py::test_every_request_failing_is_one_line_and_leaves_nothing":
        ("pointcloud build (live)", "one-line error, nothing left in the output folder"),
    "tests/hardening/test_atmocorr_fault_rates.py::test_a_correction_through_random_faults_equals_a_clean_one":
        ("atmocorr run (STAC item)", "every product file byte-identical, item.json equal minus timestamps"),
    "tests/hardening/test_atmocorr_fault_rates.py::test_every_request_failing_is_one_line_and_leaves_nothing":
        ("atmocorr run (STAC item)", "one `error:` line, non-zero exit, nothing left"),
}
FIXED_RATES = {"test_every_request_failing_is_one_line_and_leaves_nothing": 1.0}
KILL_TESTS = {
    "tests/hardening/test_kills.py::test_a_killed_pointcloud_build_leaves_no_output_and_the_rerun_reclaims":
        ("pointcloud build", "kill -9 mid-write",
         "only a temporary left, never cloud.laz; the rerun reclaims it and equals a clean build"),
    "tests/live/test_live_faults_tiles.py::test_a_killed_tiled_run_resumes":
        ("pointcloud build (live, tiled)", "kill -9 (process group) after the first tiles",
         "the rerun builds only the missing tiles and removes half-written parts"),
    "tests/cli/test_signals.py::test_a_killed_atmocorr_run_leaves_staging_that_the_rerun_reclaims":
        ("atmocorr run", "kill -9 mid-correction", "no output; the rerun reclaims the dead run's staging"),
    "tests/cli/test_signals.py::test_sigterm_mid_atmocorr_run_leaves_no_staging":
        ("atmocorr run", "SIGTERM mid-correction", "exit 143, staging removed, no output"),
    "tests/hardening/test_kills.py::test_ctrl_c_mid_atmocorr_run_leaves_no_staging":
        ("atmocorr run", "SIGINT (Ctrl-C) mid-correction", "exit 130, staging removed, no output"),
    "tests/hardening/test_kills.py::test_a_killed_ben_encode_is_incomplete_and_the_rerun_completes_it":
        ("ben encode", "kill -9 after some batches",
         "store marked incomplete and refused by readers; the rerun resumes it to the straight store"),
    "tests/hardening/test_ben_train_kill.py::test_a_killed_training_resumes_to_the_uninterrupted_result":
        ("ben train", "kill -9 after the first checkpoint",
         "last.ckpt whole, no results.json; --resume reaches the uninterrupted run's weights and scores"),
    "tests/hardening/test_ben_train_kill.py::test_checkpoints_are_written_beside_the_target_and_never_half":
        ("ben train", "checkpoint write failing half-way", "previous checkpoint intact, no temporary anywhere"),
    "tests/hardening/test_deltatwin_kill.py::"
    "test_a_killed_deltatwin_run_takes_its_model_and_the_rerun_reclaims_the_folder":
        ("deltatwin run", "kill -9 of the runner mid-model",
         "the model dies too, no run.json; a rerun on the folder reclaims it and succeeds"),
    "tests/deltatwin/test_deltatwin_runner.py::test_sigterm_stops_the_run_and_its_models":
        ("deltatwin run", "SIGTERM mid-model", "exit 143, the model's process group stopped"),
}
DISK_TEST = "tests/hardening/test_disk_full.py::test_a_full_disk_is_one_line_and_leaves_nothing"
CONCURRENCY_TESTS = {
    "tests/hardening/test_concurrent_writers.py::test_two_processes_writing_one_cache_entry_never_show_a_corrupt_one":
        ("live cache (`$EOTWIN_CACHE_DIR`)", "two processes writing one entry 40 times each, a reader in a loop",
         "every entry read is one whole version; no temporary left"),
    "tests/hardening/test_concurrent_writers.py::test_two_builds_onto_one_output_leave_one_whole_cloud":
        ("pointcloud build", "two builds onto one `-o` at once", "both succeed; one whole cloud equal to a clean build"),
    "tests/hardening/test_concurrent_writers.py::test_interleaved_puts_leave_a_file_and_hash_of_the_same_body":
        ("live cache (`$EOTWIN_CACHE_DIR`)", "a second writer puts another body while the first writes its hash",
         "the entry's file and hash are of one body (the last writer's); the entry is found"),
}


def run_pytest(junit: Path) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, f"--junitxml={junit}",
           "-o", "junit_family=xunit1"]  # xunit1 keeps the recorded counts (record_property)
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


def test_id(case: ET.Element) -> tuple[str, str]:
    """(``path::name`` without parameters, the parameters) of a junit test case."""
    name = case.get("name", "")
    base, _, params = name.partition("[")
    return case.get("classname", "").replace(".", "/") + ".py::" + base, params.rstrip("]")


def state_word(state: str) -> str:
    return {"passed": "as required", "failed": "**FAILED**", "skipped": "skipped"}.get(state, state)


def hardening_sections(tree: ET.ElementTree) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """The fault, kill, disk-full and concurrency tables; per section (tried, passed)."""
    results: dict[str, list[tuple[str, str, str, dict[str, str]]]] = defaultdict(list)
    for case in tree.iter("testcase"):
        tid, params = test_id(case)
        state, message = outcome(case)
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        results[tid].append((params, state, message, props))
    counts: dict[str, tuple[int, int]] = {}
    lines = ["## Faults, by rate", "",
             "Every loopback server (STAC API, S3, EDH) fails a seeded share of all requests: 5xx, 429 with "
             "Retry-After, bodies cut short, dropped connections (and, for the point cloud, delays past the "
             "timeout). Requests include retries.", "",
             "| command | fault rate | requests | faults injected | must hold | outcome |",
             "|---|---:|---:|---:|---|---|"]
    tried = passed = 0
    for tid, (command, holds) in FAULT_TESTS.items():
        name = tid.split("::")[1]
        for params, state, _, props in results.get(tid, [("", "not run", "", {})]):
            rate = FIXED_RATES.get(name) or (float(params.split("-")[0]) if params else None)
            rate_text = f"{rate:.0%}" if rate is not None else "?"
            lines.append(f"| `{command}` | {rate_text} | {props.get('fault_requests', '-')} | "
                         f"{props.get('fault_injected', '-')} | {holds} | {state_word(state)} |")
            tried += state != "not run"
            passed += state == "passed"
    counts["faults"] = (tried, passed)
    lines += ["", "## Kills and signals, by pipeline", "",
              "| command | what happens | must hold | outcome |", "|---|---|---|---|"]
    tried = passed = 0
    for tid, (command, done, holds) in KILL_TESTS.items():
        for _, state, _, _ in results.get(tid, [("", "not run", "", {})]):
            lines.append(f"| `{command}` | {done} | {holds} | {state_word(state)} |")
            tried += state != "not run"
            passed += state == "passed"
    counts["kills"] = (tried, passed)
    lines += ["", "## Disk full", "",
              "Each command in a child whose files may not grow past 8 KiB (`RLIMIT_FSIZE`, SIGXFSZ ignored, so "
              "write() fails with EFBIG as on a full disk). Must hold: the last stderr line is one `error: disk "
              "full: ...`, non-zero exit, no traceback, nothing at or beside the output nor in `$TMPDIR`.", "",
              "| command | outcome |", "|---|---|"]
    tried = passed = 0
    for params, state, _, _ in results.get(DISK_TEST, [("?", "not run", "", {})]):
        lines.append(f"| `{params}` | {state_word(state)} |")
        tried += state != "not run"
        passed += state == "passed"
    counts["disk full"] = (tried, passed)
    lines += ["", "## Concurrent writers", "", "| what | how | must hold | outcome |", "|---|---|---|---|"]
    tried = passed = 0
    for tid, (what, how, holds) in CONCURRENCY_TESTS.items():
        for _, state, _, _ in results.get(tid, [("", "not run", "", {})]):
            lines.append(f"| {what} | {how} | {holds} | {state_word(state)} |")
            tried += state != "not run"
            passed += state == "passed"
    counts["concurrency"] = (tried, passed)
    return [*lines, ""], counts


# the report is regenerated from test results; measured-by-hand sections live below this line and are kept
HAND_WRITTEN = "<!-- hand-written below this line: kept when the report is regenerated -->"


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
        "# Reliability: bad input, fuzzing, faults, kills, disk full, concurrency",
        "",
        "Written by `scripts/reliability_report.py` from the junit XML of the tests it names (do not edit).",
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
    hardening, counts = hardening_sections(tree)
    lines += ["", *hardening]
    others = "; ".join(f"{name}: {t} tried, {p} passed" for name, (t, p) in counts.items())
    lines += [f"Closing count: {tried} bad-input cases tried, {passed} passed; {len(fuzz)} parsers fuzzed with "
              f"{total} examples, {sum(f[1] == 'passed' for f in fuzz)} passed; {others}.", ""]
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
    closing = next(line for line in reversed(text.splitlines()) if line.startswith("Closing count:"))
    if args.output.exists() and HAND_WRITTEN in args.output.read_text():  # keep what people wrote below the marker
        text = text + "\n" + HAND_WRITTEN + args.output.read_text().split(HAND_WRITTEN, 1)[1]
    tmp = args.output.with_name(args.output.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, args.output)
    print(closing)  # the hand-written part may follow it in the file
    return code


if __name__ == "__main__":
    sys.exit(main())
