#!/usr/bin/env bash
# Create .venv-deltatwin (deltatwin-cli in its own environment: it pins its own dependencies) when missing.
# Used by tests/deltatwin to compare our verdicts with deltatwin-cli's. Usage: scripts/setup_deltatwin_cli.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-deltatwin}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import delta.manifest.parser" 2>/dev/null; then
    exit 0
fi
python=$(command -v python3.11 || command -v python3)
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check deltatwin-cli
"$venv/bin/python" -c "import delta.manifest.parser" && echo "deltatwin-cli installed in $venv"
