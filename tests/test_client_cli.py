"""`chat send` and `chat tail` run from a shell against a real server."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Account, Api, ServerProcess, free_port, unique

CHAT = f"{shlex.quote(sys.executable)} -m chat"


@pytest.fixture(scope="module")
def admin(api: Api) -> Account:
    return api.admin()


@pytest.fixture
def shell_env(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return {**env, "CHAT_URL": server.ws, "HOME": str(tmp_path)}


def create_bot(server: ServerProcess) -> tuple[int, str]:
    """`chat bots create`: the bot's id and its token (the output's last line)."""
    done = server.cli("bots", "create", unique("b"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    found = re.search(r"\(id (\d+)\)", done.stdout)
    assert found, done.stdout
    return int(found.group(1)), lines[-1]


def sh(
    command: str, env: dict[str, str], stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        shell=True,
        env=env,
        cwd=env["HOME"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Background:
    """A shell command whose stdout lines are collected as they arrive."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            f"exec {command}",
            shell=True,
            env=env,
            cwd=env["HOME"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def read(self, count: int, timeout: float = 15) -> list[str]:
        return [self.lines.get(timeout=timeout) for _ in range(count)]

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        """SIGTERM the command; its exit status and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 15) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for job in started:
        if job.proc.poll() is None:
            os.killpg(job.proc.pid, signal.SIGKILL)
            job.proc.wait()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_send_and_tail_from_a_shell(
    server: ServerProcess,
    api: Api,
    admin: Account,
    shell_env: dict[str, str],
    background: list[Background],
) -> None:
    token = api.bot(admin).token
    room = api.room(admin)
    env = {**shell_env, "CHAT_TOKEN": token}
    tail = Background(f"{CHAT} tail --room {room} --since 0 --json", env)
    background.append(tail)

    sent = sh(f"{CHAT} send --room {room} 'hello from the shell'", env)
    assert sent.returncode == 0, sent.stderr
    assert re.fullmatch(rf"sent to {room} as seq 1 \(id \d+\)\n", sent.stdout), sent.stdout
    piped = sh(f"printf 'two\\nlines\\n' | {CHAT} send --room {room} --json -", env)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["seq"] == 2

    first, second = (json.loads(line) for line in tail.read(2))
    assert (first["room"], first["seq"], first["body"]) == (room, 1, "hello from the shell")
    assert (second["seq"], second["body"]) == (2, "two\nlines")
    assert first["user"]["role"] == "bot" and {"id", "ts"} <= first.keys()
    assert tail.stop() == (0, "")

    plain = Background(f"{CHAT} tail --room {room} --since 1", env)
    background.append(plain)
    (line,) = plain.read(1)
    assert re.fullmatch(rf"\S+Z #{room} \[2\] \S+: two", line), line
    assert plain.read(1) == ["    lines"]
    assert plain.stop() == (0, "")


def test_a_revoked_token_fails_with_one_clear_line(
    server: ServerProcess,
    api: Api,
    admin: Account,
    shell_env: dict[str, str],
    background: list[Background],
) -> None:
    bot_id, token = create_bot(server)
    room = api.room(admin)
    env = {**shell_env, "CHAT_TOKEN": token}
    tail = Background(f"{CHAT} tail --room {room} --since 0", env)
    background.append(tail)
    assert sh(f"{CHAT} send --room {room} hi", env).returncode == 0
    assert tail.read(1)[0].endswith(": hi")

    r = api.client.delete(f"/api/bots/{bot_id}", headers=admin.headers)
    assert r.status_code == 204
    code, stderr = tail.wait()  # the open connection is closed with 4003
    assert code == 3
    assert one_line(stderr).startswith("chat tail: authentication failed: the token was revoked")

    tail_again = sh(f"{CHAT} tail --room {room}", env)
    assert tail_again.returncode == 3, tail_again.stderr
    assert one_line(tail_again.stderr).endswith(
        "authentication failed: the server refused the token (HTTP 403)"
    )
    send_again = sh(f"{CHAT} send --room {room} again", env)  # over REST: a 401
    assert send_again.returncode == 3, send_again.stderr
    assert one_line(send_again.stderr).startswith(
        "chat send: authentication failed: the server refused the token (HTTP 401)"
    )


def test_other_failures_are_one_line_and_non_zero(
    server: ServerProcess, api: Api, admin: Account, shell_env: dict[str, str]
) -> None:
    env = {**shell_env, "CHAT_TOKEN": api.bot(admin).token}
    no_room = sh(f"{CHAT} send --room no-such-room hi", env)
    assert no_room.returncode == 1
    assert one_line(no_room.stderr) == (
        "chat send: cannot send to 'no-such-room': no such room, or you may not read it (not_found)"
    )

    no_token = sh(f"{CHAT} tail --room x", {**env, "CHAT_TOKEN": ""})
    assert no_token.returncode == 2
    assert one_line(no_token.stderr) == "chat tail: no token: pass --token or set CHAT_TOKEN"

    down = sh(f"{CHAT} send --url ws://127.0.0.1:{free_port()}/ws --retries 1 --room x hi", env)
    assert down.returncode == 1
    assert one_line(down.stderr).startswith("chat send: cannot reach http://127.0.0.1:")


def test_chat_client_is_the_same_tools_under_its_own_name(shell_env: dict[str, str]) -> None:
    """The client distribution's own command: its tools and tasks, errors named after it."""
    client = f"{shlex.quote(sys.executable)} -m chat_client"
    usage = sh(f"{client} --help", shell_env)
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith("usage: chat-client [-h]")
    commands = "{send,tail,edit,delete,react,read,notifications,notify,search,tasks}"
    assert commands in usage.stdout
    no_token = sh(f"{client} tail --room x", {**shell_env, "CHAT_TOKEN": ""})
    assert no_token.returncode == 2
    assert one_line(no_token.stderr) == "chat-client tail: no token: pass --token or set CHAT_TOKEN"
    tasks = sh(f"{client} tasks list", {**shell_env, "CHAT_TOKEN": ""})
    assert tasks.returncode == 2
    assert one_line(tasks.stderr) == "chat-client: no token: pass --token or set CHAT_TOKEN"


def test_tail_stops_cleanly_on_sigterm_even_while_connecting(
    shell_env: dict[str, str], background: list[Background]
) -> None:
    env = {**shell_env, "CHAT_TOKEN": "whatever", "CHAT_URL": f"ws://127.0.0.1:{free_port()}/ws"}
    tail = Background(f"{CHAT} tail --room x", env)  # keeps retrying: nothing listens
    background.append(tail)
    time.sleep(1.5)
    assert tail.proc.poll() is None
    assert tail.stop() == (0, "")
