"""`@name` in a message body: which usernames it names, bounded.

A mention is `@` followed by username characters (`chat.storage.rules`), not
preceded by one (so `bob@example.com` names nobody). Display names are not
matched: they are neither unique nor free of spaces, so `@Alice Smith` could
not be read back to one person; completion in the UI inserts the username.
"""

from __future__ import annotations

import re

MAX_MENTIONS = 20  # distinct names per message; later ones are ignored
MIN_NAME, MAX_NAME = 3, 32  # the username length (`rules.normalize_username`)

_MENTION = re.compile(r"(?<![A-Za-z0-9_.@-])@([A-Za-z0-9_.-]+)")


def mentioned(body: str) -> list[tuple[str, ...]]:
    """The names `body` mentions, in order, as username keys (case-folded), at most
    `MAX_MENTIONS` distinct. Each is a tuple of readings, longest first: `@bob.` at the
    end of a sentence is `bob.` (a valid username) or, failing that, `bob`."""
    found: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for match in _MENTION.finditer(body):
        raw = match.group(1)
        readings = tuple(
            dict.fromkeys(
                name.casefold()
                for name in (raw, raw.rstrip(".-"))
                if MIN_NAME <= len(name) <= MAX_NAME
            )
        )
        if not readings or readings[0] in seen:
            continue
        seen.add(readings[0])
        found.append(readings)
        if len(found) == MAX_MENTIONS:
            break
    return found
