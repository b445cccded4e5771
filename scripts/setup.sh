#!/usr/bin/env bash
# Create .venv and install the project into it (with EXTRAS, e.g. "[dev]"): the client
# distribution (./client, which the server depends on) and the server, in one pip call
# so the client's name resolves to ./client, never to the package index.
# Skips pip when neither pyproject.toml has changed since the last install, so a
# restart does not need the package index. Sourced by serve.sh and test.sh.
set -euo pipefail
extras=${1:-}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed$(echo "$extras" | tr -dc 'a-z')"
want=$(cat pyproject.toml client/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ./client -e ".$extras"
  echo "$want" > "$stamp"
fi
