#!/usr/bin/env bash
# Set everything up and start the server on its embedded defaults: SQLite in
# ./chat.db, the in-memory broker, http://127.0.0.1:8000. Extra arguments go to
# `chat serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh ""  # no extras (without an argument it would see ours)
exec .venv/bin/chat serve "$@"
