from __future__ import annotations

from tests.harness import Api, ServerProcess, connect, join, recv_until, say


async def test_send_and_receive(server: ServerProcess, api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = api.room(alice)
    a = await connect(server, alice.token)
    b = await connect(server, bob.token, frame_auth=True)
    await join(a, room)
    await join(b, room)
    ack = await say(a, room, "hello bob")
    msg = await recv_until(b, "message")
    assert (msg["seq"], msg["body"], msg["user"]["name"]) == (ack["seq"], "hello bob", alice.name)
    await a.close()
    await b.close()
