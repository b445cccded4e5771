"""Flood a room from a separate process: `python -m tests.flood URL TOKEN ROOM SECONDS`.

Sends `send` frames as fast as the server answers them for SECONDS, keeping up
to WINDOW unanswered (reading every reply, so the flooder is never a slow
consumer); then waits for the answers to all of them and prints one JSON line:
how many frames were sent, acked and refused, and the close code if closed.
A separate process keeps the flood from sharing the measuring test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import websockets

WINDOW = 200


async def flood(url: str, token: str, room: str, seconds: float) -> dict[str, object]:
    seen: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()  # hello
        await ws.send(json.dumps({"type": "join", "room": room}))

        answered = asyncio.Event()

        async def read() -> None:
            async for raw in ws:
                frame = json.loads(raw)
                seen[frame.get("code", frame["type"])] += 1
                answered.set()

        reader = asyncio.create_task(read())
        deadline = time.monotonic() + seconds
        sent = 0
        try:
            while time.monotonic() < deadline:
                if sent - seen["ack"] - seen["rate_limited"] >= WINDOW:
                    answered.clear()
                    await asyncio.wait_for(answered.wait(), 10)
                    continue
                frame = {"type": "send", "room": room, "body": f"f{sent}", "ref": f"f{sent}"}
                await ws.send(json.dumps(frame))
                sent += 1
                if sent % 20 == 0:
                    await asyncio.sleep(0)
            # Every send gets an answer (sends are pipelined: a pong could overtake them).
            while seen["ack"] + seen["rate_limited"] < sent:
                answered.clear()
                await asyncio.wait_for(answered.wait(), 30)
        except websockets.ConnectionClosed:
            await asyncio.sleep(0.5)
        reader.cancel()
        return {
            "sent": sent,
            "acked": seen["ack"],
            "refused": seen["rate_limited"],
            "close_code": ws.close_code,
        }


if __name__ == "__main__":
    url, token, room, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    print(json.dumps(asyncio.run(flood(url, token, room, seconds))), flush=True)
