"""`notifications` and `notify`: read your notification inbox, notify someone.

    chat notifications                        # every notification, oldest first
    chat notifications --after 40 --json      # those after id 40, one JSON object a line
    chat notifications --follow               # ... then the new ones as they come
    chat notify alice "the backup finished" --title backup --link https://ops/backup

`notifications` pages `GET /api/notifications` (`--limit` caps how many are printed);
with `--follow` it then stays connected and prints each new notification as it arrives
(across reconnects, each once), until SIGINT or SIGTERM (exit 0). `--mark-read` marks
what was printed read. `notify` (admins and bots) sends a notification of kind `app`:
its title defaults to your display name (or name), as a DM's does. Exit statuses and
error lines as in `chat_client.cli_support`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from chat_client.api import HttpApi
from chat_client.cli_support import (
    UsageError,
    add_connection_options,
    http_api,
    make_client,
    non_negative_int,
    positive_int,
    read_text,
    run,
    stop_on_signals,
    write_line,
)
from chat_client.client import ChatClient
from chat_client.formats import format_notification
from chat_client.inbox import PAGE, Inbox

__all__ = ["add_notification_commands", "run_notifications", "run_notify"]


def add_notification_commands(subparsers: Any) -> None:
    """Register `notifications` and `notify` on an argparse subparsers object."""
    listing = subparsers.add_parser(
        "notifications",
        help="list your notifications (and follow new ones)",
        description="Print your notifications, oldest first; with --follow, then the new ones.",
    )
    listing.add_argument(
        "--after", type=non_negative_int, default=0, metavar="ID", help="only those after this id"
    )
    listing.add_argument(
        "--limit", type=positive_int, metavar="N", help="print at most N (not with --follow)"
    )
    listing.add_argument(
        "--follow", action="store_true", help="then print new ones as they arrive, until stopped"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument(
        "--mark-read", action="store_true", help="mark the printed notifications read"
    )
    add_connection_options(listing, retries=12)
    listing.set_defaults(handler=run_notifications, func=run_notifications, prog=listing.prog)

    notify = subparsers.add_parser(
        "notify",
        help="send someone a notification (admins and bots)",
        description="Send USER a notification of kind `app`, live and in their inbox.",
    )
    notify.add_argument("user", metavar="USER", help="the user's name")
    notify.add_argument("text", metavar="TEXT", help="the notification; '-' reads it from stdin")
    notify.add_argument("--title", help="its title (default: your display name, or name)")
    notify.add_argument("--link", help="an http(s) URL or a path on the server")
    notify.add_argument("--json", action="store_true", help="print the notification as JSON")
    add_connection_options(notify, retries=None)
    notify.set_defaults(handler=run_notify, func=run_notify, prog=notify.prog)


# --- notifications ---------------------------------------------------------------


def run_notifications(args: argparse.Namespace) -> int:
    """`notifications`: print the inbox (then, with `--follow`, new ones); exit status."""
    return run("notifications", args, _notifications(args))


async def _notifications(args: argparse.Namespace) -> int:
    if args.follow:
        if args.limit is not None:
            raise UsageError("--limit does not go with --follow")
        return await _follow(args)
    api = http_api(args)
    try:
        inbox = Inbox(api)
        after, left = args.after, args.limit
        while left is None or left > 0:
            size = PAGE if left is None else min(PAGE, left)
            page = await inbox.page(after, size)
            for note in page.items:
                write_line(sys.stdout, format_notification(note, as_json=args.json))
                after = note.id
            if left is not None:
                left -= len(page.items)
            if len(page.items) < size:
                break
        if args.mark_read and after > args.after:
            await inbox.mark_read(after)
    finally:
        await api.aclose()
    return 0


async def _follow(args: argparse.Namespace) -> int:
    """The notifications after `--after`, then live ones: the client pages what came
    before its connection and resumes after reconnects without repeats."""
    stop_on_signals()
    client: ChatClient = make_client(args, notifications_after=args.after)
    try:
        async with client:
            async for note in client.notifications():
                write_line(sys.stdout, format_notification(note, as_json=args.json))
                if args.mark_read:
                    await client.mark_notifications_read(note.id)
    except asyncio.CancelledError:
        return 0
    return 0


# --- notify ----------------------------------------------------------------------


def run_notify(args: argparse.Namespace) -> int:
    """`notify`: send USER a notification; prints its id (or it as JSON)."""
    return run("notify", args, _notify(args))


async def _notify(args: argparse.Namespace) -> int:
    body = read_text(args.text)
    api = http_api(args)
    try:
        title = args.title if args.title is not None else await _my_name(api)
        note = await Inbox(api).notify(args.user, title, body, args.link)
    finally:
        await api.aclose()
    if args.json:
        print(json.dumps(note.model_dump(mode="json", by_alias=True, exclude_none=True)))
    else:
        print(f"notified {args.user} (notification {note.id})", flush=True)
    return 0


async def _my_name(api: HttpApi) -> str:
    """The caller's display name, else name (`GET /api/me`)."""
    me = await api.request("GET", "/api/me")
    name = me.get("display_name") or me.get("username") or me.get("name")
    return str(name) if name else "notification"
