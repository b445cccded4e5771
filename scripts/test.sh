#!/usr/bin/env bash
# Set everything up (a .venv with the project and its dev tools) and run the whole
# test suite. Extra arguments go to pytest, e.g. `./scripts/test.sh -k presence`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh "[dev]"
# Two workers, each taking whole files (a file's tests share its servers): the tests
# mostly wait on servers and timers, so this halves the suite's time on 2 cores.
# CHAT_TEST_WORKERS=0 runs everything in this process (for a debugger).
exec .venv/bin/python -m pytest -n "${CHAT_TEST_WORKERS:-2}" --dist loadfile "$@"
