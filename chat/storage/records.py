"""What queries hand back and take: small frozen records, no ORM objects."""

from __future__ import annotations

from dataclasses import dataclass

from chat.protocol import AckFrame, MessageFrame, NotificationFrame, ReplyRef, UserRef, iso
from chat.storage.models import User


def user_ref(user: User) -> UserRef:
    return UserRef(id=user.id, name=user.username, role=user.role)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TokenUser:
    """What checking a token needs to know about its user."""

    ref: UserRef
    banned: bool
    token_version: int


@dataclass(frozen=True, slots=True)
class RoomView:
    id: int
    name: str
    private: bool
    owner: UserRef
    last_seq: int
    member: bool
    created_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "private": self.private,
            "owner": self.owner.model_dump(),
            "last_seq": self.last_seq,
            "member": self.member,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store: the sender's `(user, ref)` makes it idempotent.

    `reply` is the message it answers, as read (once, for replies only) when the
    send was checked: the live frame shows it without another read.
    """

    room: RoomView
    user: UserRef
    ref: str
    body: str
    reply: ReplyRef | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A stored notification and the user it goes to."""

    user_id: int
    frame: NotificationFrame


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored message: its ack for the sender and its frame for everyone, and the
    notifications it caused (stored in the same transaction, published after it)."""

    ack: AckFrame
    frame: MessageFrame
    duplicate: bool
    notifications: tuple[Notice, ...] = ()
