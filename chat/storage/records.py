"""What queries hand back and take: small frozen records, no ORM objects."""

from __future__ import annotations

from dataclasses import dataclass

from chat.protocol import AckFrame, MessageFrame, NotificationFrame, ReplyRef, UserRef, iso
from chat.storage.models import User


def user_ref(user: User) -> UserRef:
    return UserRef(
        id=user.id,
        name=user.username,
        role=user.role,  # type: ignore[arg-type]
        display_name=user.display_name,
    )


@dataclass(frozen=True, slots=True)
class TokenUser:
    """What checking a token needs to know about its user."""

    ref: UserRef
    banned: bool  # or disabled: either way its tokens are refused
    token_version: int


@dataclass(frozen=True, slots=True)
class RoomView:
    """A room as one user sees it (`member`, `peer` are theirs)."""

    id: int
    name: str
    private: bool
    owner: UserRef
    last_seq: int
    member: bool
    created_at: float
    kind: str = "room"  # "room" or "dm"
    topic: str | None = None
    archived: bool = False
    # A DM's other member, for a viewer who is one of the two (else None).
    peer: UserRef | None = None

    @property
    def is_dm(self) -> bool:
        return self.kind == "dm"

    def managed_by(self, user: UserRef) -> bool:
        """Whether `user` may manage the room (members, topic, archive): its owner or an
        admin. A DM has no owner with powers (`owner` only records who opened it)."""
        return user.role == "admin" or (not self.is_dm and self.owner.id == user.id)

    def to_json(self) -> dict[str, object]:
        """The room object of HTTP answers; callers merge their own per-room fields."""
        return {
            "name": self.name,
            "kind": self.kind,
            "private": self.private,
            "owner": self.owner.model_dump(),
            "peer": self.peer.model_dump() if self.peer is not None else None,
            "topic": self.topic,
            "archived": self.archived,
            "last_seq": self.last_seq,
            "member": self.member,
            "created_at": iso(self.created_at),
        }


class ReadOnlyRoom(Exception):
    """A message for an archived room: nothing was stored (the writer's answer)."""


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
    attachments: tuple[str, ...] = ()  # file ids, checked and bound in the batch


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
