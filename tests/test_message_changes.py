"""Replies, edits, deletes and reactions end to end: who may, who hears, what history,
replays and exports show, and a client that was away ending with history's state
(on one process, across two processes sharing Redis, and across a restart)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection

from chat.storage.models import Room
from tests.conftest import ServerFactory
from tests.harness import (
    Account,
    Api,
    Server,
    ServerPair,
    all_messages,
    commit_unpublished_edit,
    connect,
    expect_no_frame,
    join,
    nodes,
    owner_in_new_room,
    recv,
    recv_until,
    say,
    send,
)

CHANGES = ("edited", "deleted", "reaction")


@pytest.fixture(scope="module")
def cserver(module_servers: ServerFactory) -> Server:
    # Changes share the send bucket: room for the tests' bursts of them.
    server: Server = module_servers(send_rate=200, send_burst=400)
    return server


@pytest.fixture(scope="module")
def capi(cserver: Server) -> Any:
    client = Api(cserver)
    yield client
    client.close()


async def ask(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    """Send a frame with a fresh ref; the frame that answers it (event or error)."""
    ref = uuid.uuid4().hex
    await send(ws, ref=ref, **frame)
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        answer = await recv(ws, deadline - asyncio.get_running_loop().time())
        if answer.get("ref") == ref:
            return answer


async def frames_until_quiet(ws: ClientConnection, quiet: float = 0.6) -> list[dict[str, Any]]:
    """Every frame until none has come for `quiet` seconds."""
    out: list[dict[str, Any]] = []
    while True:
        try:
            out.append(await recv(ws, quiet))
        except TimeoutError:
            return out


def by_seq(api: Api, who: Account, room: str) -> dict[int, dict[str, Any]]:
    return {m["seq"]: m for m in all_messages(api, who, room)}


class ClientView:
    """What a client knows of a room's messages, built only from the frames it got;
    of two change frames about one thing, the higher `version` wins."""

    def __init__(self) -> None:
        self.messages: dict[int, dict[str, Any]] = {}
        self.versions: dict[tuple[int, str | None], int] = {}

    def apply(self, frame: dict[str, Any]) -> None:
        kind, seq = frame["type"], frame.get("seq")
        if kind == "message":
            self.messages[seq] = {
                k: frame[k] for k in ("body", "deleted", "reactions", "edited_at", "reply_to")
            }
            return
        if kind not in CHANGES or seq not in self.messages:
            return
        key = (seq, frame["emoji"] if kind == "reaction" else None)
        if frame["version"] < self.versions.get(key, 0):
            return
        self.versions[key] = frame["version"]
        msg = self.messages[seq]
        if kind == "edited":
            msg.update(body=frame["body"], edited_at=frame["edited_at"])
        elif kind == "deleted":
            msg.update(body="", deleted=True, reactions={}, edited_at=None)
        else:
            reactions = dict(msg["reactions"])
            if frame["users"]:
                reactions[frame["emoji"]] = frame["users"]
            else:
                reactions.pop(frame["emoji"], None)
            msg["reactions"] = reactions

    def matches(self, history: dict[int, dict[str, Any]]) -> None:
        fields = ("body", "deleted", "reactions", "edited_at", "reply_to")
        expected = {seq: {k: m[k] for k in fields} for seq, m in history.items()}
        assert self.messages == expected


# --- replies ---------------------------------------------------------------------------


async def test_reply_is_stored_and_shown_live_in_history_and_in_a_replay(
    cserver: Server, capi: Api
) -> None:
    alice, bob = capi.user(), capi.user()
    room = capi.room(alice)
    a, b = await connect(cserver, alice.token), await connect(cserver, bob.token)
    await join(a, room)
    await join(b, room)
    original = "x" * 90 + "0123456789" + "tail not in the excerpt"
    await say(a, room, original)
    replied = await recv_until(b, "message", seq=1)
    ack = await ask(b, type="send", room=room, body="an answer", reply_to=1)
    assert ack["type"] == "ack" and ack["seq"] == 2
    assert replied["user"]["id"] == alice.id
    expected = {"seq": 1, "user": replied["user"], "excerpt": original[:100]}
    live = await recv_until(a, "message", seq=2)
    assert live["reply_to"] == expected
    history = by_seq(capi, alice, room)
    assert history[2]["reply_to"] == expected and history[1]["reply_to"] is None
    # A late joiner replaying the room sees the same.
    c = await connect(cserver, bob.token)
    await join(c, room, since=0)
    replayed = await recv_until(c, "message", seq=2)
    assert replayed["reply_to"] == expected
    # The excerpt follows the replied message's current text.
    await ask(a, type="edit", room=room, seq=1, body="now short")
    assert by_seq(capi, bob, room)[2]["reply_to"]["excerpt"] == "now short"
    for ws in (a, b, c):
        await ws.close()


async def test_reply_to_a_missing_message_is_refused_and_stores_nothing(
    cserver: Server, capi: Api
) -> None:
    alice = capi.user()
    room, other = capi.room(alice), capi.room(alice)
    a = await connect(cserver, alice.token)
    await join(a, room)
    await join(a, other)
    await say(a, other, "seq 1 of another room")
    await recv_until(a, "message", room=other)  # so that no message is on its way
    answer = await ask(a, type="send", room=room, body="answering nothing", reply_to=1)
    assert answer["type"] == "error" and answer["code"] == "not_found"
    assert "no message 1" in answer["detail"]
    await expect_no_frame(a, kind="message")
    assert capi.history(alice, room) == []
    await a.close()


# --- edit ------------------------------------------------------------------------------


async def test_an_edit_reaches_every_member_and_the_senders_copy_carries_the_ref(
    cserver: Server, capi: Api
) -> None:
    alice, bob = capi.user(), capi.user()
    room = capi.room(alice)
    a1, a2, b = [await connect(cserver, t) for t in (alice.token, alice.token, bob.token)]
    for ws in (a1, a2, b):
        await join(ws, room)
    await say(a1, room, "helo")
    mine = await ask(a1, type="edit", room=room, seq=1, body="hello")
    assert mine["type"] == "edited" and mine["body"] == "hello" and mine["seq"] == 1
    assert mine["room"] == room and mine["edited_at"].endswith("Z") and mine["version"] > 0
    for ws in (a2, b):
        theirs = await recv_until(ws, "edited")
        assert theirs == {k: v for k, v in mine.items() if k != "ref"}
    msg = by_seq(capi, bob, room)[1]
    assert msg["body"] == "hello" and msg["edited_at"] == mine["edited_at"]
    # The same body again changes nothing: answered, stored nowhere, told nobody else.
    again = await ask(a1, type="edit", room=room, seq=1, body="hello")
    assert again["type"] == "edited" and again["version"] == mine["version"]
    await expect_no_frame(b, kind="edited")
    for ws in (a1, a2, b):
        await ws.close()


async def test_an_edit_by_anyone_but_the_author_is_refused_and_changes_nothing(
    cserver: Server, capi: Api
) -> None:
    alice, bob, admin = capi.user(), capi.user(), capi.admin()
    room = capi.room(alice)
    a, b, m = [await connect(cserver, t) for t in (alice.token, bob.token, admin.token)]
    for ws in (a, b, m):
        await join(ws, room)
    await say(b, room, "bob's words")
    for ws in (a, m):  # not the owner, not an admin: nobody changes someone's words
        refused = await ask(ws, type="edit", room=room, seq=1, body="rewritten")
        assert refused["type"] == "error" and refused["code"] == "forbidden"
        assert refused["ref"]
    await expect_no_frame(b, kind="edited")
    assert by_seq(capi, bob, room)[1]["body"] == "bob's words"
    assert by_seq(capi, bob, room)[1]["edited_at"] is None
    for ws in (a, b, m):
        await ws.close()


async def test_an_edit_is_checked_like_a_send(cserver: Server, capi: Api) -> None:
    alice = capi.user()
    room = capi.room(alice)
    a = await connect(cserver, alice.token)
    refused = await ask(a, type="edit", room=room, seq=1, body="not joined")
    assert refused["code"] == "not_joined"
    await join(a, room)
    await say(a, room, "first")
    cases = {
        "too_large": "x" * 32_001,
        "bad_frame": "   ",
    }
    for code, body in cases.items():
        refused = await ask(a, type="edit", room=room, seq=1, body=body)
        assert refused["type"] == "error" and refused["code"] == code, refused
    refused = await ask(a, type="edit", room=room, seq=99, body="nothing there")
    assert refused["code"] == "not_found"
    refused = await ask(a, type="edit", room=room, seq="1", body="a string seq")
    assert refused["code"] == "bad_frame"
    assert by_seq(capi, alice, room)[1]["body"] == "first"
    await a.close()


# --- delete ----------------------------------------------------------------------------


async def test_delete_by_author_owner_or_admin_and_not_by_another_member(
    cserver: Server, capi: Api
) -> None:
    owner, bob, carol, admin = capi.user(), capi.user(), capi.user(), capi.admin()
    room = capi.room(owner)
    o, b, c, m = [await connect(cserver, x.token) for x in (owner, bob, carol, admin)]
    for ws in (o, b, c, m):
        await join(ws, room)
    for i in range(1, 5):
        await say(b, room, f"secret {i}")
    for ws, seq in ((b, 1), (o, 2), (m, 3)):
        done = await ask(ws, type="delete", room=room, seq=seq)
        assert done["type"] == "deleted" and done["seq"] == seq and done["version"] > 0
        seen = await recv_until(c, "deleted", seq=seq)
        assert seen["version"] == done["version"] and "ref" not in seen
    refused = await ask(c, type="delete", room=room, seq=4)
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    history = by_seq(capi, carol, room)
    assert sorted(history) == [1, 2, 3, 4]  # a deleted message keeps its seq
    for seq in (1, 2, 3):
        assert history[seq]["deleted"] is True and history[seq]["body"] == ""
    assert history[4]["deleted"] is False and history[4]["body"] == "secret 4"
    # A deleted message cannot be edited or reacted to; deleting it again is harmless.
    assert (await ask(b, type="edit", room=room, seq=1, body="back"))["code"] == "not_found"
    react = await ask(c, type="react", room=room, seq=1, emoji="👍", on=True)
    assert react["code"] == "not_found"
    assert (await ask(b, type="delete", room=room, seq=1))["type"] == "deleted"
    # The text is kept only in the moderation history: the owner and admins read it.
    for who in (owner, admin):
        r = capi.client.get(f"/api/rooms/{room}/messages/2/history", headers=who.headers)
        assert r.status_code == 200, r.text
        (change,) = r.json()["items"]
        assert change["kind"] == "delete" and change["old_body"] == "secret 2"
        assert change["user"]["name"] == owner.name and change["at"].endswith("Z")
    r = capi.client.get(f"/api/rooms/{room}/messages/2/history", headers=carol.headers)
    assert r.status_code == 403
    r = capi.client.get(f"/api/rooms/{room}/messages/99/history", headers=owner.headers)
    assert r.status_code == 404
    for ws in (o, b, c, m):
        await ws.close()


async def test_in_a_dm_the_opener_has_no_owners_powers_over_the_peers_messages(
    cserver: Server, capi: Api
) -> None:
    # The opener of a DM is recorded as its `owner` but may not moderate it: only
    # the author or an admin deletes a message there, and only admins read its history.
    alice, bob, admin = capi.user(), capi.user(), capi.admin()
    r = capi.client.post("/api/dms", json={"username": bob.name}, headers=alice.headers)
    assert r.status_code == 201, r.text
    dm = r.json()["name"]
    a, b = await connect(cserver, alice.token), await connect(cserver, bob.token)
    await join(a, dm)
    await join(b, dm)
    await say(b, dm, "bob's words")
    refused = await ask(a, type="delete", room=dm, seq=1)
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    assert by_seq(capi, bob, dm)[1]["body"] == "bob's words"
    await ask(b, type="edit", room=dm, seq=1, body="bob's second thoughts")
    r = capi.client.get(f"/api/rooms/{dm}/messages/1/history", headers=alice.headers)
    assert r.status_code == 403, r.text
    r = capi.client.get(f"/api/rooms/{dm}/messages/1/history", headers=admin.headers)
    assert r.status_code == 200 and r.json()["items"][0]["old_body"] == "bob's words"
    for ws in (a, b):
        await ws.close()


async def test_a_messages_change_history_comes_in_pages(cserver: Server, capi: Api) -> None:
    # Reactions can be set and cleared without end: the moderation history is paged.
    alice, room, a = await owner_in_new_room(cserver, capi)
    await say(a, room, "react to me")
    for on in (True, False, True, False, True):
        await ask(a, type="react", room=room, seq=1, emoji="👍", on=on)
    path = f"/api/rooms/{room}/messages/1/history"
    r = capi.client.get(path, params={"limit": 2}, headers=alice.headers)
    assert r.status_code == 200, r.text
    first = r.json()["items"]
    assert [c["kind"] for c in first] == ["react", "unreact"]
    r = capi.client.get(
        path, params={"after": first[-1]["version"], "limit": 500}, headers=alice.headers
    )
    rest = r.json()["items"]
    assert [c["kind"] for c in rest] == ["react", "unreact", "react"]
    assert rest[0]["version"] > first[-1]["version"]
    r = capi.client.get(path, params={"limit": 501}, headers=alice.headers)
    assert r.status_code == 422
    await a.close()


async def test_a_private_rooms_message_history_is_not_found_for_outsiders(
    cserver: Server, capi: Api
) -> None:
    owner, outsider = capi.user(), capi.user()
    room = capi.room(owner, private=True)
    r = capi.client.get(f"/api/rooms/{room}/messages/1/history", headers=outsider.headers)
    assert r.status_code == 404 and r.json()["detail"]


async def test_an_export_shows_deleted_messages_without_their_text(
    cserver: Server, capi: Api
) -> None:
    alice, room, a = await owner_in_new_room(cserver, capi)
    await say(a, room, "keep me")
    await say(a, room, "a regrettable secret")
    await say(a, room, "typo")
    assert (await ask(a, type="delete", room=room, seq=2))["type"] == "deleted"
    assert (await ask(a, type="edit", room=room, seq=3, body="typo fixed"))["type"] == "edited"
    await a.close()
    for fmt in ("jsonl", "csv"):
        r = capi.client.post(
            "/api/tasks",
            json={"kind": "export", "params": {"room": room, "format": fmt}},
            headers=alice.headers,
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        deadline = time.monotonic() + 20
        while capi.client.get(f"/api/tasks/{task_id}", headers=alice.headers).json()[
            "status"
        ] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "export did not finish"
            await asyncio.sleep(0.05)
        result = capi.client.get(f"/api/tasks/{task_id}/result", headers=alice.headers)
        assert result.status_code == 200, result.text
        assert "regrettable" not in result.text
        if fmt == "jsonl":
            rows = [json.loads(line) for line in result.text.splitlines()]
            assert [(m["seq"], m["body"], m["deleted"]) for m in rows] == [
                (1, "keep me", False),
                (2, "", True),
                (3, "typo fixed", False),
            ]
            assert rows[2]["edited_at"].endswith("Z") and rows[0]["edited_at"] is None
        else:
            lines = result.text.splitlines()
            assert lines[0].endswith(",body,edited_at,deleted,attachments")
            assert lines[2].endswith(",,,true,[]")  # empty body, never edited, deleted, no files


# --- reactions -------------------------------------------------------------------------


async def test_reactions_toggle_with_whole_state_frames(cserver: Server, capi: Api) -> None:
    alice, bob = capi.user(), capi.user()
    room = capi.room(alice)
    a, b = await connect(cserver, alice.token), await connect(cserver, bob.token)
    await join(a, room)
    await join(b, room)
    await say(a, room, "react to me")
    steps = [
        (a, "👍", True, [alice.name]),
        (b, "👍", True, [alice.name, bob.name]),
        (b, "🎉", True, [bob.name]),
        (a, "👍", False, [bob.name]),
    ]
    for ws, emoji, on, users in steps:
        mine = await ask(ws, type="react", room=room, seq=1, emoji=emoji, on=on)
        assert mine["type"] == "reaction" and mine["emoji"] == emoji and mine["users"] == users
        other = b if ws is a else a
        theirs = await recv_until(other, "reaction", emoji=emoji)
        assert theirs["users"] == users and theirs["version"] == mine["version"]
    # Clearing what is not set is harmless: the current state, to the sender only.
    again = await ask(a, type="react", room=room, seq=1, emoji="👍", on=False)
    assert again["users"] == [bob.name]
    await expect_no_frame(b, kind="reaction")
    assert by_seq(capi, alice, room)[1]["reactions"] == {"👍": [bob.name], "🎉": [bob.name]}
    # The last one off: an empty list, and the emoji leaves the message.
    cleared = await ask(b, type="react", room=room, seq=1, emoji="🎉", on=False)
    assert cleared["users"] == []
    assert by_seq(capi, alice, room)[1]["reactions"] == {"👍": [bob.name]}
    for ws in (a, b):
        await ws.close()


async def test_at_most_twenty_distinct_reactions_and_printable_emoji_only(
    cserver: Server, capi: Api
) -> None:
    alice, bob = capi.user(), capi.user()
    room = capi.room(alice)
    a, b = await connect(cserver, alice.token), await connect(cserver, bob.token)
    await join(a, room)
    await join(b, room)
    await say(a, room, "popular")
    emoji = [f":e{i}:" for i in range(20)]
    for e in emoji:
        assert (await ask(a, type="react", room=room, seq=1, emoji=e, on=True))["type"] == (
            "reaction"
        )
    refused = await ask(b, type="react", room=room, seq=1, emoji=":e20:", on=True)
    assert refused["type"] == "error" and refused["code"] == "too_large"
    # One of the twenty is still open to everyone.
    joined = await ask(b, type="react", room=room, seq=1, emoji=":e3:", on=True)
    assert joined["users"] == [alice.name, bob.name]
    for bad, code in (("a b", "bad_frame"), ("\u200b", "bad_frame"), ("x" * 17, "bad_frame")):
        refused = await ask(a, type="react", room=room, seq=1, emoji=bad, on=True)
        assert refused["code"] == code, (bad, refused)
    # Joined by zero-width joiners, one emoji: accepted (seq 2 does not exist, so the
    # answer is not_found, not bad_frame).
    family = "👨\u200d👩\u200d👧"
    answer = await ask(a, type="react", room=room, seq=2, emoji=family, on=True)
    assert answer["code"] == "not_found"
    reactions = by_seq(capi, alice, room)[1]["reactions"]
    assert list(reactions) == emoji and reactions[":e3:"] == [alice.name, bob.name]
    for ws in (a, b):
        await ws.close()


# --- resuming --------------------------------------------------------------------------


async def away_then_back(api: Api, server: Server, *, restart: bool = False) -> None:
    """Bob holds the room, leaves; alice edits, deletes, reacts and sends (on another
    process with a pair); bob comes back with `since` and must hold what history shows."""
    many = nodes(server)
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a = await connect(many[0], alice.token)
    b = await connect(many[-1], bob.token)
    await join(a, room)
    await join(b, room)
    for i in range(1, 6):
        await say(a, room, f"message {i}")
    view = ClientView()
    for frame in await frames_until_quiet(b):
        view.apply(frame)
    await send(b, type="react", room=room, seq=4, emoji="👀", on=True, ref="mine")
    for frame in await frames_until_quiet(b):
        view.apply(frame)
    assert sorted(view.messages) == [1, 2, 3, 4, 5]
    assert view.messages[4]["reactions"] == {"👀": [bob.name]}
    since = max(view.messages)
    await b.close()
    # Away: every kind of change, to old messages and to new ones.
    for frame in (
        {"type": "edit", "room": room, "seq": 1, "body": "message 1, edited"},
        {"type": "edit", "room": room, "seq": 1, "body": "message 1, edited twice"},
        {"type": "delete", "room": room, "seq": 2},
        {"type": "react", "room": room, "seq": 3, "emoji": "👍", "on": True},
        {"type": "react", "room": room, "seq": 3, "emoji": "❤", "on": True},
        {"type": "react", "room": room, "seq": 3, "emoji": "❤", "on": False},
        {"type": "react", "room": room, "seq": 4, "emoji": "👀", "on": True},
        {"type": "edit", "room": room, "seq": 5, "body": "message 5, edited"},
        {"type": "delete", "room": room, "seq": 5},
    ):
        answer = await ask(a, **{k: v for k, v in frame.items()})
        assert answer["type"] != "error", answer
    await say(a, room, "message 6")
    assert (await ask(a, type="edit", room=room, seq=6, body="message 6, edited"))[
        "type"
    ] == "edited"
    await a.close()
    if restart:
        server.restart()
    b = await connect(many[0] if restart else many[-1], bob.token)
    joined = await join(b, room, since=since)
    assert joined["last_seq"] == 6 and joined["changes_truncated"] is False
    back = [f for f in await frames_until_quiet(b) if not f["type"].startswith("presence")]
    kinds = [f["type"] for f in back]
    assert kinds[0] == "message" and kinds.count("message") == 1  # seq 6, current state
    assert set(kinds[1:]) <= set(CHANGES)
    for frame in back:
        view.apply(frame)
    view.matches(by_seq(api, bob, room))
    assert view.messages[1]["body"] == "message 1, edited twice"
    assert view.messages[3]["reactions"] == {"👍": [alice.name]}
    assert view.messages[4]["reactions"] == {"👀": [bob.name, alice.name]}
    assert view.messages[6]["body"] == "message 6, edited"
    # Only what changed since: one frame per message and kind of change.
    deleted = [f["seq"] for f in back if f["type"] == "deleted"]
    assert deleted == [2, 5]
    assert [f["seq"] for f in back if f["type"] == "edited"] == [1]
    await b.close()


async def test_a_client_away_during_changes_resumes_to_historys_state(
    cserver: Server, capi: Api
) -> None:
    """On the memory backend one process; on the redis backend alice and bob sit on
    different processes, so every change was made on the other one."""
    await away_then_back(capi, cserver)


async def test_a_client_resumes_to_historys_state_after_a_restart(
    make_server: ServerFactory,
) -> None:
    server = make_server(send_rate=200, send_burst=400)
    api = Api(server)
    try:
        await away_then_back(api, server, restart=True)
    finally:
        api.close()


async def test_changes_beyond_the_cap_are_flagged(make_server: ServerFactory) -> None:
    server = make_server(send_rate=200, send_burst=400, replay_cap=3)
    api = Api(server)
    alice, room, a = await owner_in_new_room(server, api)
    for i in range(5):
        await say(a, room, f"m{i}")
    for seq in range(1, 6):
        assert (await ask(a, type="edit", room=room, seq=seq, body=f"edited {seq}"))["type"] == (
            "edited"
        )
    b = await connect(server, alice.token)
    joined = await join(b, room, since=5)
    assert joined["changes_truncated"] is True
    resent = [f for f in await frames_until_quiet(b) if f["type"] == "edited"]
    assert [f["seq"] for f in resent] == [1, 2, 3]
    # Without the cap's worth of changes, no flag.
    c = await connect(server, alice.token)
    assert (await join(c, room, since=0))["changes_truncated"] is False
    for ws in (a, b, c):
        await ws.close()
    api.close()


async def test_changes_made_while_a_client_joins_are_never_lost(cserver: Server, capi: Api) -> None:
    """Edits race bob's join: whatever the interleaving (committed before the join read
    them, or after, or published meanwhile), bob ends with the newest text."""
    alice, bob = capi.user(), capi.user()
    room = capi.room(alice)
    a = await connect(nodes(cserver)[0], alice.token)
    await join(a, room)
    for turn in range(1, 6):
        await say(a, room, f"turn {turn}: v0")

        async def edits(seq: int) -> None:
            for i in range(1, 11):
                answer = await ask(a, type="edit", room=room, seq=seq, body=f"turn {seq}: v{i}")
                assert answer["type"] == "edited"

        b = await connect(nodes(cserver)[-1], bob.token)
        view = ClientView()
        view.messages[turn] = {"body": f"turn {turn}: v0", "deleted": False}
        editing = asyncio.create_task(edits(turn))
        await asyncio.sleep(0.01 * turn)  # a different interleaving each turn
        await send(b, type="join", room=room, since=turn)
        await editing
        for frame in await frames_until_quiet(b, 0.5):
            view.apply(frame)
        assert view.messages[turn]["body"] == f"turn {turn}: v10"
        assert by_seq(capi, bob, room)[turn]["body"] == f"turn {turn}: v10"
        await b.close()
    await a.close()


async def test_a_join_since_past_the_newest_message_resends_no_changes_harmlessly(
    cserver: Server, capi: Api
) -> None:
    # A `since` from the future (even past the database's integer range) has no
    # changes to resend: `joined`, then live events, never an internal error that
    # leaves the room half-joined.
    alice, room, a = await owner_in_new_room(cserver, capi)
    await say(a, room, "one")
    await ask(a, type="edit", room=room, seq=1, body="one, edited")
    b = await connect(cserver, alice.token)
    for since in (2**63, 10**30, 5):
        joined = await ask(b, type="join", room=room, since=since)
        assert joined["type"] == "joined" and joined["last_seq"] == 1, joined
        await expect_no_frame(b, 0.3, kind="edited")
    await ask(a, type="edit", room=room, seq=1, body="one, again")
    assert (await recv_until(b, "edited", seq=1))["body"] == "one, again"
    for ws in (a, b):
        await ws.close()


async def test_an_archived_room_refuses_changes(cserver: Server, capi: Api) -> None:
    alice, room, a = await owner_in_new_room(cserver, capi)
    await say(a, room, "before the archive")
    engine = create_async_engine(cserver.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(Room).where(Room.name == room).values(archived=True))
    finally:
        await engine.dispose()
    for frame in (
        {"type": "edit", "seq": 1, "body": "after"},
        {"type": "delete", "seq": 1},
        {"type": "react", "seq": 1, "emoji": "👍", "on": True},
    ):
        refused = await ask(a, room=room, **frame)
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        assert "archived" in refused["detail"]
    msg = by_seq(capi, alice, room)[1]
    assert msg["body"] == "before the archive" and msg["reactions"] == {}
    await a.close()


async def test_changes_in_a_room_archived_through_the_api_are_refused_like_sends(
    cserver: Server, capi: Api
) -> None:
    # The documented refusal: `forbidden` "the room is archived: read only", as a send
    # gets, for edit and react (and delete) alike.
    alice, room, a = await owner_in_new_room(cserver, capi)
    await say(a, room, "before the archive")
    r = capi.client.patch(f"/api/rooms/{room}", json={"archived": True}, headers=alice.headers)
    assert r.status_code == 200, r.text
    await recv_until(a, "room", archived=True)
    for frame in (
        {"type": "send", "body": "after"},
        {"type": "edit", "seq": 1, "body": "after"},
        {"type": "react", "seq": 1, "emoji": "👍", "on": True},
        {"type": "delete", "seq": 1},
    ):
        refused = await ask(a, room=room, **frame)
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        assert refused["detail"] == "the room is archived: read only", refused
    await a.close()


async def test_changes_share_the_senders_rate_limit(make_server: ServerFactory) -> None:
    server = make_server(send_rate=0.2, send_burst=3)
    api = Api(server)
    alice, room, a = await owner_in_new_room(server, api)
    await say(a, room, "one send")
    assert (await ask(a, type="edit", room=room, seq=1, body="an edit"))["type"] == "edited"
    assert (await ask(a, type="react", room=room, seq=1, emoji="👍", on=True))["type"] == (
        "reaction"
    )
    refused = await ask(a, type="delete", room=room, seq=1)  # the fourth: the bucket is empty
    assert refused["type"] == "error" and refused["code"] == "rate_limited"
    assert refused["retry_after"] > 0
    assert by_seq(api, alice, room)[1]["deleted"] is False
    await a.close()
    api.close()


# --- changes whose event never went out ------------------------------------------------


async def join_with(ws: ClientConnection, room: str, **fields: Any) -> dict[str, Any]:
    await send(ws, type="join", room=room, **fields)
    return await recv_until(ws, "joined", room=room)


async def test_a_resume_with_changes_after_gets_exactly_the_changes_after_that_version(
    cserver: Server, capi: Api
) -> None:
    """Including a change made at a seq below the client's `since` whose event the
    client never got: the `at_seq` rule alone cannot know it was missed."""
    alice, bob = capi.user(), capi.user()
    room = capi.room(alice)
    a = await connect(nodes(cserver)[0], alice.token)
    b = await connect(nodes(cserver)[-1], bob.token)
    joined = await join(a, room)
    assert joined["changes_version"] == 0  # no change in the room yet
    await join(b, room)
    for i in range(1, 5):
        await say(a, room, f"message {i}")
    seen = await ask(a, type="edit", room=room, seq=1, body="message 1, edited")
    live = [f for f in await frames_until_quiet(b) if f["type"] == "edited"]
    assert [f["version"] for f in live] == [seen["version"]]
    await b.close()
    # While bob is away: a change at seq 2 whose event never went out, made "when"
    # the room's newest message was 1 (so far below bob's since, 4), then a normal one.
    lost = await commit_unpublished_edit(cserver, room, 2, "message 2, edited", at_seq=1)
    later = await ask(a, type="react", room=room, seq=3, emoji="👍", on=True)
    assert later["type"] == "reaction" and later["version"] > lost > seen["version"]

    def resent(frames: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
        """The frames of `kinds`, less late copies of the lost change: a hub that
        watched the room may read it back live as well (its periodic check)."""
        out = [f for f in frames if f["type"] in (kinds or CHANGES)]
        return [f for i, f in enumerate(out) if f.get("version") != lost or f not in out[:i]]

    # Without `changes_after`: the documented `at_seq` rule, which misses it.
    c = await connect(nodes(cserver)[-1], bob.token)
    await join(c, room, since=4)
    old_rule = [f["version"] for f in resent(await frames_until_quiet(c))]
    # (It may still come: read back live by the check of a process watching the room.)
    assert later["version"] in old_rule
    await c.close()
    # With it: exactly the changes after the version bob saw.
    b = await connect(nodes(cserver)[-1], bob.token)
    joined = await join_with(b, room, since=4, changes_after=seen["version"])
    assert joined["changes_version"] == later["version"]
    assert joined["changes_truncated"] is False
    back = resent(await frames_until_quiet(b))
    assert [(f["type"], f["seq"], f["version"]) for f in back] == [
        ("edited", 2, lost),
        ("reaction", 3, later["version"]),
    ]
    assert back[0]["body"] == "message 2, edited"
    assert back[1]["users"] == [alice.name]
    # Up to date: nothing resent; and a version past the newest resends nothing either.
    for after in (later["version"], later["version"] + 1000):
        c = await connect(nodes(cserver)[-1], bob.token)
        await join_with(c, room, since=4, changes_after=after)
        extra = resent(await frames_until_quiet(c, 0.3))
        assert extra == [] or [f["version"] for f in extra] == [lost], extra
        await c.close()
    # Only changes to messages up to `since`: later messages come replayed, as they are.
    c = await connect(nodes(cserver)[-1], bob.token)
    await join_with(c, room, since=2, changes_after=0)
    frames = resent(await frames_until_quiet(c), "message", *CHANGES)
    assert [(f["type"], f["seq"]) for f in frames] == [
        ("message", 3),
        ("message", 4),
        ("edited", 1),
        ("edited", 2),
    ]
    assert frames[0]["reactions"] == {"👍": [alice.name]}
    for ws in (a, b, c):
        await ws.close()


async def test_changes_after_must_not_be_negative(cserver: Server, capi: Api) -> None:
    alice = capi.user()
    room = capi.room(alice)
    a = await connect(cserver, alice.token)
    refused = await ask(a, type="join", room=room, since=0, changes_after=-1)
    assert refused["type"] == "error" and refused["code"] == "bad_frame", refused
    await a.close()


@pytest.mark.two_nodes
async def test_a_change_whose_event_never_went_out_reaches_the_other_node(
    cserver: Server, capi: Api
) -> None:
    """A process commits a change and dies before publishing it: the hub of every
    process with members in the room reads it back within the gap-check interval."""
    assert isinstance(cserver, ServerPair)
    alice, bob = capi.user(), capi.user()
    room = capi.room(alice)
    a = await connect(cserver.nodes[0], alice.token)
    b = await connect(cserver.nodes[1], bob.token)
    await join(a, room)
    await join(b, room)
    for i in range(1, 4):
        await say(a, room, f"message {i}")
    published = await ask(a, type="edit", room=room, seq=3, body="message 3, edited")
    await frames_until_quiet(b, 0.3)
    lost = await commit_unpublished_edit(cserver, room, 1, "message 1, edited", at_seq=1)
    started = time.monotonic()
    for ws in (b, a):  # both nodes: neither published it
        frame = await recv_until(ws, "edited", timeout=8.0, room=room, seq=1)
        assert frame["version"] == lost and frame["body"] == "message 1, edited"
    # The gap check runs every 2 s; a room still behind at a second check is read back.
    assert time.monotonic() - started < 7.0
    # Once, and nothing else resent (the published change was delivered already).
    later = [f for f in await frames_until_quiet(b, 2.5) if f["type"] in CHANGES]
    assert later == [], later
    assert published["version"] < lost
    for ws in (a, b):
        await ws.close()
