#!/usr/bin/env bash
# Install the reference implementation (PyPI dbos==3.4.0) into its own virtual environment, .bench/ref-venv.
# It is used only as a black box by `benchmarks/run.py --compare`; never import it into the dbosx venv.
# Idempotent: does nothing when the right version is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
REF_VERSION="${DBOS_REF_VERSION:-3.4.0}"
VENV=".bench/ref-venv"
PY="${PY:-python3}"

installed_version() {
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("dbos"))' 2>/dev/null || true
}

if [ -x "$VENV/bin/python" ] && [ "$(installed_version)" = "$REF_VERSION" ]; then
  echo "reference dbos==$REF_VERSION already installed in $VENV"
  exit 0
fi
mkdir -p .bench
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "dbos==$REF_VERSION"
echo "installed reference dbos==$(installed_version) in $VENV"
