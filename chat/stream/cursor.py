"""The stream's resume position: what `id:` carries and `Last-Event-ID` brings back.

Per room the seq of the last message given and the changes position (`changes_after`
of a rejoin: the highest `changes_checked` version, never the highest change version
seen, which can be ahead of a change still on its way) with the versions above it
already given, so a resume neither loses nor repeats one; and the last notification id.
Encoded as base64url of compact JSON plus a truncated HMAC: opaque to clients, and a
cursor edited or cut short is refused (`CursorError`) instead of trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

MAX_CURSOR_CHARS = 32_768  # longer is refused before any decoding
MAX_SEEN = 32  # versions above the checked one remembered per room (more: repeats possible)
MAX_VALUE = 2**63 - 1
MAC_BYTES = 12
CHANGE_TYPES = frozenset({"edited", "deleted", "reaction"})


class CursorError(ValueError):
    """A `Last-Event-ID` that is not a cursor this server wrote."""


@dataclass(slots=True)
class RoomPosition:
    seq: int = 0  # the last message given (0: none yet)
    checked: int = 0  # every change up to this version was given
    seen: set[int] = field(default_factory=set)  # change versions above `checked` given


@dataclass(slots=True)
class Cursor:
    rooms: dict[str, RoomPosition] = field(default_factory=dict)
    note: int = 0  # the last notification id given
    _notes_seen: set[int] = field(default_factory=set)  # ids above the starting `note`

    def admit(self, frame: dict[str, Any]) -> tuple[bool, bool]:
        """Take a frame into the position: `(send it, the position moved)`.

        A change already given (a join's resend racing its live event, a check's
        resend) and a notification already given are not sent again.
        """
        kind = frame.get("type")
        room = frame.get("room")
        if kind == "message" and isinstance(room, str):
            position = self.rooms.setdefault(room, RoomPosition())
            position.seq = max(position.seq, int(frame["seq"]))
            return True, True
        if kind in CHANGE_TYPES and isinstance(room, str):
            position = self.rooms.setdefault(room, RoomPosition())
            version = int(frame["version"])
            if version in position.seen:
                return False, False
            if len(position.seen) < MAX_SEEN:
                position.seen.add(version)
            return True, True
        if kind == "changes_checked" and isinstance(room, str):
            position = self.rooms.setdefault(room, RoomPosition())
            position.checked = max(position.checked, int(frame["version"]))
            position.seen = {v for v in position.seen if v > position.checked}
            return True, True
        if kind == "joined" and isinstance(room, str):
            if room not in self.rooms:  # not resumed: everything up to `last_seq` is history
                self.rooms[room] = RoomPosition(seq=int(frame["last_seq"]))
            return True, True
        if kind == "notification":
            note = int(frame["id"])
            if note in self._notes_seen:
                return False, False
            self._notes_seen.add(note)
            if len(self._notes_seen) > 4 * MAX_SEEN:
                self._notes_seen = set(sorted(self._notes_seen)[-2 * MAX_SEEN :])
            self.note = max(self.note, note)
            return True, True
        return True, False


class CursorCodec:
    """Writes and reads cursors, signed with a key of the server's."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, cursor: Cursor) -> str:
        rooms = {
            name: [p.seq, p.checked, sorted(p.seen)] if p.seen else [p.seq, p.checked]
            for name, p in cursor.rooms.items()
        }
        payload = json.dumps({"r": rooms, "n": cursor.note}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, text: str) -> Cursor:
        """The cursor in `text`; `CursorError` for anything else."""
        if len(text) > MAX_CURSOR_CHARS:
            raise CursorError("the cursor is too long")
        body, dot, mac = text.partition(".")
        try:
            payload = _unb64(body)
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise CursorError("the cursor is not one this server wrote") from None
        if not dot or not hmac.compare_digest(given, self._mac(payload)):
            raise CursorError("the cursor is not one this server wrote")
        try:
            data = json.loads(payload)
            rooms = {_name(name): _position(value) for name, value in dict(data["r"]).items()}
            return Cursor(rooms, _count(data["n"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CursorError("the cursor is malformed") from None

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:MAC_BYTES]


def cursor_key(secret: str) -> bytes:
    """The cursors' key, derived from the server's signing secret (not the secret itself)."""
    return hmac.new(secret.encode(), b"chat stream cursor", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _count(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_VALUE:
        raise ValueError("not a count")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("not a room name")
    return value


def _position(value: object) -> RoomPosition:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise ValueError("not a room position")
    seen = value[2] if len(value) == 3 else []
    if not isinstance(seen, list) or len(seen) > MAX_SEEN:
        raise ValueError("not a list of versions")
    return RoomPosition(_count(value[0]), _count(value[1]), {_count(v) for v in seen})
