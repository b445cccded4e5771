"""What a command handler may use of its session (`chat.ws.session.Session` is one)."""

from __future__ import annotations

from typing import Protocol

from chat.auth.accounts import Principal
from chat.config import Settings
from chat.hub import Connection
from chat.protocol import UserRef
from chat.storage.records import RoomView
from chat.ws.deps import WsDeps
from chat.ws.inflight import InFlight
from chat.ws.socket import SocketSink


class CommandContext(Protocol):
    settings: Settings
    deps: WsDeps
    conn: Connection
    sink: SocketSink
    principal: Principal
    joined: dict[str, RoomView]  # rooms joined, as read at the join
    sends: InFlight

    async def rate_limit(
        self, action: str, rate: float, burst: int, ref: str | None, detail: str | None = None
    ) -> None:
        """Raise `rate_limited` when the user's `action` bucket is empty."""

    async def readable_room(self, name: str, ref: str | None) -> RoomView:
        """The room, or `not_found` (absent and forbidden look the same)."""

    @property
    def user(self) -> UserRef:
        """The connection's user (kept current: a new display name shows at once)."""

    def require_joined(self, room: str, ref: str | None) -> None:
        """Raise `not_joined` unless this connection joined `room`."""

    def writable_room(self, room: str, ref: str | None) -> RoomView:
        """The joined room for a write (send, edit, react): `not_joined`, or `forbidden`
        while it is archived."""

    def error(
        self, code: str, detail: str, ref: str | None = None, retry_after: float | None = None
    ) -> None:
        """Send an `error` frame."""

    def watch_expiry(self) -> None:
        """Close the socket when the current token expires."""

    def expires_iso(self) -> str:
        """When the current token expires (ISO 8601)."""
