"""The baseline: a bare `websockets` broadcast server speaking the chat's minimal frames.

    python bench/hotpath/baseline_server.py --port 8765 [--loop uvloop|asyncio]

No authentication, no database, no limits: what one Python process on one core
can do with the `websockets` package alone, so the chat server's figures can be
given as a fraction of it. The frames are the chat server's, with the same fields
and sizes, so the same load generator drives both:

- on connect: `{"type": "hello", "user": {...}}` (an `Authorization` header or a
  first `auth` frame is accepted and ignored: the token is not checked);
- `{"type": "join", "room", "ref"?}` → `{"type": "joined", "room", "presence": [],
  "last_seq", "replay_truncated": false, "ref"?}`;
- `{"type": "leave", "room", "ref"?}` → `{"type": "left", "room", "ref"?}`;
- `{"type": "send", "room", "body", "ref"}` → `{"type": "ack", "ref", "room", "id",
  "seq", "ts"}` to the sender, then `websockets.broadcast` of `{"type": "message",
  "room", "id", "seq", "user", "body", "ts"}` to every member of the room (the
  sender included); `seq` is a per-room counter in memory;
- `{"type": "ping"}` → `pong`; anything else → `error` `bad_frame`.

It prints `listening on PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOMS: dict[str, set[ServerConnection]] = {}
SEQ: dict[str, int] = {}
_user_ids = itertools.count(1)
_message_ids = itertools.count(1)


def dumps(frame: dict[str, Any]) -> str:
    """Compact JSON, as the chat server writes it (pydantic's `model_dump_json`)."""
    return json.dumps(frame, separators=(",", ":"))


def now_iso() -> str:
    """The chat server's timestamp format: ISO 8601 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(code: str, detail: str, ref: Any = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if ref is not None:
        frame["ref"] = ref
    return dumps(frame)


async def handler(ws: ServerConnection) -> None:
    uid = next(_user_ids)
    user = {"id": uid, "name": f"user{uid}", "role": "user"}
    joined: set[str] = set()
    await ws.send(dumps({"type": "hello", "user": user, "limits": {}}))
    try:
        async for raw in ws:
            try:
                frame = json.loads(raw)
                kind = frame["type"]
            except (ValueError, TypeError, KeyError):
                await ws.send(error("bad_frame", "not a JSON object with a type"))
                continue
            ref = frame.get("ref")
            if kind == "send":
                room = frame.get("room")
                body = frame.get("body")
                if room not in joined:
                    await ws.send(error("not_joined", "join the room first", ref))
                    continue
                if not isinstance(body, str) or not body.strip() or not isinstance(ref, str):
                    await ws.send(error("bad_frame", "send needs body and ref", ref))
                    continue
                seq = SEQ[room] = SEQ.get(room, 0) + 1
                message_id = next(_message_ids)
                ts = now_iso()
                ack = {"type": "ack", "ref": ref, "room": room, "id": message_id}
                message = {
                    "type": "message",
                    "room": room,
                    "id": message_id,
                    "seq": seq,
                    "user": user,
                    "body": body,
                    "ts": ts,
                }
                # No await between taking the seq and handing both frames to the
                # transports (`ws.send` may yield to another client's send): every
                # member gets the room's messages in seq order, the sender its ack first.
                broadcast((ws,), dumps({**ack, "seq": seq, "ts": ts}))
                broadcast(ROOMS[room], dumps(message))
            elif kind == "join":
                room = frame.get("room")
                if not isinstance(room, str) or not room:
                    await ws.send(error("bad_frame", "join needs a room", ref))
                    continue
                ROOMS.setdefault(room, set()).add(ws)
                joined.add(room)
                reply: dict[str, Any] = {
                    "type": "joined",
                    "room": room,
                    "presence": [],
                    "last_seq": SEQ.get(room, 0),
                    "replay_truncated": False,
                }
                if ref is not None:
                    reply["ref"] = ref
                await ws.send(dumps(reply))
            elif kind == "leave":
                room = frame.get("room")
                if room in joined:
                    joined.discard(room)
                    ROOMS[room].discard(ws)
                    left: dict[str, Any] = {"type": "left", "room": room}
                    if ref is not None:
                        left["ref"] = ref
                    await ws.send(dumps(left))
                else:
                    await ws.send(error("not_joined", "you have not joined that room", ref))
            elif kind == "ping":
                pong: dict[str, Any] = {"type": "pong", "ts": now_iso()}
                if ref is not None:
                    pong["ref"] = ref
                await ws.send(dumps(pong))
            elif kind == "auth":
                continue  # tokens are not checked here
            else:
                await ws.send(error("bad_frame", f"unknown frame type {kind!r}", ref))
    except Exception:  # a dropped connection (no close frame) ends here
        pass
    finally:
        for room in joined:
            ROOMS[room].discard(ws)


async def main_async(host: str, port: int) -> None:
    # max_queue=None: never stop reading a client because it sent a lot (the chat
    # server reads one frame at a time, which a closed-loop client never outruns).
    async with serve(handler, host, port, max_queue=None, max_size=2**20, backlog=4096):
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop; auto = uvloop when installed, as uvicorn does for the chat server",
    )
    args = parser.parse_args()
    use_uvloop = args.loop == "uvloop"
    if args.loop == "auto":
        try:
            import uvloop

            use_uvloop = True
        except ImportError:
            use_uvloop = False
    try:
        if use_uvloop:
            import uvloop

            uvloop.run(main_async(args.host, args.port))
        else:
            asyncio.run(main_async(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
