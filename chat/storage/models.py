"""ORM tables. The schema itself is created only by the Alembic migrations."""

from __future__ import annotations

import time

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(32))
    # Case-folded, normalized name: the uniqueness key, so look-alikes collide.
    username_key: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(8), default="user")
    # Bumped by logout, password change and ban: tokens carrying an older value die.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    # Migration 0007: switched off by an admin (signs in no more, like a ban, but no
    # moderation verdict: a departed member, a compromised account).
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # Migration 0003: the name people see, and the newest notification id marked read.
    display_name: Mapped[str | None] = mapped_column(String(64))
    notifications_read_upto: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    @property
    def locked(self) -> bool:
        """Banned or disabled: no sign-in, no token, no notification, not found by search."""
        return self.banned or self.disabled


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class BotToken(Base):
    __tablename__ = "bot_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class Room(Base):
    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The newest message's seq; incremented in the same transaction as the insert.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # Migration 0003. `kind` is "room" or "dm"; a DM's `dm_key` ("<low id>:<high id>")
    # is unique, so concurrent requests for one pair create one room.
    kind: Mapped[str] = mapped_column(String(8), default="room", server_default="room")
    topic: Mapped[str | None] = mapped_column(String(500))
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    dm_key: Mapped[str | None] = mapped_column(String(64), unique=True)


class RoomMember(Base):
    __tablename__ = "room_members"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[float] = mapped_column(Float, default=time.time)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("room_id", "seq", name="uq_messages_room_seq"),
        UniqueConstraint("user_id", "ref", name="uq_messages_user_ref"),
        Index("ix_messages_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    ref: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # Migration 0003: the seq this one answers, the last edit, and deletion (body emptied).
    reply_to: Mapped[int | None] = mapped_column(BigInteger)
    edited_at: Mapped[float | None] = mapped_column(Float)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class MessageChange(Base):
    """History of edits, deletes and reactions: who changed what, when (moderation),
    and what a resuming client missed: `at_seq` is the room's `last_seq` when the
    change was made, so a client at `since` missed at most the changes with
    `at_seq >= since`; `id` is the change's `version`, allocated in commit order
    within a room (under the room row's lock)."""

    __tablename__ = "message_changes"
    __table_args__ = (
        Index("ix_message_changes_room_at_seq", "room_id", "at_seq"),
        # A room's newest changes by version: `changes_after` resumes, the hub's checks.
        Index("ix_message_changes_room_id", "room_id", "id"),
        Index("ix_message_changes_message", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    at_seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(8))  # edit, delete, react, unreact
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    old_body: Mapped[str | None] = mapped_column(Text)
    new_body: Mapped[str | None] = mapped_column(Text)
    emoji: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Reaction(Base):
    __tablename__ = "reactions"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    emoji: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class RoomState(Base):
    """A user's own state in a room: read cursor (only moves forward) and what notifies
    them (`notify`: all, mentions or nothing; None is the room kind's default)."""

    __tablename__ = "room_states"
    __table_args__ = (Index("ix_room_states_user", "user_id"),)

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    read_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    notify: Mapped[str | None] = mapped_column(String(8))


class Notification(Base):
    """One entry of a user's inbox; `id` increases (globally, so per user too)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # mention, dm, app
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(2000))
    from_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)  # JSON
    error: Mapped[str | None] = mapped_column(Text)
    started_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, index=True)  # index: 0007
    # Migration 0002: which process runs it, its liveness, and cancel requests
    # made on another process (the runner polls for them).
    worker: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Lease(Base):
    """Who may run a scheduled job of the site until when (migration 0007_task_queue):
    `chat.storage.leases`."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(100))
    until: Mapped[float] = mapped_column(Float)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    level: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)


class StoredFile(Base):
    """An upload (migration 0005_files): its bytes live in the blob store under `sha256`
    (shared by identical uploads), bound to a message by `message_id` once attached."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_message", "message_id"),
        Index("ix_files_sha256", "sha256"),
        Index("ix_files_user", "user_id"),
        Index("ix_files_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    thumbnail: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Webhook(Base):
    """An outgoing webhook of a bot (migration 0006_webhooks). `secret` signs each body
    (kept because an HMAC needs it; shown once, at registration, never again).
    `events` is a comma-separated subset of mention, dm, message; `room_ids` a JSON
    list of the rooms whose every message is sent (the `message` event)."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[str] = mapped_column(String(64))
    room_ids: Mapped[str] = mapped_column(Text, default="[]")
    secret: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # active or disabled (after `webhook_max_failures` failed attempts in a row).
    state: Mapped[str] = mapped_column(String(16), default="active")
    failures: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts in a row
    disabled_at: Mapped[float | None] = mapped_column(Float)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))


class WebhookOutbox(Base):
    """A delivery waiting to be made: written in the message batch's transaction, so
    a committed message never lacks its deliveries. A room's rows go out in `seq`
    order, one at a time; `lease_until` is the claim of the process sending it."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_order", "webhook_id", "room_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign key: a process whose index is a moment behind may still queue for a
    # webhook just removed; such rows are never claimed and are swept (`trim`).
    webhook_id: Mapped[int] = mapped_column(BigInteger)
    room_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    delivery_id: Mapped[str] = mapped_column(String(32), unique=True)
    event: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)  # the exact bytes signed and sent (UTF-8)
    created_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(64))


class WebhookAttempt(Base):
    """One delivery attempt and how it ended (`delivered`, `failed`), or an event not
    queued (`dropped`: outbox full) or not sent (`skipped`: the bot lost the room)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_webhook", "webhook_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign key: a process whose index is a moment behind may still queue for a
    # webhook just removed; such rows are never claimed and are swept (`trim`).
    webhook_id: Mapped[int] = mapped_column(BigInteger)
    delivery_id: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(16))
    room_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """One admin action (migration 0007): who, what, to whom, when, from where."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor", "actor_name", "id"),
        Index("ix_audit_log_action", "action", "id"),
        Index("ix_audit_log_target", "target", "id"),
        Index("ix_audit_log_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_name: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str | None] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)  # JSON object
    address: Mapped[str | None] = mapped_column(String(64))
