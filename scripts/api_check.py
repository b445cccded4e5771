#!/usr/bin/env python3
"""The OpenAPI document against a live server: schemathesis with every check on.

Starts `chat serve` on a free port (a fresh SQLite database in a temporary
directory, the in-memory broker), creates an admin with `chat users create`,
and runs `schemathesis run --checks all` against `/openapi.json`, signed in as
that admin: schemathesis fetches its token from `POST /api/auth/token` and
fetches a new one whenever an answer is a 401 (after `POST /api/auth/logout`,
say). Exits with schemathesis's code: non-zero on any failure.

    .venv/bin/python scripts/api_check.py              # the recorded seed
    .venv/bin/python scripts/api_check.py --seed 7     # another seed
    .venv/bin/python scripts/api_check.py -- --include-path-regex '^/api/rooms'

The seed and the number of examples are fixed so that a run is repeatable and
finishes in about two minutes on 2 cores; a failure found with another seed is
reproduced by passing that seed. The server's log is printed when it fails.

Left out of the document, so not tested here (schemathesis cannot judge them):
`/ws` (a WebSocket, not in OpenAPI), `/metrics` (Prometheus text) and the static
pages `/`, `/admin`, `/static/*`, `/docs`, `/redoc` (HTML; tests/test_docs.py
covers the last two). Every route in the document is tested, `/api/stream` (a
refusal is JSON; an accepted stream never ends, so its cases are bounded by the
request timeout below and it answers the first events at once) and the
multipart `POST /api/files` included.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEED = 20_260_612  # recorded: the seed of every CI run; see docs/operations.md
MAX_EXAMPLES = 25  # per operation and phase
ADMIN = "api_check_admin"

# Limits the run would trip from one address in seconds (every check signs in and
# registers from 127.0.0.1); what they refuse is still tested by tests/test_limits.py.
SETTINGS = {
    "registrations_per_ip": "1000000",
    "room_creations_per_user": "1000000",
    "login_failures_per_ip": "1000000",
    "login_failures_per_account": "1000000",
    # Cheap argon2: the run signs in again after every 401.
    "password_hash_time_cost": "1",
    "password_hash_memory_kib": "1024",
    "password_hash_parallelism": "1",
}

CONFIG = """\
[auth.dynamic.openapi.OAuth2PasswordBearer]
path = "/api/auth/token"
payload_content_type = "application/x-www-form-urlencoded"
extract_selector = "/access_token"
payload = {{ username = "{user}", password = "{password}" }}

# The stream's Last-Event-ID is a cursor the server signs (HMAC): no generator can
# forge one, and one the server did not write is refused with 400 `bad_cursor`, by
# design (docs/protocol.md). Every other answer of the operation is checked as usual.
[[operations]]
include-path = "/api/stream"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]

# A `demo` task's `steps * delay` is at most 3600 s: a rule on the product of two
# fields, which JSON Schema cannot state (each bound alone is in the document).
[[operations]]
include-path = "/api/tasks"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited at start")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /healthz in {timeout:g} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--max-examples", type=int, default=MAX_EXAMPLES)
    parser.add_argument("extra", nargs="*", help="more `schemathesis run` arguments")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="api-check-") as tmp:
        work = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env |= {f"CHAT_{k.upper()}": v for k, v in SETTINGS.items()}
        env |= {
            "CHAT_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'chat.db'}",
            "CHAT_DATA_DIR": str(work / "data"),
            "CHAT_JWT_SECRET": secrets.token_hex(32),
            "PYTHONUNBUFFERED": "1",
        }
        log_path = work / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "chat", "serve", "--port", str(port)],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(url, server)
            password = secrets.token_urlsafe(18)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "chat",
                    "users",
                    "create",
                    ADMIN,
                    "--admin",
                    "--password-stdin",
                ],
                cwd=work,
                env=env,
                input=password + "\n",
                text=True,
                check=True,
                capture_output=True,
            )
            config = work / "schemathesis.toml"
            config.write_text(CONFIG.format(user=ADMIN, password=password))
            command = [
                str(BIN / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--seed",
                str(args.seed),
                "--max-examples",
                str(args.max_examples),
                "--workers",
                "2",
                "--request-timeout",
                "5",
                "--generation-database",
                "none",
                "--no-color",
                # How fast examples are drawn is no property of the API: a pattern that
                # is slow to draw from must not stop the run.
                "--suppress-health-check",
                "too_slow",
                *args.extra,
            ]
            print(f"api check: seed {args.seed}, {args.max_examples} examples per operation")
            code = subprocess.run(command, cwd=work, env=env, check=False).returncode
            if code != 0:
                print(f"api check FAILED (seed {args.seed}); server log:", file=sys.stderr)
                print(log_path.read_text(errors="replace")[-20_000:], file=sys.stderr)
            return code
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    sys.exit(main())
