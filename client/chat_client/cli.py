"""The client library as command-line tools: `chat-client`, and the same under `chat`.

`add_client_commands` registers them on any argparse program: the `chat-client`
command (`main`, also `python -m chat_client`) and the server's `chat` command both
do, beside `tasks` (`chat_client.tasks_cli`):

- `send` and `tail` (here);
- `edit`, `delete`, `react` and `read` (`chat_client.changes_cli`);
- `notifications` and `notify` (`chat_client.notify_cli`);
- `search` (`chat_client.search_cli`).

Options, exit statuses and error lines are shared (`chat_client.cli_support`): `--url`
(default `$CHAT_URL`, else `ws://127.0.0.1:8000/ws`) and `--token` (default
`$CHAT_TOKEN`); exit 0 on success, 1 when the server refused or could not be reached,
2 for bad usage, 3 when the token was refused; the reason is one line on stderr, after
the command's name (`chat send: ...`, `chat-client send: ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chat_client.api import HttpApi
from chat_client.changes_cli import add_change_commands
from chat_client.cli_support import (
    add_connection_options,
    http_api,
    join_room,
    make_client,
    non_negative_int,
    positive_int,
    prog,
    read_text,
    run,
    stop_on_signals,
    write_line,
)
from chat_client.errors import ApiError, ChatClientError, RequestError
from chat_client.formats import format_change, format_message
from chat_client.notify_cli import add_notification_commands
from chat_client.protocol import (
    Attachment,
    DeletedFrame,
    EditedFrame,
    ErrorFrame,
    MessageFrame,
    ReactionFrame,
    RemovedFrame,
)
from chat_client.search_cli import add_search_command
from chat_client.stream import rest_send
from chat_client.tasks_cli import add_task_commands

if TYPE_CHECKING:
    pass

__all__ = ["add_client_commands", "build_parser", "format_message", "main", "run_send", "run_tail"]


def add_client_commands(subparsers: Any) -> None:
    """Register `send`, `tail`, `edit`, `delete`, `react`, `read`, `notifications`,
    `notify` and `search` on an argparse subparsers object (`add_subparsers()`).

    Each subcommand sets `handler` (and `func`) to its `run_*` function, and `prog`
    to its full name (`chat send`), which starts its error lines.
    """
    send = subparsers.add_parser(
        "send",
        help="send one message to a room",
        description="Send TEXT to a room and wait until the server has stored it.",
    )
    send.add_argument("--room", required=True, help="the room's name")
    send.add_argument(
        "text",
        metavar="TEXT",
        nargs="?",
        help="the message; '-' reads it from stdin (optional with --file)",
    )
    send.add_argument(
        "--file",
        action="append",
        metavar="PATH",
        help="upload this file and attach it (repeat for more, at most 10)",
    )
    send.add_argument(
        "--reply-to", type=positive_int, metavar="SEQ", help="the seq of the message it answers"
    )
    send.add_argument("--json", action="store_true", help="print the server's ack as JSON")
    send.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the ack (default 30)"
    )
    add_connection_options(send, retries=8)
    send.set_defaults(handler=run_send, func=run_send, prog=send.prog)

    tail = subparsers.add_parser(
        "tail",
        help="print a room's messages as they arrive",
        description="Follow rooms and print each message as it arrives, until interrupted.",
    )
    tail.add_argument(
        "--room", required=True, action="append", help="the room's name (repeat for more)"
    )
    tail.add_argument(
        "--since",
        type=non_negative_int,
        metavar="SEQ",
        help="first print the stored messages after this seq (0: the whole history)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per message per line")
    tail.add_argument(
        "--changes",
        action="store_true",
        help="also print edits, deletions and reactions (JSON: objects with their `type`)",
    )
    add_connection_options(tail, retries=12)
    tail.set_defaults(handler=run_tail, func=run_tail, prog=tail.prog)

    add_change_commands(subparsers)
    add_notification_commands(subparsers)
    add_search_command(subparsers)


# --- send ------------------------------------------------------------------------


def run_send(args: argparse.Namespace) -> int:
    """`send`: send one message, print its seq (or the ack as JSON); exit status."""
    return run("send", args, _send(args))


async def _send(args: argparse.Namespace) -> int:
    """Over REST: a one-line post needs no socket (`POST /api/rooms/{room}/messages`)."""
    if args.text is None and not args.file:
        raise ChatClientError("give TEXT, --file PATH, or both")
    body = read_text(args.text) if args.text is not None else ""
    api = http_api(args)
    try:
        async with asyncio.timeout(args.timeout):
            files = [(await _upload(api, args.room, path)).id for path in args.file or ()]
            ack = await rest_send(
                api,
                args.room,
                body,
                reply_to=args.reply_to,
                attachments=files,
                attempts=max(1, args.retries),
            )
    except TimeoutError:
        raise ChatClientError(f"no ack within {args.timeout:g} seconds") from None
    except ApiError as exc:
        raise ChatClientError(f"cannot send to {args.room!r}: {exc.detail} ({exc.code})") from None
    finally:
        await api.aclose()
    if args.json:
        print(ack.model_dump_json(), flush=True)
    else:
        print(f"sent to {ack.room} as seq {ack.seq} (id {ack.id})", flush=True)
    return 0


async def _upload(api: HttpApi, room: str, path: str) -> Attachment:
    try:
        answer = await api.upload("/api/files", {"room": room}, Path(path))
    except OSError as exc:
        raise ChatClientError(f"cannot read {path}: {exc.strerror or exc}") from None
    return Attachment.model_validate(answer)


# --- tail ------------------------------------------------------------------------


def run_tail(args: argparse.Namespace) -> int:
    """`tail`: print messages as they arrive until SIGINT/SIGTERM (then exit 0)."""
    return run("tail", args, _tail(args))


async def _tail(args: argparse.Namespace) -> int:
    rooms: list[str] = list(dict.fromkeys(args.room))
    stop_on_signals()  # stop at any point, then exit 0
    try:
        async with make_client(args) as client:
            for room in rooms:
                await join_room(client, room, args.since)
            async for event in client:
                if isinstance(event, MessageFrame):
                    write_line(sys.stdout, format_message(event, as_json=args.json))
                elif isinstance(event, EditedFrame | DeletedFrame | ReactionFrame):
                    if args.changes:
                        write_line(sys.stdout, format_change(event, as_json=args.json))
                elif isinstance(event, RemovedFrame) and event.room in rooms:
                    # Removed from a private room (or left it from elsewhere).
                    if not client.rooms:
                        raise ChatClientError(f"removed from {event.room!r}")
                    line = f"{prog(args, 'tail')}: removed from {event.room!r}"
                    print(line, file=sys.stderr, flush=True)
                elif isinstance(event, ErrorFrame):
                    if not client.rooms:
                        raise RequestError(event)
                    line = f"{prog(args, 'tail')}: {event.code}: {event.detail}"
                    print(line, file=sys.stderr, flush=True)
    except asyncio.CancelledError:
        return 0
    return 0


# --- the program -----------------------------------------------------------------


def build_parser(name: str = "chat-client") -> argparse.ArgumentParser:
    """The `chat-client` program: the client's subcommands and `tasks ...`."""
    parser = argparse.ArgumentParser(prog=name, description="chat hub client tools")
    commands = parser.add_subparsers(dest="command", required=True)
    add_client_commands(commands)
    add_task_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`chat-client COMMAND ...` (also `python -m chat_client`); the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
