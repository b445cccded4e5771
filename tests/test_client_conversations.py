"""The client and its CLI in conversations, against real servers: edits, deletions,
reactions, replies, read cursors, removal, and notifications (live, resumed, sent from
a shell with `chat notify`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_client import (
    ChatClient,
    DeletedFrame,
    EditedFrame,
    MessageFrame,
    NotificationFrame,
    NotificationsReadFrame,
    ReactionFrame,
    ReadFrame,
    RemovedFrame,
    RequestError,
)
from tests.faultproxy import FaultProxy
from tests.harness import (
    Account,
    Api,
    Server,
    ServerPair,
    commit_unpublished_edit,
    one_node,
    unique,
)
from tests.test_client_cli import Background, one_line, sh

FAST: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.3, "request_timeout": 10.0}
CHAT = f"{shlex.quote(sys.executable)} -m chat"


@pytest.fixture(scope="module")
def admin(api: Api) -> Account:
    return api.admin()


@pytest.fixture
def shell_env(server: Server, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return {**env, "CHAT_URL": server.ws, "HOME": str(tmp_path)}


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


class Events:
    """Everything a client's iteration yields, collected in the background."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.items: list[object] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.client:
            self.items.append(event)
            self._changed.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]

    async def wait(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def wait_count(self, kind: type[Any], count: int, timeout: float = 10.0) -> list[Any]:
        await self.wait(lambda: len(self.of(kind)) >= count, timeout)
        return self.of(kind)


def notify(api: Api, sender: Account, username: str, body: str, **extra: str) -> dict[str, Any]:
    r = api.client.post(
        "/api/notifications",
        json={"username": username, "title": "t", "body": body, **extra},
        headers=sender.headers,
    )
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


def inbox(api: Api, account: Account, after: int = 0) -> list[dict[str, Any]]:
    r = api.client.get(
        "/api/notifications", params={"after": after, "limit": 100}, headers=account.headers
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# --- edits, deletions, reactions, replies ------------------------------------------


async def test_edit_delete_and_react_return_the_event_carrying_their_ref(
    server: Server, api: Api, admin: Account
) -> None:
    author, other = api.bot(admin), api.bot(admin)
    room = api.room(admin)
    async with (
        ChatClient(server.ws, token=author.token, **FAST) as mine,
        ChatClient(server.ws, token=other.token, **FAST) as theirs,
    ):
        await mine.join(room)
        await theirs.join(room)
        own, seen = Events(mine), Events(theirs)
        first = await mine.send(room, "lunch at 12?")
        reply = await theirs.send(room, "yes", reply_to=first.seq)

        edited = await mine.edit(room, first.seq, "lunch at 12:30?")
        assert isinstance(edited, EditedFrame) and edited.ref is not None
        assert (edited.room, edited.seq, edited.body) == (room, first.seq, "lunch at 12:30?")
        assert edited.edited_at

        on = await mine.react(room, first.seq, "👍")
        assert isinstance(on, ReactionFrame) and on.ref is not None
        assert (on.seq, on.emoji, on.users) == (first.seq, "👍", [author.name])
        both = await theirs.react(room, first.seq, "👍")
        assert both.users == [author.name, other.name]
        off = await mine.react(room, first.seq, "👍", on=False)
        assert off.users == [other.name]

        deleted = await mine.delete(room, first.seq)
        assert isinstance(deleted, DeletedFrame) and deleted.ref is not None
        assert (deleted.room, deleted.seq) == (room, first.seq)

        # Every member sees every change once, in order, the author's own included.
        for events in (own, seen):
            await events.wait_count(DeletedFrame, 1)
            changes = [
                e for e in events.items if isinstance(e, EditedFrame | ReactionFrame | DeletedFrame)
            ]
            assert [type(c).__name__ for c in changes] == [
                "EditedFrame",
                "ReactionFrame",
                "ReactionFrame",
                "ReactionFrame",
                "DeletedFrame",
            ]
            assert [c.users for c in changes if isinstance(c, ReactionFrame)] == [
                [author.name],
                [author.name, other.name],
                [other.name],
            ]
        answer = next(m for m in seen.of(MessageFrame) if m.seq == reply.seq)
        assert answer.reply_to is not None and answer.reply_to.seq == first.seq
        assert answer.reply_to.excerpt.startswith("lunch at 12")

    stored = {m["seq"]: m for m in api.history(author, room, after=0)}
    assert stored[first.seq]["deleted"] is True and stored[first.seq]["body"] == ""
    assert stored[reply.seq]["reply_to"]["seq"] == first.seq


async def test_a_change_refused_raises_the_servers_error(
    server: Server, api: Api, admin: Account
) -> None:
    owner, author, other = api.user(), api.bot(admin), api.bot(admin)
    room = api.room(owner)
    async with (
        ChatClient(server.ws, token=author.token, **FAST) as mine,
        ChatClient(server.ws, token=other.token, **FAST) as theirs,
        ChatClient(server.ws, token=owner.token, **FAST) as owners,
    ):
        for client in (mine, theirs, owners):
            await client.join(room)
        ack = await mine.send(room, "my words")

        with pytest.raises(RequestError) as refused:
            await theirs.edit(room, ack.seq, "not yours to change")
        assert refused.value.code == "forbidden"
        with pytest.raises(RequestError) as refused:
            await theirs.delete(room, ack.seq)
        assert refused.value.code == "forbidden"
        with pytest.raises(RequestError) as refused:
            await mine.edit(room, ack.seq + 100, "no such message")
        assert refused.value.code == "not_found"
        with pytest.raises(RequestError) as refused:
            await mine.react("no-such-room-" + unique(), 1, "👍")
        assert refused.value.code == "not_joined"
        with pytest.raises(ValueError):
            await mine.react(room, ack.seq, "x" * 17)

        # The client stays usable, and the room's owner may delete anyone's message.
        assert (await owners.delete(room, ack.seq)).seq == ack.seq
    assert api.history(author, room, after=0)[0]["body"] == ""


async def test_rate_limited_changes_wait_and_all_land(make_server: Callable[..., Server]) -> None:
    """Edits and reactions share the send bucket: refused ones are sent again after
    `retry_after`, with their ref, and each call returns its own confirmation."""
    server = make_server(send_rate=4, send_burst=2)
    with contextlib.closing(Api(server)) as api:
        user = api.user()
        room = api.room(user)
        async with ChatClient(server.ws, token=user.token, **FAST) as client:
            await client.join(room)
            ack = await client.send(room, "draft")
            started = time.monotonic()
            async with asyncio.timeout(20):
                edits = await asyncio.gather(
                    *(client.edit(room, ack.seq, f"draft {i}") for i in range(5)),
                    *(client.react(room, ack.seq, emoji) for emoji in ("👍", "🎉", "👀")),
                )
            elapsed = time.monotonic() - started
        stored = api.history(user, room, after=0)[0]

    assert elapsed >= 1.0  # at 4 a second from a burst of 2, most had to wait
    bodies = [e.body for e in edits if isinstance(e, EditedFrame)]
    assert sorted(bodies) == [f"draft {i}" for i in range(5)]
    assert stored["body"] in bodies and stored["edited_at"] is not None
    assert stored["reactions"] == {e: [user.name] for e in ("👍", "🎉", "👀")}


async def test_resuming_a_room_brings_the_changes_made_meanwhile(
    server: Server, api: Api, admin: Account
) -> None:
    """A client that was away: the room's changes come after `joined`, each state once."""
    author, away = api.bot(admin), api.bot(admin)
    room = api.room(admin)
    node = one_node(server)
    proxy = FaultProxy(node.port).start()
    try:
        async with (
            ChatClient(node.ws, token=author.token, **FAST) as mine,
            ChatClient(f"ws://127.0.0.1:{proxy.port}/ws", token=away.token, **FAST) as theirs,
        ):
            await mine.join(room)
            await theirs.join(room)
            events = Events(theirs)
            acks = [await mine.send(room, f"m{i}") for i in range(3)]
            await events.wait_count(MessageFrame, 3)

            proxy.cut()
            async with asyncio.timeout(10):
                while theirs.connected:
                    await asyncio.sleep(0.02)
            await mine.edit(room, acks[0].seq, "m0 (edited)")
            await mine.edit(room, acks[0].seq, "m0 (edited twice)")
            await mine.react(room, acks[1].seq, "🎉")
            await mine.delete(room, acks[2].seq)
            proxy.restore()

            await events.wait(lambda: bool(events.of(DeletedFrame)), timeout=15)
            await mine.react(room, acks[1].seq, "👀")  # live again, after the resume
            await events.wait(lambda: any(r.emoji == "👀" for r in events.of(ReactionFrame)))
    finally:
        proxy.stop()

    assert theirs.reconnects >= 1
    edits = [e.body for e in events.of(EditedFrame)]
    assert edits[-1] == "m0 (edited twice)" and len(edits) == len(set(edits))
    assert [(r.emoji, r.users) for r in events.of(ReactionFrame)] == [
        ("🎉", [author.name]),
        ("👀", [author.name]),
    ]
    assert [d.seq for d in events.of(DeletedFrame)] == [acks[2].seq]
    assert [m.seq for m in events.of(MessageFrame)] == [a.seq for a in acks]


async def test_a_rejoin_asks_for_the_changes_after_the_newest_version_seen(
    server: Server, api: Api, admin: Account
) -> None:
    """A change made below the client's last seq whose event never went out (its
    process died before publishing) still reaches the client when it resumes."""
    author, away = api.bot(admin), api.bot(admin)
    room = api.room(admin)
    node = one_node(server)
    proxy = FaultProxy(node.port).start()
    try:
        async with (
            ChatClient(node.ws, token=author.token, **FAST) as mine,
            ChatClient(f"ws://127.0.0.1:{proxy.port}/ws", token=away.token, **FAST) as theirs,
        ):
            await mine.join(room)
            joined = await theirs.join(room)
            assert theirs.change_version(room) == joined.changes_version
            events = Events(theirs)
            acks = [await mine.send(room, f"m{i}") for i in range(3)]
            seen = await mine.edit(room, acks[2].seq, "m2 (edited)")
            await events.wait_count(EditedFrame, 1)
            # The server's next check confirms it (`changes_checked`).
            async with asyncio.timeout(6):
                while theirs.change_version(room) != seen.version:
                    await asyncio.sleep(0.05)

            proxy.cut()
            async with asyncio.timeout(10):
                while theirs.connected:
                    await asyncio.sleep(0.02)
            lost = await commit_unpublished_edit(server, room, acks[0].seq, "m0 (lost)", at_seq=1)
            proxy.restore()

            await events.wait(lambda: any(e.body == "m0 (lost)" for e in events.of(EditedFrame)))
            assert theirs.change_version(room) == lost
    finally:
        proxy.stop()
    assert theirs.reconnects >= 1
    assert [(e.seq, e.version) for e in events.of(EditedFrame)] == [
        (acks[2].seq, seen.version),
        (acks[0].seq, lost),
    ]


@pytest.mark.two_nodes
async def test_a_change_overtaken_by_a_later_one_still_comes_after_a_resume_elsewhere(
    server: Server, api: Api, admin: Account
) -> None:
    """A change whose event never went out, then a later one whose event the client
    saw: the client drops at once and resumes on a process that does not watch the
    room. Resuming from the newest version seen would skip the first change; the
    client resumes from the version the server confirmed instead, and gets it."""
    assert isinstance(server, ServerPair)
    first, second = server.nodes
    author, away = api.bot(admin), api.bot(admin)
    room = api.room(admin)
    proxy = FaultProxy(first.port).start()
    try:
        async with (
            ChatClient(first.ws, token=author.token, **FAST) as mine,
            ChatClient(f"ws://127.0.0.1:{proxy.port}/ws", token=away.token, **FAST) as theirs,
        ):
            await mine.join(room)
            await theirs.join(room)
            events = Events(theirs)
            acks = [await mine.send(room, f"m{i}") for i in range(3)]
            await events.wait_count(MessageFrame, 3)
            lost = await commit_unpublished_edit(server, room, acks[0].seq, "m0 (lost)", at_seq=3)
            seen = await mine.edit(room, acks[2].seq, "m2 (edited)")
            await events.wait_count(EditedFrame, 1)
            assert lost < seen.version
            # Not confirmed past the change that never arrived (its read-back takes two
            # checks, 2 s apart: this is well inside them).
            assert (theirs.change_version(room) or 0) < lost

            proxy.cut()
            proxy.upstream = ("127.0.0.1", second.port)  # nobody watches the room there
            async with asyncio.timeout(10):
                while theirs.connected:
                    await asyncio.sleep(0.02)
            proxy.restore()

            await events.wait(lambda: any(e.body == "m0 (lost)" for e in events.of(EditedFrame)))
            await frames_settle(events)
    finally:
        proxy.stop()
    assert theirs.reconnects >= 1
    # Each change once, in the order the client learnt of them.
    assert [(e.seq, e.version) for e in events.of(EditedFrame)] == [
        (acks[2].seq, seen.version),
        (acks[0].seq, lost),
    ]


async def frames_settle(events: Events, quiet: float = 0.5) -> None:
    """Wait until nothing new has arrived for `quiet` seconds."""
    count = -1
    while count != len(events.items):
        count = len(events.items)
        await asyncio.sleep(quiet)


async def test_more_changes_than_a_join_resends_are_read_from_history(
    make_server: Callable[..., Server],
) -> None:
    """Past the server's cap (`changes_truncated`), the client re-reads the history up
    to its position and delivers each message's state: it ends as history shows."""
    server = make_server(replay_cap=3)
    with contextlib.closing(Api(server)) as api:
        author, away = api.user(), api.user()
        room = api.room(author)
        node = one_node(server)
        proxy = FaultProxy(node.port).start()
        try:
            async with (
                ChatClient(node.ws, token=author.token, **FAST) as mine,
                ChatClient(f"ws://127.0.0.1:{proxy.port}/ws", token=away.token, **FAST) as theirs,
            ):
                await mine.join(room)
                await theirs.join(room)
                events = Events(theirs)
                acks = [await mine.send(room, f"m{i}") for i in range(6)]
                await events.wait_count(MessageFrame, 6)

                proxy.cut()
                async with asyncio.timeout(10):
                    while theirs.connected:
                        await asyncio.sleep(0.02)
                for ack in acks[:5]:  # seven changes, more than the three a join resends
                    await mine.edit(room, ack.seq, f"m{ack.seq - 1} edited")
                await mine.react(room, acks[0].seq, "👍")
                await mine.delete(room, acks[1].seq)
                proxy.restore()
                await events.wait(lambda: bool(events.of(DeletedFrame)), timeout=15)
                await mine.send(room, "after")
                await events.wait_count(MessageFrame, 7)
        finally:
            proxy.stop()
        history = {m["seq"]: m for m in api.history(author, room, after=0)}

    state: dict[int, dict[str, Any]] = {a.seq: {"body": f"m{a.seq - 1}"} for a in acks}
    for event in events.items:
        if isinstance(event, EditedFrame):
            state[event.seq]["body"] = event.body
        elif isinstance(event, DeletedFrame):
            state[event.seq]["deleted"] = True
        elif isinstance(event, ReactionFrame):
            state[event.seq].setdefault("reactions", {})[event.emoji] = event.users
    assert theirs.reconnects >= 1
    for seq, seen in state.items():
        stored = history[seq]
        assert seen.get("deleted", False) == stored["deleted"], seq
        if not stored["deleted"]:
            assert seen["body"] == stored["body"], seq
            assert seen.get("reactions", {}) == stored["reactions"], seq


# --- read cursors and removal ------------------------------------------------------


async def test_read_moves_the_cursor_forward_and_the_other_tabs_follow(
    server: Server, api: Api, admin: Account
) -> None:
    user, writer = api.user(), api.bot(admin)
    room = api.room(user)
    async with (
        ChatClient(server.ws, token=writer.token, **FAST) as sender,
        ChatClient(server.ws, token=user.token, **FAST) as tab1,
        ChatClient(server.ws, token=user.token, **FAST) as tab2,
    ):
        await sender.join(room)
        for i in range(4):
            await sender.send(room, f"news {i}")
        await tab1.join(room)
        await tab2.join(room)
        second = Events(tab2)

        confirmed = await tab1.read(room, 3)
        assert (confirmed.room, confirmed.seq) == (room, 3) and confirmed.ref is not None
        (moved,) = await second.wait_count(ReadFrame, 1)
        assert (moved.room, moved.seq, moved.ref) == (room, 3, None)
        assert (await tab1.read(room, 1)).seq == 3  # never back
        assert (await tab1.read(room, 99)).seq == 4  # nor past the newest message
        with pytest.raises(RequestError) as refused:
            await tab1.read("no-such-room-" + unique(), 1)
        assert refused.value.code == "not_joined"
        await second.wait_count(ReadFrame, 2)
        assert [r.seq for r in second.of(ReadFrame)] == [3, 4]

    async with ChatClient(server.ws, token=user.token, **FAST) as later:
        joined = await later.join(room)
    assert (joined.read_seq, joined.unread) == (4, 0)


async def test_a_removed_member_stops_rejoining_the_room(
    server: Server, api: Api, admin: Account
) -> None:
    owner, member = api.user(), api.user()
    room = api.room(owner, private=True)
    r = api.client.post(
        f"/api/rooms/{room}/members", json={"username": member.name}, headers=owner.headers
    )
    assert r.status_code == 201, r.text
    async with ChatClient(server.ws, token=member.token, **FAST) as client:
        events = Events(client)
        await client.join(room)
        assert client.rooms == (room,)
        r = api.client.delete(f"/api/rooms/{room}/members/{member.name}", headers=owner.headers)
        assert r.status_code in (200, 204), r.text
        (removed,) = await events.wait_count(RemovedFrame, 1)
        assert removed.room == room
        assert room not in client.rooms
        with pytest.raises(RequestError) as refused:
            await client.join(room)
        assert refused.value.code == "not_found"


# --- notifications -----------------------------------------------------------------


async def test_chat_notify_from_a_shell_reaches_a_live_client(
    server: Server, api: Api, admin: Account, shell_env: dict[str, str]
) -> None:
    user = api.user()
    env = {**shell_env, "CHAT_TOKEN": admin.token}
    async with ChatClient(server.ws, token=user.token, **FAST) as client:
        received: list[NotificationFrame] = []

        async def listen() -> None:
            async for note in client.notifications():
                received.append(note)

        listening = asyncio.create_task(listen())
        sent = await asyncio.to_thread(
            sh, f"{CHAT} notify {user.name} 'the backup finished' --title backup --link /x", env
        )
        assert sent.returncode == 0, sent.stderr
        found = re.fullmatch(rf"notified {user.name} \(notification (\d+)\)\n", sent.stdout)
        assert found, sent.stdout
        untitled = await asyncio.to_thread(
            sh, f"{CHAT} notify {user.name} - --json", env, "from stdin\n"
        )
        assert untitled.returncode == 0, untitled.stderr
        async with asyncio.timeout(10):
            while len(received) < 2:
                await asyncio.sleep(0.02)
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening

    first, second = received
    assert first.id == int(found.group(1))
    assert (first.kind, first.title, first.body, first.link) == (
        "app",
        "backup",
        "the backup finished",
        "/x",
    )
    assert first.from_ is not None and first.from_.name == admin.name
    assert json.loads(untitled.stdout)["id"] == second.id > first.id
    assert (second.title, second.body) == (admin.name, "from stdin")  # titled by the sender


async def test_chat_notify_failures_are_one_line_and_non_zero(
    server: Server, api: Api, admin: Account, shell_env: dict[str, str]
) -> None:
    user = api.user()
    as_user = {**shell_env, "CHAT_TOKEN": user.token}
    as_admin = {**shell_env, "CHAT_TOKEN": admin.token}
    refused = await asyncio.to_thread(sh, f"{CHAT} notify {admin.name} hello", as_user)
    assert refused.returncode == 1
    assert one_line(refused.stderr).startswith("chat notify: the server refused: ")
    assert refused.stderr.rstrip().endswith("(forbidden)")
    nobody = await asyncio.to_thread(sh, f"{CHAT} notify nobody-{unique()} hello", as_admin)
    assert nobody.returncode == 1
    assert one_line(nobody.stderr).endswith("(not_found)")
    bad_link = await asyncio.to_thread(
        sh, f"{CHAT} notify {user.name} hello --link 'javascript:alert(1)'", as_admin
    )
    assert bad_link.returncode == 1
    assert one_line(bad_link.stderr).endswith("(bad_request)")
    no_token = await asyncio.to_thread(sh, f"{CHAT} notify {user.name} hello", shell_env)
    assert no_token.returncode == 2
    assert one_line(no_token.stderr) == "chat notify: no token: pass --token or set CHAT_TOKEN"
    assert inbox(api, user) == []


async def test_missed_notifications_arrive_once_and_in_order_after_a_reconnect(
    server: Server, api: Api, admin: Account
) -> None:
    user = api.user()
    node = one_node(server)
    proxy = FaultProxy(node.port).start()
    try:
        async with ChatClient(f"ws://127.0.0.1:{proxy.port}/ws", token=user.token, **FAST) as c:
            events = Events(c)
            notify(api, admin, user.name, "n1")
            await events.wait_count(NotificationFrame, 1)

            proxy.cut()
            async with asyncio.timeout(10):
                while c.connected:
                    await asyncio.sleep(0.02)
            for body in ("n2", "n3", "n4", "n5"):
                notify(api, admin, user.name, body)
            proxy.restore()
            # Sent while the client pages what it missed: paged, or live, never both.
            for body in ("n6", "n7"):
                notify(api, admin, user.name, body)
            await events.wait_count(NotificationFrame, 7, timeout=15)
            await asyncio.sleep(0.3)  # a repeat would come now
            last = c.last_notification_id
    finally:
        proxy.stop()

    notes = events.of(NotificationFrame)
    assert c.reconnects >= 1
    assert [n.body for n in notes] == ["n1", "n2", "n3", "n4", "n5", "n6", "n7"]
    assert [n.id for n in notes] == [item["id"] for item in inbox(api, user)]
    assert last == notes[-1].id

    # A later run resumes after an id it saved: the rest first, then live ones.
    async with ChatClient(
        server.ws, token=user.token, notifications_after=notes[4].id, **FAST
    ) as later:
        more = Events(later)
        await more.wait_count(NotificationFrame, 2)
        notify(api, admin, user.name, "n8")
        await more.wait_count(NotificationFrame, 3)
    assert [n.body for n in more.of(NotificationFrame)] == ["n6", "n7", "n8"]


async def test_the_notification_inbox_over_http_and_the_cli(
    server: Server,
    api: Api,
    admin: Account,
    shell_env: dict[str, str],
    background: list[Background],
) -> None:
    user = api.user()
    ids = [notify(api, admin, user.name, f"i{i}")["id"] for i in range(3)]
    env = {**shell_env, "CHAT_TOKEN": user.token}
    async with ChatClient(server.ws, token=user.token, **FAST) as client:
        events = Events(client)
        page = await client.list_notifications(after=ids[0])
        assert [n.body for n in page.items] == ["i1", "i2"] and page.unread == 3
        assert await client.mark_notifications_read(ids[1]) == 1
        (marked,) = await events.wait_count(NotificationsReadFrame, 1)  # every tab's badge
        assert (marked.upto, marked.unread) == (ids[1], 1)

    listed = await asyncio.to_thread(sh, f"{CHAT} notifications --json", env)
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(n["id"], n["kind"], n["body"]) for n in lines] == [
        (i, "app", f"i{n}") for n, i in enumerate(ids)
    ]
    assert lines[0]["from"]["name"] == admin.name
    text = await asyncio.to_thread(sh, f"{CHAT} notifications --after {ids[1]}", env)
    assert text.returncode == 0, text.stderr
    assert re.fullmatch(rf"\S+Z \[{ids[2]}\] app t: i2\n", text.stdout), text.stdout

    follow = Background(f"{CHAT} notifications --after {ids[1]} --follow --json", env)
    background.append(follow)
    assert json.loads(follow.read(1)[0])["id"] == ids[2]
    later = notify(api, admin, user.name, "live")
    assert json.loads(follow.read(1)[0])["id"] == later["id"]
    assert follow.stop() == (0, "")


# --- the change tools --------------------------------------------------------------


async def test_edit_react_delete_and_read_from_a_shell(
    server: Server,
    api: Api,
    admin: Account,
    shell_env: dict[str, str],
    background: list[Background],
) -> None:
    author, other = api.user(), api.user()
    room = api.room(author)
    env = {**shell_env, "CHAT_TOKEN": author.token}
    others = {**shell_env, "CHAT_TOKEN": other.token}
    tail = Background(f"{CHAT} tail --room {room} --since 0 --changes --json", others)
    background.append(tail)

    def run(command: str, as_env: dict[str, str]) -> Any:
        return asyncio.to_thread(sh, f"{CHAT} {command}", as_env)

    sent = await run(f"send --room {room} 'helo'", env)
    assert sent.returncode == 0, sent.stderr
    message = json.loads(tail.read(1)[0])  # the tail is in the room: changes come live
    assert (message["type"], message["seq"], message["body"]) == ("message", 1, "helo")
    assert {"reply_to", "reactions", "edited_at", "deleted", "attachments"} <= message.keys()
    edited = await run(f"edit --room {room} 1 hello", env)
    assert (edited.returncode, edited.stdout) == (0, f"edited seq 1 in {room}\n"), edited.stderr
    reacted = await run(f"react --room {room} 1 👍", others)
    assert reacted.returncode == 0, reacted.stderr
    assert reacted.stdout == f"👍 on seq 1 in {room}: {other.name}\n"
    as_json = await run(f"react --room {room} 1 👍 --off --json", others)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["users"] == []
    read = await run(f"read --room {room} 1", others)
    assert (read.returncode, read.stdout) == (0, f"read {room} up to seq 1\n"), read.stderr

    changes = [json.loads(line) for line in tail.read(3)]
    assert [(c["type"], c.get("body"), c.get("users")) for c in changes] == [
        ("edited", "hello", None),
        ("reaction", None, [other.name]),
        ("reaction", None, []),
    ]

    not_yours = await run(f"edit --room {room} 1 'mine now'", others)
    assert not_yours.returncode == 1
    assert one_line(not_yours.stderr).startswith("chat edit: the server refused: ")
    assert not_yours.stderr.rstrip().endswith("(forbidden)")
    missing = await run(f"react --room {room} 99 👍", env)
    assert missing.returncode == 1
    assert one_line(missing.stderr).endswith("(not_found)")
    no_room = await run(f"read --room no-such-room-{unique()} 1", env)
    assert no_room.returncode == 1
    assert one_line(no_room.stderr).startswith("chat read: cannot join 'no-such-room-")
    too_long = await run(f"react --room {room} 1 {'x' * 17}", env)
    assert too_long.returncode == 2
    assert one_line(too_long.stderr).startswith("chat react: not a reaction: ")
    deleted = await run(f"delete --room {room} 1", others)  # neither author nor owner
    assert deleted.returncode == 1 and one_line(deleted.stderr).endswith("(forbidden)")
    replied = await run(f"send --room {room} --reply-to 1 'a reply'", others)
    assert replied.returncode == 0, replied.stderr
    reply = json.loads(tail.read(1)[0])
    assert (reply["seq"], reply["reply_to"]["seq"], reply["reply_to"]["excerpt"]) == (
        2,
        1,
        "hello",
    )
    deleted = await run(f"delete --room {room} 1 --json", env)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["type"] == "deleted"
    assert json.loads(tail.read(1)[0])["type"] == "deleted"
    assert tail.stop() == (0, "")
