"""A model's ``command``: which segments are placeholders, and rendering it with values (pure).

The service (deltatwin-cli 1.8.1, ``PythonRunner.build_command``) splits the command on single spaces and
replaces a segment that starts with ``$(inputs.x)`` by the value of model input ``x``: boolean -> the
``prefix`` when true, else nothing; integer / number -> ``int`` / ``float``; string / secret -> the text;
Data -> the file path; an unknown type or a missing value -> nothing; ``prefix`` goes before the value.
It hands the result unquoted to ``bash -c``. eotwin keeps the segment rules but quotes every substituted
value (``shlex.quote``), so a value is one argument and is never executed (``; rm -rf``, ``$(...)``).

Secrets stay off command lines in eotwin's runner (:func:`render_for_exec`): a secret becomes a reference
to an environment variable of the child, and a ``bash SCRIPT ARGS`` command is sourced by that same shell,
so no process in the list shows the value (``/proc/PID/environ`` is readable by its owner only).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eotwin.deltatwin.schema import PLACEHOLDER_RE

REDACTED = "***"


@dataclass(frozen=True)
class Segment:
    """One space-separated segment of a command."""

    index: int
    text: str
    input_name: str | None = None  # set when the whole segment is ``$(inputs.<name>)``


@dataclass(frozen=True)
class Bound:
    """A value bound to a model input, with the input's declared type and prefix."""

    type: str
    value: Any
    prefix: str | None = None
    secret: bool = False


def segments(command: str) -> list[Segment]:
    """Split like the service (single spaces); mark whole-segment ``$(inputs.x)`` placeholders."""
    out = []
    for i, text in enumerate(command.split(" ")):
        match = PLACEHOLDER_RE.fullmatch(text)
        name = None
        if match and match.group(1) == "inputs" and match.group(2).count(".") == 1:
            name = match.group(2)[1:]
        out.append(Segment(i, text, name))
    return out


def segment_problems(command: str) -> list[tuple[str, str]]:
    """``(segment, problem)`` for every placeholder the service would not substitute as intended."""
    problems = []
    for seg in segments(command):
        if seg.input_name is not None:
            continue
        text = seg.text
        start = PLACEHOLDER_RE.match(text)
        if start and start.group(1) == "inputs" and start.group(2).count(".") == 1:
            rest = text[start.end():]
            problems.append((text, f"is not a whole segment: the service replaces all of '{text}' by the value "
                                   f"of {start.group(0)[2:-1]}, dropping '{rest}'"))
        elif start:
            problems.append((text, f"'{start.group(0)}' is not a model input placeholder: only $(inputs.<name>) "
                                   "is substituted"))
        elif "$(" in text:
            problems.append((text, "is not substituted (a placeholder must be the whole space-separated segment); "
                                   "bash would run $( ... ) as a command substitution"))
    return problems


def render_value(bound: Bound, *, secure: bool = False) -> str:
    """The text that replaces a placeholder, quoted for bash; ``""`` when the service adds nothing."""
    value, prefix = bound.value, bound.prefix
    if value is None:
        return ""
    kind = bound.type
    if kind == "boolean":
        truthy = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
        return shlex.quote(prefix) if (prefix and truthy) else ""
    if kind == "integer":
        text = str(int(value))
    elif kind == "number":
        text = str(float(value))
    elif kind in ("string", "secret"):
        text = str(value)
        if not text:
            return ""
        if secure and (bound.secret or kind == "secret"):
            return f"{shlex.quote(prefix)} {REDACTED}" if prefix else REDACTED
    elif kind in ("Data", "stdout"):
        text = str(value)
    else:
        return ""
    quoted = shlex.quote(text)
    return f"{shlex.quote(prefix)} {quoted}" if prefix else quoted


def render(command: str, bound: dict[str, Bound], *, secure: bool = False) -> str:
    """The command with every whole-segment placeholder replaced; ``secure`` masks secrets (for records)."""
    return _render(command, bound, secure=secure)[0]


SECRET_ENV_PREFIX = "EOTWIN_DT_SECRET_"


def _render(command: str, bound: dict[str, Bound], *, secure: bool = False,
            secrets_by_reference: bool = False) -> tuple[str, dict[str, str]]:
    parts, env = [], {}
    for seg in segments(command):
        if seg.input_name is None:
            parts.append(seg.text)
            continue
        b = bound.get(seg.input_name)
        if b is not None and secrets_by_reference and (b.secret or b.type == "secret") and b.value not in (None, ""):
            var = f"{SECRET_ENV_PREFIX}{len(env)}"
            env[var] = str(b.value)
            parts.append(f'{shlex.quote(b.prefix)} "${var}"' if b.prefix else f'"${var}"')
            continue
        rendered = render_value(b, secure=secure) if b is not None else ""
        if rendered:
            parts.append(rendered)
    return " ".join(parts).strip(), env


def render_for_exec(command: str, bound: dict[str, Bound]) -> tuple[str, dict[str, str]]:
    """The command for ``bash -c`` and the environment variables it needs, with no secret on any argv.

    Secret values are passed as ``"$EOTWIN_DT_SECRET_<n>"``; when the command is ``bash SCRIPT ARGS...``
    the script is sourced (``. ./SCRIPT ARGS...``) so its arguments, expanded secrets included, are that
    shell's positional parameters and never a new process's command line. Any other program that
    receives a secret as an argument shows it: :func:`secret_reaches_argv` tells the runner to say so.
    """
    rendered, env = _render(command, bound, secrets_by_reference=True)
    words = rendered.split(" ")
    if len(words) >= 2 and words[0] == "bash" and not words[1].startswith("-"):
        script = words[1] if "/" in words[1] else f"./{words[1]}"
        rendered = " ".join([".", script, *words[2:]])
    return rendered, env


def secret_reaches_argv(exec_command: str, env: dict[str, str]) -> bool:
    """Whether a secret passed by :func:`render_for_exec` ends up as an argument of a new process."""
    return bool(env) and not exec_command.startswith(". ")


_GLOB_PLACEHOLDER = re.compile(r"\$\((inputs)\.([a-z][A-Za-z0-9_-]*)\)")


def glob_placeholders(glob: str) -> list[str]:
    """Model inputs named by ``$(inputs.x)`` inside an output glob (the service substitutes these)."""
    return [m.group(2) for m in _GLOB_PLACEHOLDER.finditer(glob)]


def render_glob(glob: str, bound: dict[str, Bound]) -> str:
    """Substitute ``$(inputs.x)`` in a glob: Data -> the file's basename, others -> the text (as the service)."""
    def value(match: re.Match) -> str:
        b = bound.get(match.group(2))
        if b is None or b.value is None:
            raise KeyError(match.group(2))
        return Path(str(b.value)).name if b.type == "Data" else str(b.value)

    return _GLOB_PLACEHOLDER.sub(value, glob)
