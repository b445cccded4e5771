"""The README's promises, run as written: the bot snippet chats with a registered user."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT, Api, ServerProcess, connect, join, recv_until, say

README = (ROOT / "README.md").read_text()


def readme_block(language: str, containing: str) -> str:
    for block in re.findall(rf"```{language}\n(.*?)```", README, re.S):
        if containing in block:
            return str(block)
    raise AssertionError(f"no {language} block with {containing!r} in README.md")


async def test_readme_bot_snippet_chats_with_a_user(
    server: ServerProcess, api: Api, tmp_path: Path
) -> None:
    # The tour's shell steps, against this server's database.
    created = server.cli("bots", "create", "echo")
    assert created.returncode == 0, created.stderr
    (tmp_path / "bot.token").write_text(created.stdout.strip().splitlines()[-1])
    person = api.user()
    api.room(person, "general")
    snippet = readme_block("python", "ChatClient").replace("ws://127.0.0.1:8000/ws", server.ws)
    bot = subprocess.Popen([sys.executable, "-c", snippet], cwd=tmp_path)
    try:
        ws = await connect(server, person.token)
        joined = await join(ws, "general")
        if "echo" not in [u["name"] for u in joined["presence"]]:
            await recv_until(ws, "presence", timeout=20, event="join")  # wait for the bot
        await say(ws, "general", "hello bot")
        reply = await recv_until(ws, "message", timeout=10, body="echo: hello bot")
        assert reply["user"]["name"] == "echo"
        assert reply["user"]["role"] == "bot"
        await ws.close()
    finally:
        bot.terminate()
        bot.wait(10)


def test_readme_names_the_commands_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test.sh" in README and "./scripts/test.sh" in ci
    assert "./scripts/serve.sh" in README
