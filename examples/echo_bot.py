"""An echo bot: answers every message in a room with the same text.

    chat bots create echo            # prints the bot's token on its last line
    CHAT_TOKEN=<token> python examples/echo_bot.py general

`CHAT_URL` defaults to ws://127.0.0.1:8000/ws. The client reconnects by itself
and resumes where it stopped, so the bot survives server restarts. It needs only
the client distribution (`pip install ./client`), not the server.
"""

from __future__ import annotations

import asyncio
import os
import sys

from chat_client import ChatClient, MessageFrame


async def echo(client: ChatClient) -> None:
    """Answer every human message the client receives."""
    async for event in client:
        # Skip our own messages and other bots', or two bots would talk forever.
        if isinstance(event, MessageFrame) and event.user.role != "bot":
            await client.send(event.room, f"{event.user.name} said: {event.body}")


async def main(room: str) -> None:
    """Connect with `$CHAT_TOKEN` to `$CHAT_URL`, join `room` and serve it forever."""
    url = os.environ.get("CHAT_URL", "ws://127.0.0.1:8000/ws")
    async with ChatClient(url, token=os.environ["CHAT_TOKEN"]) as client:
        await client.join(room)
        await echo(client)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "general"))
