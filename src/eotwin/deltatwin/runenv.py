"""What a model process sees: a filtered environment, its interpreter first on PATH, thread counts, no secrets.

A model inherits only the system basics and eotwin's non-secret settings; a secret reaches it only as an
input it declares, and every secret value of the run is masked wherever text leaves a process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eotwin.deltatwin import command as cmd
from eotwin.deltatwin.envs import PythonEnv

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")


class Secrets:
    """Secret values of the run, to mask wherever text leaves a process (logs, records, errors)."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.values.add(value)

    def scrub(self, text: str) -> str:
        for secret in sorted(self.values, key=len, reverse=True):
            text = text.replace(secret, cmd.REDACTED)
        return text

    def scrub_all(self, value: Any) -> Any:
        """Every string in a JSON-like structure, keys included, scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_all(k): self.scrub_all(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_all(v) for v in value]
        return value


# what a model inherits from the runner's environment: the system basics and eotwin's non-secret service settings;
# everything else (CDSE keys, tokens, cloud credentials) reaches a model only as an input it declares
_INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH",
              "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE",
              "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_INHERITED_PREFIXES = ("LC_", "EOTWIN_")
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the runner's environment a model sees (never a variable whose name suggests a secret)."""
    kept = {}
    for name, value in environ.items():
        if any(word in name.upper() for word in _SECRET_WORDS):
            continue
        if name in _INHERITED or name.startswith(_INHERITED_PREFIXES):
            kept[name] = value
    return kept


def child_env(penv: PythonEnv, environment: dict[str, str], cpus: int, folder: Path) -> dict[str, str]:
    shim = folder / ".bin"
    shim.mkdir(exist_ok=True)
    for exe in ("python", "python3"):  # `python` in the command is the chosen environment's interpreter
        script = shim / exe
        script.write_text(f'#!/bin/sh\nexec "{penv.python}" "$@"\n')
        script.chmod(0o755)
    env = inherited_env(os.environ)
    if penv.kind == "venv":
        env.pop("PYTHONPATH", None)
    env["PATH"] = f"{shim}{os.pathsep}{penv.python.parent}{os.pathsep}{env.get('PATH', '')}"
    if penv.kind == "venv":
        env["VIRTUAL_ENV"] = str(penv.python.parent.parent)
    for var in _THREAD_VARS:
        env[var] = str(cpus)
    env.setdefault("MALLOC_ARENA_MAX", "2")  # glibc reserves 64 MB of address space per arena otherwise
    env["PYTHONUNBUFFERED"] = "1"
    env.update({str(k): str(v) for k, v in environment.items()})
    return env
