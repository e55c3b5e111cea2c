"""What the component validator reports: findings (severity, file, key, what fails at run time) and the report.

Also the small readers every check shares (a mapping or ``{}``, a parameter's type, the closest known name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    file: str
    key: str
    code: str
    message: str

    def line(self) -> str:
        where = f"{self.file}:{self.key}" if self.key else self.file
        return f"{self.severity}: {where}: {self.message}"


@dataclass
class Report:
    root: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"component": str(self.root), "ok": self.ok, "errors": len(self.errors),
                "warnings": len(self.warnings), "findings": [asdict(f) for f in self.findings]}


class Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, file: str, key: str, code: str, message: str) -> None:
        self.findings.append(Finding("error", file, key, code, message))

    def warn(self, file: str, key: str, code: str, message: str) -> None:
        self.findings.append(Finding("warning", file, key, code, message))


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def type_of(param: Any) -> str | None:
    t = as_dict(param).get("type")
    return t if isinstance(t, str) else None


def closest(word: str, options: Any) -> str:
    import difflib

    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.75)
    return f"; did you mean '{match[0]}'?" if match else ""
