#!/usr/bin/env bash
# Set everything up (a .venv with the project and its dev tools) and run the whole
# test suite. Extra arguments go to pytest, e.g. `./scripts/test.sh -k presence`.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[dev]"
exec .venv/bin/python -m pytest "$@"
