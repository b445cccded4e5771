"""The client installs alone: its wheel, in a fresh virtual environment, runs a bot.

`client/` is the `chat-hub-client` distribution (docs/client.md). The slow test builds
its wheel, installs it into a new venv (its dependencies from the package index), checks
that none of the server's dependencies came along, and chats with a real server from
there. The fast ones check that the server and the client share one protocol module.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import chat.protocol
import chat_client
import chat_client.protocol
from tests.harness import ROOT, Api, ServerProcess

SERVER_ONLY = ("fastapi", "sqlalchemy", "uvicorn", "jose", "chat")

BOT = """
import asyncio, json, sys

from chat_client import ChatClient, MessageFrame, __version__


async def main(url: str, token: str, room: str) -> None:
    async with asyncio.timeout(60):
        async with ChatClient(url, token=token, max_connect_attempts=5) as bot:
            joined = await bot.join(room)
            ack = await bot.send(room, "hello from a fresh venv")
            async for event in bot:  # its own message comes back to it, as to everyone
                if isinstance(event, MessageFrame) and event.seq == ack.seq:
                    break
    report = {
        "version": __version__,
        "user": bot.user.name,
        "joined": joined.room,
        "ack": {"room": ack.room, "seq": ack.seq},
        "echo": {"user": event.user.name, "body": event.body},
    }
    print(json.dumps(report), flush=True)


asyncio.run(main(*sys.argv[1:]))
"""


def run(*command: str | Path, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a command outside the repository, where nothing of it is on `sys.path`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(420)  # a wheel build, a venv and three small installs from the index
@pytest.mark.one_backend  # the wheel's contents are under test, not the fan-out
def test_the_client_wheel_alone_runs_a_bot(server: ServerProcess, api: Api, tmp_path: Path) -> None:
    # Build from a copy: an in-tree build/ left by an older build could add stale modules.
    source = tmp_path / "client"
    shutil.copytree(
        ROOT / "client",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", source, "-w", wheels, cwd=tmp_path)
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name == f"chat_hub_client-{chat_client.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        packages = {name.split("/")[0] for name in archive.namelist()}
        assert "chat_client/py.typed" in archive.namelist()
    assert packages == {"chat_client", f"chat_hub_client-{chat_client.__version__}.dist-info"}

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)  # no system site packages
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)

    probe = (
        "import importlib.util, json, chat_client; "
        f"print(json.dumps({{'file': chat_client.__file__, 'found': "
        f"[m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)]}}))"
    )
    found = json.loads(run(python, "-c", probe, cwd=tmp_path).stdout)
    assert found["found"] == []
    assert Path(found["file"]).is_relative_to(venv)  # the wheel's copy, not the checkout's

    admin = api.admin()
    bot = api.bot(admin)
    room = api.room(admin)
    (tmp_path / "bot.py").write_text(textwrap.dedent(BOT))
    done = run(python, tmp_path / "bot.py", server.ws, bot.token, room, cwd=tmp_path, timeout=90)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "version": chat_client.__version__,
        "user": bot.name,
        "joined": room,
        "ack": {"room": room, "seq": 1},
        "echo": {"user": bot.name, "body": "hello from a fresh venv"},
    }
    stored = api.history(admin, room)
    assert [(m["seq"], m["user"]["name"], m["body"]) for m in stored] == [
        (1, bot.name, "hello from a fresh venv")
    ]

    usage = run(venv / "bin" / "chat-client", "--help", cwd=tmp_path).stdout
    assert usage.startswith("usage: chat-client")
    assert all(command in usage for command in ("send", "tail", "tasks"))


def test_the_server_protocol_is_the_clients() -> None:
    """`chat.protocol` re-exports every public name of `chat_client.protocol`, defines none."""
    assert sorted(chat.protocol.__all__) == sorted(chat_client.protocol.__all__)
    for name in chat_client.protocol.__all__:
        assert getattr(chat.protocol, name) is getattr(chat_client.protocol, name), name
    tree = ast.parse((ROOT / "chat" / "protocol.py").read_text())
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        is_all = isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
        assert isinstance(node, ast.ImportFrom) or is_docstring or is_all, ast.unparse(node)


def test_the_server_pins_the_client_version() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"chat-hub-client=={chat_client.__version__}" in server["dependencies"]
    assert server["version"] == chat_client.__version__ == chat.__version__
