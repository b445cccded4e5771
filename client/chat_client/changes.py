"""Which change events (`edited`, `deleted`, `reaction`) are news to the application.

Each event carries the whole new state of one part of a message (its text, or one
emoji's users) and a `version`: the change's place in the room's history. Events
about the same part can arrive twice (a resume replays changes the client may have
seen) or crossed (two server processes publish them). `ChangeVersions` keeps the
newest version delivered per part, so the application sees each state once and
never an older state after a newer one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, TypeAlias

from chat_client.protocol import DeletedFrame, EditedFrame, MessageFrame, ReactionFrame

__all__ = ["ChangeFrame", "ChangeVersions", "state_frames"]

ChangeFrame: TypeAlias = EditedFrame | DeletedFrame | ReactionFrame

_REMEMBERED: Final = 50_000  # parts remembered; the least recently changed are forgotten


class ChangeVersions:
    """The newest `version` delivered per (room, seq, part): text, or one emoji."""

    def __init__(self, remembered: int = _REMEMBERED) -> None:
        self._newest: OrderedDict[tuple[str, int, str], int] = OrderedDict()
        self._remembered = remembered

    def is_news(self, frame: ChangeFrame) -> bool:
        """Whether `frame` is newer than what was delivered about its part (then it is
        recorded as delivered). Frames without a version (0) are always news."""
        if frame.version <= 0:
            return True
        part = f"emoji:{frame.emoji}" if isinstance(frame, ReactionFrame) else "text"
        key = (frame.room, frame.seq, part)
        seen = self._newest.get(key)
        if seen is not None and frame.version <= seen:
            return False
        self._newest[key] = frame.version
        self._newest.move_to_end(key)
        if len(self._newest) > self._remembered:
            self._newest.popitem(last=False)
        return True

    def forget_room(self, room: str) -> None:
        """Drop what is known of `room` (left or removed: a rejoin starts afresh)."""
        for key in [k for k in self._newest if k[0] == room]:
            del self._newest[key]


def state_frames(message: MessageFrame) -> list[ChangeFrame]:
    """The change events that bring a copy of `message` as first sent to its state now
    (as a history page shows it): `deleted`, or `edited`, and a `reaction` per emoji.

    For a resume whose changes the server could not all resend (`changes_truncated`).
    They carry no version (0): always news. An emoji whose reactions were all cleared
    is absent from the page, so no frame can say so.
    """
    room, seq = message.room, message.seq
    if message.deleted:
        return [DeletedFrame(room=room, seq=seq)]
    frames: list[ChangeFrame] = []
    if message.edited_at is not None:
        frames.append(
            EditedFrame(room=room, seq=seq, body=message.body, edited_at=message.edited_at)
        )
    for emoji, users in message.reactions.items():
        frames.append(ReactionFrame(room=room, seq=seq, emoji=emoji, users=users))
    return frames
