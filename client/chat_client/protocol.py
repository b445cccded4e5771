"""The wire protocol: every frame as a pydantic model (pure types, no I/O).

The one definition, shared by both sides: it ships in the client distribution
(`chat-hub-client`, which needs only pydantic for it) and the server re-exports it
as `chat.protocol`. Client frames are parsed strictly (no type coercion) into
`ClientFrame`; server frames are built from the `*Frame` models and parsed by
clients with `parse_server_frame`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "CLIENT_TYPES",
    "MAX_ATTACHMENTS",
    "MAX_SEQ",
    "AckFrame",
    "AlertFrame",
    "Attachment",
    "AuthIn",
    "ChangesCheckedFrame",
    "ClientFrame",
    "CloseCode",
    "DeleteIn",
    "DeletedFrame",
    "EditIn",
    "EditedFrame",
    "ErrorCode",
    "ErrorFrame",
    "FileId",
    "FrameError",
    "HelloFrame",
    "JoinIn",
    "JoinedFrame",
    "LeaveIn",
    "LeftFrame",
    "MessageFrame",
    "NotificationFrame",
    "NotificationsReadFrame",
    "PingIn",
    "PongFrame",
    "PresenceChangesFrame",
    "PresenceFrame",
    "PresenceSnapshotFrame",
    "ReactIn",
    "ReactionFrame",
    "ReadFrame",
    "ReadIn",
    "ReauthedFrame",
    "Ref",
    "RemovedFrame",
    "ReplyRef",
    "RoomFrame",
    "RoomName",
    "RoomPresence",
    "SendIn",
    "Seq",
    "ServerFrame",
    "TaskFrame",
    "TypingFrame",
    "TypingIn",
    "UserRef",
    "WatchIn",
    "encode",
    "iso",
    "now_iso",
    "parse_client_frame",
    "parse_server_frame",
]

Ref = Annotated[str, Field(min_length=1, max_length=64)]
RoomName = Annotated[str, Field(min_length=1, max_length=200)]
MAX_SEQ = 2**63 - 1  # the database's integer range
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
# A reaction: one emoji (or short code), at most 16 characters.
Emoji = Annotated[str, Field(min_length=1, max_length=16)]
# An uploaded file's id (`POST /api/files`), and how many one message may carry.
FileId = Annotated[str, Field(min_length=1, max_length=64)]
MAX_ATTACHMENTS = 10


class ErrorCode(StrEnum):
    """Codes of `error` frames. The connection stays open after each."""

    BAD_FRAME = "bad_frame"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NOT_JOINED = "not_joined"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"  # too much in flight: nothing done, retry after `retry_after`
    UNAVAILABLE = "unavailable"  # the database failed: nothing stored, resend the same ref
    # `send` named a file that is not the sender's own unattached upload to that room.
    BAD_ATTACHMENT = "bad_attachment"
    INTERNAL = "internal"


class CloseCode:
    """WebSocket close codes the server uses (4000-4999 are our own)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008  # authentication failed or policy violated
    TOO_BIG = 1009
    INTERNAL = 1011
    TOKEN_EXPIRED = 4001  # refresh the token and reconnect
    HEARTBEAT_TIMEOUT = 4002  # no answer to pings
    REVOKED = 4003  # logged out, banned, password changed or token revoked: sign in again
    SLOW_CONSUMER = 4008  # outbound queue overflowed: reconnect and resume with `since`
    TOO_MANY_CONNECTIONS = 4009
    RATE_LIMITED = 4029  # kept flooding after `rate_limited` errors


class _Frame(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# --- client to server -------------------------------------------------------


class AuthIn(_Frame):
    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=8192)]
    ref: Ref | None = None


class JoinIn(_Frame):
    type: Literal["join"]
    room: RoomName
    since: Annotated[int, Field(ge=0)] | None = None
    # The highest change `version` seen in the room: resend the changes after it.
    changes_after: Annotated[int, Field(ge=0)] | None = None
    ref: Ref | None = None


class LeaveIn(_Frame):
    type: Literal["leave"]
    room: RoomName
    ref: Ref | None = None


class SendIn(_Frame):
    type: Literal["send"]
    room: RoomName
    body: str
    ref: Ref
    reply_to: Seq | None = None
    # Uploads of the sender's to this room, not attached yet (`POST /api/files`).
    attachments: Annotated[list[FileId], Field(max_length=MAX_ATTACHMENTS)] | None = None


class EditIn(_Frame):
    type: Literal["edit"]
    room: RoomName
    seq: Seq
    body: str
    ref: Ref | None = None


class DeleteIn(_Frame):
    type: Literal["delete"]
    room: RoomName
    seq: Seq
    ref: Ref | None = None


class ReactIn(_Frame):
    type: Literal["react"]
    room: RoomName
    seq: Seq
    emoji: Emoji
    on: bool
    ref: Ref | None = None


class ReadIn(_Frame):
    type: Literal["read"]
    room: RoomName
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]
    ref: Ref | None = None


class TypingIn(_Frame):
    type: Literal["typing"]
    room: RoomName
    ref: Ref | None = None


class PingIn(_Frame):
    type: Literal["ping"]
    ref: Ref | None = None


class WatchIn(_Frame):
    """Admins: follow something site-wide (`presence`: every room's, without joining)."""

    type: Literal["watch"]
    topic: Literal["presence"]
    on: bool = True  # false: stop
    ref: Ref | None = None


ClientFrame = Annotated[
    AuthIn
    | JoinIn
    | LeaveIn
    | SendIn
    | EditIn
    | DeleteIn
    | ReactIn
    | ReadIn
    | TypingIn
    | PingIn
    | WatchIn,
    Field(discriminator="type"),
]
CLIENT_TYPES = frozenset(
    {"auth", "join", "leave", "send", "edit", "delete", "react", "read", "typing", "ping", "watch"}
)
_client_adapter: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


class FrameError(Exception):
    """A client frame that cannot be accepted; carries the `error` frame's fields."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        ref: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref
        self.retry_after = retry_after


def parse_client_frame(raw: str | dict[str, Any]) -> ClientFrame:
    """Parse one client frame. Raises `FrameError(bad_frame)` with a precise reason."""
    import json

    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise FrameError(ErrorCode.BAD_FRAME, "frame is not valid JSON") from None
        # `"\ud800"` is valid JSON but no valid text: it could be neither stored nor echoed.
        if _SURROGATE_ESCAPE.search(raw) and not _is_unicode(data):
            raise FrameError(ErrorCode.BAD_FRAME, "strings must not contain lone surrogates")
    else:
        data = raw
    if not isinstance(data, dict):
        raise FrameError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    ref = data.get("ref") if isinstance(data.get("ref"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.BAD_FRAME, "frame has no string `type`", ref)
    if kind not in CLIENT_TYPES:
        raise FrameError(ErrorCode.BAD_FRAME, f"unknown frame type {kind[:40]!r}", ref)
    try:
        return _client_adapter.validate_python(data)
    except (ValidationError, RecursionError) as exc:
        raise FrameError(ErrorCode.BAD_FRAME, _describe(exc), ref) from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _is_unicode(data: object) -> bool:
    """True when every string in `data` can be encoded (has no lone surrogate)."""
    import json

    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        return f"{where}: {first['msg']}"
    return "frame is nested too deeply"


# --- server to client -------------------------------------------------------


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a `Z`."""
    return iso(datetime.now(UTC).timestamp())


def iso(ts: float) -> str:
    """Format epoch seconds as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UserRef(_Frame):
    id: int
    name: str
    role: Literal["user", "admin", "bot"] = "user"
    display_name: str | None = None  # set with `PATCH /api/me`; absent until then


class HelloFrame(_Frame):
    type: Literal["hello"] = "hello"
    user: UserRef
    expires_at: str | None = None
    limits: dict[str, int | float] = Field(default_factory=dict)
    notifications_unread: int = 0
    last_notification_id: int = 0
    ref: str | None = None


class ReauthedFrame(_Frame):
    type: Literal["reauthed"] = "reauthed"
    expires_at: str | None = None
    ref: str | None = None


class JoinedFrame(_Frame):
    type: Literal["joined"] = "joined"
    room: str
    presence: list[UserRef]
    last_seq: int
    replay_truncated: bool = False
    read_seq: int = 0
    unread: int = 0
    # More messages up to `since` changed than a join resends: re-read those pages.
    changes_truncated: bool = False
    # The room's newest change version when the join took effect (0: none yet).
    changes_version: int = 0
    topic: str | None = None
    archived: bool = False
    ref: str | None = None


class LeftFrame(_Frame):
    type: Literal["left"] = "left"
    room: str
    ref: str | None = None


class AckFrame(_Frame):
    type: Literal["ack"] = "ack"
    ref: str
    room: str
    id: int
    seq: int
    ts: str


class ReplyRef(_Frame):
    """What a reply shows of the message it answers (`excerpt`: its first characters)."""

    seq: int
    user: UserRef | None
    excerpt: str


class Attachment(_Frame):
    """A file a message carries: download it at `/api/files/{id}`; `thumbnail` (images
    only) is the path of a small preview, `width` and `height` the image's size."""

    id: str
    name: str
    size: int
    content_type: str
    width: int | None = None
    height: int | None = None
    thumbnail: str | None = None


class MessageFrame(_Frame):
    type: Literal["message"] = "message"
    room: str
    id: int
    seq: int
    user: UserRef
    body: str  # empty once deleted
    ts: str
    reply_to: ReplyRef | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    reactions: dict[str, list[str]] = Field(default_factory=dict)
    edited_at: str | None = None
    deleted: bool = False

    # `reply_to` and `edited_at` are part of every message frame, null or not.
    keep_none: ClassVar[bool] = True


class EditedFrame(_Frame):
    type: Literal["edited"] = "edited"
    room: str
    seq: int
    body: str
    edited_at: str
    # The change's id in the room's history: of two frames about one message, the
    # higher `version` is the newer state (frames from two processes may cross).
    version: int = 0
    ref: str | None = None


class DeletedFrame(_Frame):
    type: Literal["deleted"] = "deleted"
    room: str
    seq: int
    version: int = 0
    ref: str | None = None


class ReactionFrame(_Frame):
    type: Literal["reaction"] = "reaction"
    room: str
    seq: int
    emoji: str
    users: list[str]  # everyone with that reaction now (whole state)
    version: int = 0
    ref: str | None = None


class ChangesCheckedFrame(_Frame):
    """Every change of `room` up to `version` has reached this connection (live, resent,
    or in its join): the `changes_after` to rejoin with. The highest `version` seen in
    change frames is not, as an event can overtake an earlier one still on its way."""

    type: Literal["changes_checked"] = "changes_checked"
    room: str
    version: int


class ReadFrame(_Frame):
    """The user's read cursor in `room` moved (sent to their other connections)."""

    type: Literal["read"] = "read"
    room: str
    seq: int
    ref: str | None = None


class NotificationFrame(_Frame):
    model_config = ConfigDict(
        strict=True, extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    type: Literal["notification"] = "notification"
    id: int
    kind: str  # mention, dm, app
    room: str | None = None
    seq: int | None = None
    title: str | None = None
    body: str
    link: str | None = None
    ts: str
    from_: UserRef | None = Field(default=None, alias="from")


class NotificationsReadFrame(_Frame):
    """The user marked their notifications read up to `upto` (on any connection):
    `unread` is how many are left, so every tab shows the same count."""

    type: Literal["notifications_read"] = "notifications_read"
    upto: int
    unread: int


class RoomFrame(_Frame):
    """The room's settings changed (topic, archived)."""

    type: Literal["room"] = "room"
    room: str
    topic: str | None
    archived: bool

    keep_none: ClassVar[bool] = True


class RemovedFrame(_Frame):
    """The user was removed from (or left) `room`: nothing more comes from it."""

    type: Literal["removed"] = "removed"
    room: str


class PresenceFrame(_Frame):
    type: Literal["presence"] = "presence"
    room: str
    event: Literal["join", "leave"]
    user: UserRef


class PresenceChangesFrame(_Frame):
    """Several presence changes of one room in one tick (one frame per member, not n)."""

    type: Literal["presence_changes"] = "presence_changes"
    room: str
    joined: list[UserRef]
    left: list[UserRef]


class RoomPresence(_Frame):
    room: str
    users: list[UserRef]


class PresenceSnapshotFrame(_Frame):
    """The answer to `watch` `presence`: every room with its present users; then
    `presence_changes` frames of every room follow (admins only)."""

    type: Literal["presence_snapshot"] = "presence_snapshot"
    rooms: list[RoomPresence]
    ref: str | None = None


class TypingFrame(_Frame):
    type: Literal["typing"] = "typing"
    room: str
    user: UserRef


class PongFrame(_Frame):
    type: Literal["pong"] = "pong"
    ts: str
    ref: str | None = None


class TaskFrame(_Frame):
    type: Literal["task"] = "task"
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float
    detail: str | None = None
    ts: str
    # Extensions (docs/tasks.md): who started it, when it ran, why it failed.
    user: UserRef | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None


class AlertFrame(_Frame):
    type: Literal["alert"] = "alert"
    level: Literal["info", "warning", "error", "critical"]
    text: str
    ts: str
    id: int | None = None


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    code: str
    detail: str
    ref: str | None = None
    retry_after: float | None = None


ServerFrame = Annotated[
    HelloFrame
    | ReauthedFrame
    | JoinedFrame
    | LeftFrame
    | AckFrame
    | MessageFrame
    | EditedFrame
    | DeletedFrame
    | ReactionFrame
    | ChangesCheckedFrame
    | ReadFrame
    | NotificationFrame
    | NotificationsReadFrame
    | RoomFrame
    | RemovedFrame
    | PresenceFrame
    | PresenceChangesFrame
    | PresenceSnapshotFrame
    | TypingFrame
    | PongFrame
    | TaskFrame
    | AlertFrame
    | ErrorFrame,
    Field(discriminator="type"),
]
_server_adapter: TypeAdapter[ServerFrame] = TypeAdapter(ServerFrame)


def parse_server_frame(raw: str | bytes) -> ServerFrame:
    """Parse a frame sent by the server (for clients). Raises `ValidationError`."""
    return _server_adapter.validate_json(raw, strict=False)


def encode(frame: BaseModel) -> str:
    """Serialize a server frame once, leaving out optional fields that are None
    (except in frames whose contract shows them as null: `keep_none`)."""
    return frame.model_dump_json(exclude_none=not getattr(frame, "keep_none", False))
