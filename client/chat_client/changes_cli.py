"""`edit`, `delete`, `react` and `read`: change a message, or move the read cursor.

    chat edit --room general 42 "the fixed text"      # '-' reads the text from stdin
    chat delete --room general 42
    chat react --room general 42 👍 [--off]
    chat read --room general 42

Each joins the room, sends one frame and waits for the server's confirmation (the
event carrying its ref: `edited`, `deleted`, `reaction`, `read`), then prints one line
(`--json`: the event as JSON; for `read`, the cursor now, which never moves back).
Refusals exit 1 with one line on stderr, `chat edit: the server refused: <detail>
(forbidden)`; see `chat_client.cli_support`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from chat_client.changes import ChangeFrame
from chat_client.cli_support import (
    UsageError,
    add_connection_options,
    join_room,
    make_client,
    non_negative_int,
    positive_int,
    read_text,
    run,
)
from chat_client.client import ChatClient
from chat_client.errors import ChatClientError
from chat_client.protocol import DeletedFrame, EditedFrame, ReadFrame

__all__ = ["add_change_commands"]

_RETRIES = 8  # connection attempts, as for `send`


def add_change_commands(subparsers: Any) -> None:
    """Register `edit`, `delete`, `react` and `read` on an argparse subparsers object."""
    edit = _command(subparsers, "edit", "replace the text of one of your messages")
    edit.add_argument("seq", metavar="SEQ", type=positive_int, help="the message's seq")
    edit.add_argument("text", metavar="TEXT", help="the new text; '-' reads it from stdin")
    edit.set_defaults(handler=_handler("edit", _edit))

    delete = _command(
        subparsers, "delete", "delete a message (yours; any as the room's owner or an admin)"
    )
    delete.add_argument("seq", metavar="SEQ", type=positive_int, help="the message's seq")
    delete.set_defaults(handler=_handler("delete", _delete))

    react = _command(subparsers, "react", "set (or with --off clear) your reaction to a message")
    react.add_argument("seq", metavar="SEQ", type=positive_int, help="the message's seq")
    react.add_argument("emoji", metavar="EMOJI", help="the reaction, at most 16 characters")
    react.add_argument("--off", action="store_true", help="clear the reaction instead")
    react.set_defaults(handler=_handler("react", _react))

    read = _command(subparsers, "read", "mark a room read up to a message (never moves back)")
    read.add_argument(
        "seq", metavar="SEQ", type=non_negative_int, help="the last seq read (0: none)"
    )
    read.set_defaults(handler=_handler("read", _read))


def _command(subparsers: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=text, description=text)
    parser.add_argument("--room", required=True, help="the room's name")
    parser.add_argument("--json", action="store_true", help="print the server's event as JSON")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the reply (default 30)"
    )
    add_connection_options(parser, retries=_RETRIES)
    parser.set_defaults(prog=parser.prog)
    return parser


Work = Callable[[ChatClient, argparse.Namespace], Awaitable[str]]


def _handler(command: str, work: Work) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        return run(command, args, _in_room(args, work))

    handler.__name__ = f"run_{command}"
    return handler


async def _in_room(args: argparse.Namespace, work: Work) -> int:
    """Join `--room`, do `work` within `--timeout`, print its line."""
    async with make_client(args) as client:
        await join_room(client, args.room)
        try:
            async with asyncio.timeout(args.timeout):
                line = await work(client, args)
        except TimeoutError:
            raise ChatClientError(f"no reply within {args.timeout:g} seconds") from None
    print(line, flush=True)
    return 0


def _event_json(event: ChangeFrame | ReadFrame) -> str:
    return json.dumps(event.model_dump(mode="json", exclude={"ref"}), ensure_ascii=False)


async def _edit(client: ChatClient, args: argparse.Namespace) -> str:
    event: EditedFrame = await client.edit(args.room, args.seq, read_text(args.text))
    return _event_json(event) if args.json else f"edited seq {event.seq} in {event.room}"


async def _delete(client: ChatClient, args: argparse.Namespace) -> str:
    event: DeletedFrame = await client.delete(args.room, args.seq)
    return _event_json(event) if args.json else f"deleted seq {event.seq} in {event.room}"


async def _react(client: ChatClient, args: argparse.Namespace) -> str:
    try:
        event = await client.react(args.room, args.seq, args.emoji, on=not args.off)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        return _event_json(event)
    users = ", ".join(event.users) or "nobody"
    return f"{event.emoji} on seq {event.seq} in {event.room}: {users}"


async def _read(client: ChatClient, args: argparse.Namespace) -> str:
    event = await client.read(args.room, args.seq)
    return _event_json(event) if args.json else f"read {event.room} up to seq {event.seq}"
