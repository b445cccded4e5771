"""How the command-line tools print frames: one readable line, or one JSON object.

JSON lines are the frame's own fields (`type` included, `ref` left out), so a script
reads the same names as the protocol documents; `ensure_ascii=False` keeps emoji and
other text as they are.
"""

from __future__ import annotations

import json

from chat_client.changes import ChangeFrame
from chat_client.protocol import (
    DeletedFrame,
    EditedFrame,
    MessageFrame,
    NotificationFrame,
)

__all__ = ["format_change", "format_message", "format_notification"]


def _json(data: dict[str, object]) -> str:
    return json.dumps(data, ensure_ascii=False)


def _indented(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\n    ")


def format_message(message: MessageFrame, *, as_json: bool = False) -> str:
    """One line for a message.

    JSON: `type`, `room`, `id`, `seq`, `user` (`id`, `name`, `role`, `display_name`),
    `body`, `ts`, `reply_to` (`{seq, user, excerpt}` or null), `attachments`,
    `reactions` (`{emoji: [names]}`), `edited_at` (or null) and `deleted`. Text:
    `TS #room [seq] name: body`, with `(reply to [seq])`, `(edited)` and `(deleted)`
    marks, then `[file: NAME, SIZE bytes]` per attachment; continuation lines indented.
    """
    if as_json:
        return _json(message.model_dump(mode="json"))
    marks = ""
    if message.reply_to is not None:
        marks += f"(reply to [{message.reply_to.seq}]) "
    if message.deleted:
        marks += "(deleted)"
    elif message.edited_at is not None:
        marks += "(edited) "
    body = "" if message.deleted else _indented(message.body)
    files = "".join(f" [file: {_indented(a.name)}, {a.size} bytes]" for a in message.attachments)
    return f"{message.ts} #{message.room} [{message.seq}] {message.user.name}: {marks}{body}{files}"


def format_change(change: ChangeFrame, *, as_json: bool = False) -> str:
    """One line for an `edited`, `deleted` or `reaction` event.

    JSON: the event's fields (`type`, `room`, `seq`, `version`; `body` and
    `edited_at`, or `emoji` and `users`). Text: `TS #room [seq] edited: body`,
    `#room [seq] deleted`, `#room [seq] reaction EMOJI: names`.
    """
    if as_json:
        return _json(change.model_dump(mode="json", exclude={"ref"}))
    where = f"#{change.room} [{change.seq}]"
    if isinstance(change, EditedFrame):
        return f"{change.edited_at} {where} edited: {_indented(change.body)}"
    if isinstance(change, DeletedFrame):
        return f"{where} deleted"
    return f"{where} reaction {change.emoji}: {', '.join(change.users) or '(none)'}"


def format_notification(note: NotificationFrame, *, as_json: bool = False) -> str:
    """One line for a notification.

    JSON: `type`, `id`, `kind`, `body`, `ts` and, when set, `room`, `seq`, `title`,
    `link`, `from`. Text: `TS [id] kind #room [seq] title: body <link>` (the sender's
    name when there is no title).
    """
    if as_json:
        return _json(note.model_dump(mode="json", by_alias=True, exclude_none=True))
    parts = [note.ts, f"[{note.id}]", note.kind]
    if note.room is not None:
        parts.append(f"#{note.room}" + (f" [{note.seq}]" if note.seq is not None else ""))
    title = note.title or (note.from_.name if note.from_ is not None else None)
    if title:
        parts.append(f"{title}:")
    parts.append(_indented(note.body))
    if note.link:
        parts.append(f"<{note.link}>")
    return " ".join(parts)
