"""What the client's subcommands share: options, the client they open, exit statuses.

Every subcommand takes `--url` (default `$CHAT_URL`, else `ws://127.0.0.1:8000/ws`;
an `http://` URL works too) and `--token` (default `$CHAT_TOKEN`). `run` turns every
failure into one line on stderr, after the command's name (`chat edit: ...`), and an
exit status: 0 on success, 1 when the server refused or could not be reached, 2 for
bad usage, 3 when the token was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from chat_client.api import HttpApi
from chat_client.client import ChatClient
from chat_client.connection import http_base_url, ws_url
from chat_client.errors import (
    AuthenticationError,
    ChatClientError,
    ConnectionFailedError,
    RequestError,
)

__all__ = [
    "DEFAULT_URL",
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "UsageError",
    "add_connection_options",
    "http_api",
    "join_room",
    "make_client",
    "non_negative_int",
    "positive_int",
    "read_text",
    "run",
    "stop_on_signals",
    "write_line",
]

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3


class UsageError(Exception):
    """Bad arguments or environment: exit 2."""


def add_connection_options(parser: argparse.ArgumentParser, retries: int | None) -> None:
    """`--url`, `--token`, `-v` and, for commands that connect (`retries` set), `--retries`."""
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
    if retries is not None:
        parser.add_argument(
            "--retries",
            type=non_negative_int,
            default=retries,
            help=f"connection attempts in a row before giving up (default {retries})",
        )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log connection events on stderr"
    )


def non_negative_int(text: str) -> int:
    """An argparse type: 0, 1, 2..."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: 1, 2, 3... (a message's seq)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def read_text(text: str) -> str:
    """A TEXT argument: '-' reads it from stdin (without the last newline)."""
    return sys.stdin.read().removesuffix("\n") if text == "-" else text


def _token(args: argparse.Namespace) -> str:
    if not args.token:
        raise UsageError("no token: pass --token or set CHAT_TOKEN")
    token: str = args.token
    return token


def make_client(args: argparse.Namespace, **options: Any) -> ChatClient:
    """A `ChatClient` for `--url` and `--token` (not connected yet)."""
    token = _token(args)
    try:
        return ChatClient(
            args.url,
            token=token,
            max_connect_attempts=max(1, args.retries),
            backoff_initial=0.25,
            backoff_max=5.0,
            request_timeout=30.0,
            **options,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def http_api(args: argparse.Namespace) -> HttpApi:
    """The HTTP API of the server at `--url`, called with `--token`."""
    token = _token(args)
    try:
        base = http_base_url(ws_url(args.url))
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def fixed() -> str:
        return token

    return HttpApi(base, timeout=30.0, token=fixed)


async def join_room(client: ChatClient, room: str, since: int | None = None) -> None:
    """Join `room`, turning a refusal into one clear reason."""
    try:
        await client.join(room, since=since)
    except RequestError as exc:
        raise ChatClientError(f"cannot join {room!r}: {exc.detail} ({exc.code})") from None
    except TimeoutError:
        raise ChatClientError(f"no reply to joining {room!r}") from None


def stop_on_signals() -> None:
    """SIGINT and SIGTERM cancel the running task (a follower then exits 0)."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main.cancel)


def write_line(stream: TextIO, line: str) -> None:
    """One line, flushed at once (a pipe reader sees it as it happens)."""
    stream.write(line + "\n")
    stream.flush()


def run(command: str, args: argparse.Namespace, work: Coroutine[Any, Any, int]) -> int:
    """Run `work`, turning every failure into one line on stderr and an exit status."""
    logging.getLogger("chat_client").setLevel(
        logging.INFO if args.verbose else logging.CRITICAL + 1
    )
    logging.getLogger("httpx").setLevel(logging.INFO if args.verbose else logging.WARNING)
    if args.verbose and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    code, reason = _outcome(lambda: asyncio.run(work))
    if reason:
        print(f"{prog(args, command)}: {reason}", file=sys.stderr, flush=True)
    return code


def prog(args: argparse.Namespace, command: str) -> str:
    """The command's name for its error lines: `chat send`, `chat-client tail`..."""
    name: str | None = getattr(args, "prog", None)
    return name or f"chat {command}"


def _outcome(call: Callable[[], int]) -> tuple[int, str | None]:
    try:
        return call(), None
    except UsageError as exc:
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
