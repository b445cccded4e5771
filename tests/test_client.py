"""`chat_client.ChatClient` against real servers: resume, exactly-once sends, errors."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import time
from types import ModuleType

import httpx
import pytest

from chat_client import (
    AckFrame,
    AuthenticationError,
    ChatClient,
    ConnectionFailedError,
    MessageFrame,
    PresenceFrame,
    RequestError,
    RevokedError,
    TypingFrame,
    http_base_url,
)
from tests.conftest import ServerFactory
from tests.harness import ROOT, Account, Api, ServerProcess, one_node

FAST = {"backoff_initial": 0.05, "backoff_max": 0.5, "request_timeout": 10.0}


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    """A server with a small replay cap and room for bursts."""
    return module_servers(
        replay_cap=5, send_rate=5, send_burst=3, bot_send_rate=200, bot_send_burst=50
    )


@pytest.fixture(scope="module")
def admin(api: Api) -> Account:
    return api.admin()


class Follower:
    """Collects the messages of a client in the background."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.messages: list[MessageFrame] = []
        self.others: list[object] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.client:
            if isinstance(event, MessageFrame):
                self.messages.append(event)
            else:
                self.others.append(event)
            self.changed.set()

    async def wait_for(self, room: str, seq: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(m.room == room and m.seq >= seq for m in self.messages):
                self.changed.clear()
                await self.changed.wait()

    async def wait_for_body(self, body: str, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(m.body == body for m in self.messages):
                self.changed.clear()
                await self.changed.wait()

    def seqs(self, room: str) -> list[int]:
        return [m.seq for m in self.messages if m.room == room]


async def test_follower_sees_every_message_once_across_two_restarts(
    server: ServerProcess, api: Api, admin: Account
) -> None:
    """Restarts the module's server (same port and database) twice during a burst.

    With the small replay cap, each resume also pages part of the gap over HTTP.
    """
    follower_bot, sender_bot = api.bot(admin), api.bot(admin)
    room = api.room(admin)
    node = one_node(server)  # both clients on the process that restarts
    total, restart_at = 120, (30, 70)
    acks: list[AckFrame] = []
    spanning_restart: list[AckFrame] = []  # sends in flight while the server restarted

    async with (
        ChatClient(node.ws, token=follower_bot.token, **FAST) as follower_client,
        ChatClient(node.ws, token=sender_bot.token, **FAST) as sender,
    ):
        follower = Follower(follower_client)
        await follower_client.join(room)
        await sender.join(room)

        async def burst() -> None:
            for i in range(total):
                before = sender.reconnects
                ack = await sender.send(room, f"m{i}")
                acks.append(ack)
                if sender.reconnects != before:
                    spanning_restart.append(ack)

        sending = asyncio.create_task(burst())
        for threshold in restart_at:
            async with asyncio.timeout(20):
                while len(acks) < threshold:
                    await asyncio.sleep(0.01)
            await asyncio.to_thread(node.restart)
        async with asyncio.timeout(30):
            await sending
        await follower.wait_for(room, acks[-1].seq)

    assert sender.reconnects == 2
    # The follower only reads: one that was still waiting to retry when the second
    # restart began comes back once. What it received is what matters (below).
    assert follower_client.reconnects >= 1
    assert len(spanning_restart) >= 2, "each restart should catch a send in flight"
    assert [a.seq for a in acks] == list(range(1, total + 1))
    received = [m for m in follower.messages if m.room == room]
    assert [m.seq for m in received] == [a.seq for a in acks]  # every one, once, in order
    assert [m.body for m in received] == [f"m{i}" for i in range(total)]
    stored = httpx.get(
        f"{server.http}/api/rooms/{room}/messages",
        params={"after": 0, "limit": 200},
        headers=sender_bot.headers,
    ).json()["items"]
    assert [m["body"] for m in stored] == [f"m{i}" for i in range(total)]  # each stored once


async def test_join_since_pages_past_the_replay_cap(
    server: ServerProcess, api: Api, admin: Account
) -> None:
    bot = api.bot(admin)
    room = api.room(admin)
    async with ChatClient(server.ws, token=bot.token, **FAST) as client:
        await client.join(room)
        for i in range(12):
            await client.send(room, f"old {i}")
    async with ChatClient(server.ws, token=bot.token, **FAST) as client:
        follower = Follower(client)
        joined = await client.join(room, since=2)
        assert joined.replay_truncated and joined.last_seq == 12
        await client.send(room, "new")
        await follower.wait_for(room, 13)
        assert follower.seqs(room) == list(range(3, 14))
        assert client.last_seq[room] == 13


async def test_send_is_idempotent_by_ref(server: ServerProcess, api: Api, admin: Account) -> None:
    bot = api.bot(admin)
    room = api.room(admin)
    async with ChatClient(server.ws, token=bot.token, **FAST) as client:
        await client.join(room)
        first = await client.send(room, "once", ref="fixed-ref-1")
    async with ChatClient(server.ws, token=bot.token, **FAST) as client:
        await client.join(room)
        again = await client.send(room, "once", ref="fixed-ref-1")
    assert again == first
    assert len(api.history(bot, room, after=0)) == 1


async def test_rate_limited_sends_wait_and_all_land(
    server: ServerProcess, api: Api, admin: Account
) -> None:
    user = api.user()  # users get 5/s with a burst of 3 on this server
    room = api.room(admin)
    async with ChatClient(server.ws, token=user.token, **FAST) as client:
        await client.join(room)
        started = time.monotonic()
        acks = await asyncio.gather(*(client.send(room, f"r{i}") for i in range(8)))
        elapsed = time.monotonic() - started
    assert sorted(a.seq for a in acks) == list(range(1, 9))
    assert elapsed >= 0.5  # five of them had to wait for tokens
    assert sorted(m["body"] for m in api.history(user, room, after=0)) == [
        f"r{i}" for i in range(8)
    ]


async def test_bad_token_fails_fast(server: ServerProcess) -> None:
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        async with ChatClient(server.ws, token="not-a-token", **FAST):
            pass
    assert info.value.status == 403
    assert time.monotonic() - started < 3


async def test_revoked_bot_gets_a_terminal_error(
    server: ServerProcess, api: Api, admin: Account
) -> None:
    bot = api.bot(admin)
    room = api.room(admin)
    async with ChatClient(server.ws, token=bot.token, **FAST) as client:
        await client.join(room)
        r = api.client.delete(f"/api/bots/{bot.id}", headers=admin.headers)
        assert r.status_code == 204
        with pytest.raises(RevokedError):
            async with asyncio.timeout(5):
                async for _ in client:
                    pass
        with pytest.raises(RevokedError):
            await client.send(room, "too late")


async def test_request_errors_are_typed(server: ServerProcess, api: Api, admin: Account) -> None:
    bot = api.bot(admin)
    room = api.room(admin)
    async with ChatClient(server.ws, token=bot.token, **FAST) as client:
        with pytest.raises(RequestError) as info:
            await client.send(room, "not joined yet")
        assert info.value.code == "not_joined"
        with pytest.raises(RequestError) as info:
            await client.join("no-such-room-anywhere")
        assert info.value.code == "not_found"
        assert client.rooms == ()
        await client.join(room)
        assert (await client.ping()).type == "pong"


async def test_presence_and_typing_events(server: ServerProcess, api: Api, admin: Account) -> None:
    alice, bob = api.bot(admin), api.bot(admin)
    room = api.room(admin)
    async with (
        ChatClient(server.ws, token=alice.token, **FAST) as a,
        ChatClient(server.ws, token=bob.token, **FAST) as b,
    ):
        await a.join(room)
        follower = Follower(a)
        joined = await b.join(room)
        assert {u.name for u in joined.presence} >= {alice.name, bob.name}
        await b.typing(room)
        async with asyncio.timeout(5):
            while not any(isinstance(e, TypingFrame) for e in follower.others):
                follower.changed.clear()
                await follower.changed.wait()
        presence = [e for e in follower.others if isinstance(e, PresenceFrame)]
        typing = [e for e in follower.others if isinstance(e, TypingFrame)]
        assert any(p.event == "join" and p.user.name == bob.name for p in presence)
        assert typing[0].user.name == bob.name and typing[0].room == room


async def test_token_provider_refreshes_a_short_lived_token(make_server: ServerFactory) -> None:
    server = make_server(access_token_ttl=3)
    api = Api(server)
    user = api.user()
    room = api.room(user)
    refresh_token = user.refresh_token
    calls = 0

    async def provider() -> str:  # the usual shape: trade the refresh token for a new pair
        nonlocal calls, refresh_token
        calls += 1
        async with httpx.AsyncClient(base_url=server.http) as http:
            r = await http.post("/api/auth/refresh", json={"refresh_token": refresh_token})
        r.raise_for_status()
        refresh_token = r.json()["refresh_token"]
        token: str = r.json()["access_token"]
        return token

    try:
        async with ChatClient(server.ws, token_provider=provider, **FAST) as client:
            await client.join(room)
            await asyncio.sleep(3.5)  # past the first token's expiry
            ack = await client.send(room, "still here")
            assert ack.seq == 1
            assert calls >= 2
            assert client.reconnects == 0  # refreshed in place with an auth frame
    finally:
        api.close()


async def test_a_frozen_server_is_noticed_and_the_client_resumes(
    server: ServerProcess, api: Api, admin: Account
) -> None:
    bot = api.bot(admin)
    room = api.room(admin)
    node = one_node(server)  # the process to freeze, and the one the client talks to
    assert node.proc is not None
    async with ChatClient(
        node.ws, token=bot.token, ping_interval=0.3, ping_timeout=0.5, open_timeout=1, **FAST
    ) as client:
        follower = Follower(client)
        await client.join(room)
        os.kill(node.proc.pid, signal.SIGSTOP)  # the TCP connection stays open, silent
        try:
            async with asyncio.timeout(5):
                while client.connected:
                    await asyncio.sleep(0.05)
        finally:
            os.kill(node.proc.pid, signal.SIGCONT)
        ack = await client.send(room, "after the freeze")
        await follower.wait_for(room, ack.seq)
        assert client.reconnects >= 1
        assert follower.seqs(room) == [1]


async def test_unreachable_server_gives_up_after_the_attempts() -> None:
    from tests.harness import free_port

    started = time.monotonic()
    with pytest.raises(ConnectionFailedError):
        async with ChatClient(
            f"ws://127.0.0.1:{free_port()}/ws", token="t", max_connect_attempts=3, **FAST
        ):
            pass
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("ws_url", "http_url"),
    [
        ("ws://127.0.0.1:8000/ws", "http://127.0.0.1:8000"),
        ("wss://chat.example.com/ws", "https://chat.example.com"),
        ("wss://example.com/chat/ws/", "https://example.com/chat"),
    ],
)
def test_http_base_url(ws_url: str, http_url: str) -> None:
    assert http_base_url(ws_url) == http_url


def test_importing_the_client_needs_no_server_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, chat_client, chat_client.cli, chat_client.tasks_cli; "
        "heavy = {'fastapi', 'sqlalchemy', 'jose', 'starlette', 'uvicorn', 'redis', 'chat'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/remind 10m stretch", (600, "10m", "stretch")),
        ("/remind 2h  stand up\nnow ", (7200, "2h", "stand up\nnow")),
        ("/remind 90s tea", (90, "90s", "tea")),
        ("hello", None),
        ("/reminder 1s x", None),
    ],
)
def test_remind_bot_parses_commands(body: str, expected: tuple[int, str, str] | None) -> None:
    assert load_example("remind_bot.py").parse(body) == expected


@pytest.mark.parametrize("body", ["/remind", "/remind 10 tea", "/remind 5d tea", "/remind 1m"])
def test_remind_bot_explains_bad_commands(body: str) -> None:
    remind_bot = load_example("remind_bot.py")
    assert remind_bot.parse(body) == remind_bot.USAGE
    assert "at most 24h" in remind_bot.parse("/remind 25h late")


async def test_example_bots_answer_in_the_room(
    server: ServerProcess, api: Api, admin: Account
) -> None:
    echo_bot, remind_bot = load_example("echo_bot.py"), load_example("remind_bot.py")
    room = api.room(admin)
    user = api.user()
    async with (
        ChatClient(server.ws, token=api.bot(admin).token, **FAST) as echo_client,
        ChatClient(server.ws, token=api.bot(admin).token, **FAST) as remind_client,
        ChatClient(server.ws, token=user.token, **FAST) as human,
    ):
        await echo_client.join(room)
        await remind_client.join(room)
        bots = [
            asyncio.create_task(echo_bot.echo(echo_client)),
            asyncio.create_task(remind_bot.remind(remind_client)),
        ]
        follower = Follower(human)
        await human.join(room)
        await human.send(room, "/remind 1s tea")
        await human.send(room, "/remind later")
        await follower.wait_for_body(f"@{user.name} reminder: tea")
        for bot in bots:
            bot.cancel()
    bodies = [m.body for m in follower.messages]
    assert f"{user.name} said: /remind 1s tea" in bodies
    assert f"@{user.name} OK, I will remind you in 1s." in bodies
    assert f"@{user.name} {remind_bot.USAGE}" in bodies
    assert not any(b.startswith("echo_") or " said: @" in b for b in bodies)  # no bot loops
