"""`search`: find messages you can read.

    chat search "release notes"              # the 20 best matches, the words in [brackets]
    chat search deploy --room ops --limit 50 # in one room
    chat search 'fail* "disk full"' --newest --json

Text lines are `TS #room [seq] name: snippet`; `--json` prints one object per line:
the message as `tail --json` prints it, plus `snippet` (segments `{text, match}`).
Exit statuses and error lines as in `chat_client.cli_support` (a query with nothing
to search for, or a room you cannot read, exits 1 with the server's reason).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Literal

from chat_client.cli_support import (
    add_connection_options,
    http_api,
    positive_int,
    read_text,
    run,
    write_line,
)
from chat_client.search import MAX_LIMIT, Searcher, SearchHit

__all__ = ["add_search_command", "format_hit", "run_search"]


def add_search_command(subparsers: Any) -> None:
    """Register `search` on an argparse subparsers object."""
    search = subparsers.add_parser(
        "search",
        help="search the messages you can read",
        description=(
            'Print the messages containing every word and "quoted phrase" of TEXT '
            "(word* matches a prefix), best match first."
        ),
    )
    search.add_argument("text", metavar="TEXT", help="what to look for; '-' reads it from stdin")
    search.add_argument("--room", help="only this room")
    search.add_argument(
        "--limit",
        type=positive_int,
        default=20,
        metavar="N",
        help=f"print at most N (default 20, pages of {MAX_LIMIT})",
    )
    search.add_argument("--newest", action="store_true", help="newest first instead of best first")
    search.add_argument("--json", action="store_true", help="one JSON object per line")
    add_connection_options(search, retries=None)
    search.set_defaults(handler=run_search, func=run_search, prog=search.prog)


def format_hit(hit: SearchHit, *, as_json: bool = False) -> str:
    """One line for a result: `TS #room [seq] name: snippet` (matches in brackets)."""
    if as_json:
        data = hit.message.model_dump(mode="json")
        data["snippet"] = [s.model_dump() for s in hit.snippet]
        return json.dumps(data, ensure_ascii=False)
    m = hit.message
    text = " ".join(hit.marked().split())  # one line
    return f"{m.ts} #{m.room} [{m.seq}] {m.user.name}: {text}"


def run_search(args: argparse.Namespace) -> int:
    """`search`: print the results; exit status."""
    return run("search", args, _search(args))


async def _search(args: argparse.Namespace) -> int:
    text = read_text(args.text)
    api = http_api(args)
    order: Literal["rank", "newest"] = "newest" if args.newest else "rank"
    try:
        searcher, offset, left = Searcher(api), 0, args.limit
        while left > 0:
            page = await searcher.page(
                text, room=args.room, limit=min(MAX_LIMIT, left), offset=offset, order=order
            )
            for hit in page.items:
                write_line(sys.stdout, format_hit(hit, as_json=args.json))
            left -= len(page.items)
            if page.next_offset is None:
                break
            offset = page.next_offset
    finally:
        await api.aclose()
    return 0
