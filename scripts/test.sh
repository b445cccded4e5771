#!/usr/bin/env bash
# Set everything up (a .venv with the project and its dev tools) and run the whole
# test suite. Extra arguments go to pytest, e.g. `./scripts/test.sh -k presence`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh "[dev]"
exec .venv/bin/python -m pytest "$@"
