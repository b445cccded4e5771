"""`send` and `tail`: the client library as command-line tools, and `chat-client`.

`add_client_commands` registers them on any argparse program: the `chat-client`
command (`main`, also `python -m chat_client`) and the server's `chat` command both
do, beside `tasks` (`chat_client.tasks_cli`). Both take `--url` (default
`$CHAT_URL`, else `ws://127.0.0.1:8000/ws`) and `--token` (default `$CHAT_TOKEN`).
Exit status: 0 on success, 1 when the server refused or could not be reached, 2 for
bad usage, 3 when the token was refused; the reason is one line on stderr, after
the command's name (`chat send: ...`, `chat-client send: ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from chat_client.client import ChatClient
from chat_client.errors import (
    AuthenticationError,
    ChatClientError,
    ConnectionFailedError,
    RequestError,
)
from chat_client.protocol import ErrorFrame, MessageFrame
from chat_client.tasks_cli import add_task_commands

__all__ = ["add_client_commands", "format_message", "main", "run_send", "run_tail"]

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3


class _UsageError(Exception):
    """Bad arguments or environment: exit 2."""


def add_client_commands(subparsers: Any) -> None:
    """Register `send` and `tail` on an argparse subparsers object (`add_subparsers()`).

    Each subcommand sets `handler` (and `func`) to `run_send` / `run_tail`, and
    `prog` to its full name (`chat send`), which starts its error lines.
    """
    send = subparsers.add_parser(
        "send",
        help="send one message to a room",
        description="Send TEXT to a room and wait until the server has stored it.",
    )
    send.add_argument("--room", required=True, help="the room's name")
    send.add_argument("text", metavar="TEXT", help="the message; '-' reads it from stdin")
    send.add_argument("--json", action="store_true", help="print the server's ack as JSON")
    send.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the ack (default 30)"
    )
    _add_connection_options(send, retries=8)
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
        type=_non_negative_int,
        metavar="SEQ",
        help="first print the stored messages after this seq (0: the whole history)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per message per line")
    _add_connection_options(tail, retries=12)
    tail.set_defaults(handler=run_tail, func=run_tail, prog=tail.prog)


def _add_connection_options(parser: argparse.ArgumentParser, retries: int) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("CHAT_URL") or DEFAULT_URL,
        help=f"the server's WebSocket URL (default $CHAT_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CHAT_TOKEN"),
        help="an access or bot token (default $CHAT_TOKEN)",
    )
    parser.add_argument(
        "--retries",
        type=_non_negative_int,
        default=retries,
        help=f"connection attempts in a row before giving up (default {retries})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log connection events on stderr"
    )


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


# --- send ------------------------------------------------------------------------


def run_send(args: argparse.Namespace) -> int:
    """`send`: send one message, print its seq (or the ack as JSON); exit status."""
    return _run("send", args, _send(args))


async def _send(args: argparse.Namespace) -> int:
    body = sys.stdin.read().removesuffix("\n") if args.text == "-" else args.text
    async with _client(args) as client:
        await _join(client, args.room)
        try:
            async with asyncio.timeout(args.timeout):
                ack = await client.send(args.room, body)
        except TimeoutError:
            raise ChatClientError(f"no ack within {args.timeout:g} seconds") from None
    if args.json:
        print(ack.model_dump_json(), flush=True)
    else:
        print(f"sent to {ack.room} as seq {ack.seq} (id {ack.id})", flush=True)
    return 0


# --- tail ------------------------------------------------------------------------


def run_tail(args: argparse.Namespace) -> int:
    """`tail`: print messages as they arrive until SIGINT/SIGTERM (then exit 0)."""
    return _run("tail", args, _tail(args))


async def _tail(args: argparse.Namespace) -> int:
    rooms: list[str] = list(dict.fromkeys(args.room))
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main.cancel)  # stop at any point, then exit 0
    try:
        async with _client(args) as client:
            for room in rooms:
                await _join(client, room, args.since)
            async for event in client:
                if isinstance(event, MessageFrame):
                    _write_line(sys.stdout, format_message(event, as_json=args.json))
                elif isinstance(event, ErrorFrame):
                    if not client.rooms:
                        raise RequestError(event)
                    line = f"{_prog(args, 'tail')}: {event.code}: {event.detail}"
                    print(line, file=sys.stderr, flush=True)
    except asyncio.CancelledError:
        return 0
    return 0


def format_message(message: MessageFrame, *, as_json: bool = False) -> str:
    """One line for a message: JSON (room, seq, id, user, body, ts) or readable text."""
    if as_json:
        return json.dumps(
            {
                "room": message.room,
                "seq": message.seq,
                "id": message.id,
                "user": message.user.model_dump(),
                "body": message.body,
                "ts": message.ts,
            },
            ensure_ascii=False,
        )
    body = message.body.replace("\r\n", "\n").replace("\n", "\n    ")
    return f"{message.ts} #{message.room} [{message.seq}] {message.user.name}: {body}"


def _write_line(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


# --- shared ----------------------------------------------------------------------


def _client(args: argparse.Namespace) -> ChatClient:
    if not args.token:
        raise _UsageError("no token: pass --token or set CHAT_TOKEN")
    try:
        return ChatClient(
            args.url,
            token=args.token,
            max_connect_attempts=max(1, args.retries),
            backoff_initial=0.25,
            backoff_max=5.0,
            request_timeout=30.0,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


async def _join(client: ChatClient, room: str, since: int | None = None) -> None:
    try:
        await client.join(room, since=since)
    except RequestError as exc:
        raise ChatClientError(f"cannot join {room!r}: {exc.detail} ({exc.code})") from None
    except TimeoutError:
        raise ChatClientError(f"no reply to joining {room!r}") from None


def _run(command: str, args: argparse.Namespace, work: Coroutine[Any, Any, int]) -> int:
    """Run `work`, turning every failure into one line on stderr and an exit status."""
    logging.getLogger("chat_client").setLevel(
        logging.INFO if args.verbose else logging.CRITICAL + 1
    )
    logging.getLogger("httpx").setLevel(logging.INFO if args.verbose else logging.WARNING)
    if args.verbose and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    code, reason = _outcome(lambda: asyncio.run(work))
    if reason:
        print(f"{_prog(args, command)}: {reason}", file=sys.stderr, flush=True)
    return code


def _prog(args: argparse.Namespace, command: str) -> str:
    """The command's name for its error lines: `chat send`, `chat-client tail`..."""
    prog: str | None = getattr(args, "prog", None)
    return prog or f"chat {command}"


def _outcome(call: Callable[[], int]) -> tuple[int, str | None]:
    try:
        return call(), None
    except _UsageError as exc:
        return EXIT_USAGE, str(exc)
    except AuthenticationError as exc:
        return EXIT_AUTH, f"authentication failed: {exc}"
    except ConnectionFailedError as exc:
        return EXIT_FAILED, str(exc)
    except RequestError as exc:
        return EXIT_FAILED, f"the server refused: {exc.detail} ({exc.code})"
    except ChatClientError as exc:
        return EXIT_FAILED, str(exc) or type(exc).__name__
    except BrokenPipeError:
        # The reader went away (`chat tail | head`): a normal end.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0, None
    except KeyboardInterrupt:
        return 130, None
    except OSError as exc:
        return EXIT_FAILED, f"{type(exc).__name__}: {exc}"


def build_parser(prog: str = "chat-client") -> argparse.ArgumentParser:
    """The `chat-client` program: `send`, `tail` and `tasks ...`."""
    parser = argparse.ArgumentParser(prog=prog, description="chat hub client tools")
    commands = parser.add_subparsers(dest="command", required=True)
    add_client_commands(commands)
    add_task_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`chat-client send|tail|tasks ...` (also `python -m chat_client`); the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
