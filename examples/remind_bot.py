"""A reminder bot: `/remind 10m stretch your legs` answers in the room 10 minutes later.

    chat bots create reminder        # prints the bot's token on its last line
    CHAT_TOKEN=<token> python examples/remind_bot.py general

Delays take a unit: `s`, `m` or `h` (`/remind 90s tea`, `/remind 2h standup`), up to
a day. Reminders live in memory: they are lost if the bot itself stops. The bot
needs only the client distribution (`pip install ./client`), not the server.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from typing import NamedTuple

from chat_client import ChatClient, MessageFrame

COMMAND = re.compile(r"/remind(?:\s+(?P<args>.*))?", re.DOTALL)
ARGS = re.compile(r"(?P<amount>\d{1,6})(?P<unit>[smh])\s+(?P<text>\S.*)", re.DOTALL)
UNITS = {"s": 1, "m": 60, "h": 3600}
MAX_DELAY = 24 * 3600
USAGE = "usage: /remind <number><s|m|h> <text>, for example /remind 10m stretch your legs"


class Reminder(NamedTuple):
    delay: int  # seconds
    after: str  # as written: "10m"
    text: str


def parse(body: str) -> Reminder | str | None:
    """A `Reminder` for a valid command, an error reply for a bad one, else None."""
    command = COMMAND.fullmatch(body.strip())
    if command is None:
        return None
    args = ARGS.fullmatch((command["args"] or "").strip())
    if args is None:
        return USAGE
    delay = int(args["amount"]) * UNITS[args["unit"]]
    if not 0 < delay <= MAX_DELAY:
        return "the delay must be more than 0 and at most 24h"
    return Reminder(delay, args["amount"] + args["unit"], args["text"].strip())


async def remind(client: ChatClient) -> None:
    """Answer `/remind` commands among the messages the client receives."""
    pending: set[asyncio.Task[None]] = set()

    async def later(room: str, name: str, reminder: Reminder) -> None:
        await asyncio.sleep(reminder.delay)
        await client.send(room, f"@{name} reminder: {reminder.text}")

    async for event in client:
        if not isinstance(event, MessageFrame) or event.user.role == "bot":
            continue
        name = event.user.name
        match parse(event.body):
            case Reminder() as reminder:
                await client.send(event.room, f"@{name} OK, I will remind you in {reminder.after}.")
                task = asyncio.create_task(later(event.room, name, reminder))
                pending.add(task)
                task.add_done_callback(pending.discard)
            case str(problem):
                await client.send(event.room, f"@{name} {problem}")


async def main(room: str) -> None:
    """Connect with `$CHAT_TOKEN` to `$CHAT_URL`, join `room` and serve it forever."""
    url = os.environ.get("CHAT_URL", "ws://127.0.0.1:8000/ws")
    async with ChatClient(url, token=os.environ["CHAT_TOKEN"]) as client:
        await client.join(room)
        await remind(client)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "general"))
