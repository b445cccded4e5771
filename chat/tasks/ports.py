"""What the task package needs from the rest of the server, as Protocols.

The hub, the alerts, the store and the accounts service satisfy these as they are;
the package never sees the `Services` container, so it cannot reach for more.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chat.hub import Connection
    from chat.monitoring.alerts import Level
    from chat.protocol import UserRef
    from chat.storage.models import User
    from chat.storage.records import RoomView


class FramePublisher(Protocol):
    """Where task frames go: the `admins` channel, a user's channel, local sockets (the hub)."""

    @property
    def connections(self) -> Collection[Connection]: ...

    async def publish_admins(self, payload: str) -> bool: ...

    async def publish_user(self, user_id: int, payload: str) -> bool: ...


class AlertSink(Protocol):
    """Raises an operator alert (stored and sent to admins)."""

    async def raise_alert(self, level: Level, text: str) -> object: ...


class Rooms(Protocol):
    """Room lookups as a given user may see them (the store)."""

    async def room_for(self, name: str, user: UserRef) -> RoomView | None: ...


class AccountMaker(Protocol):
    """Creates accounts with the password rules and hashing of sign-up (the accounts service)."""

    async def register(self, username: str, password: str, role: str = "user") -> User: ...


class ContentReleaser(Protocol):
    """Removes the bytes of files whose rows are gone, once nothing else uses them."""

    async def release(self, hashes: Collection[str]) -> None: ...


class JobQueue(Protocol):
    """The site's task queue (`chat.tasks.queue.TaskQueue`: saq on Redis)."""

    async def push(self, task_id: str, params: dict[str, Any]) -> None: ...

    async def lost(self, task_ids: Sequence[str]) -> list[str]: ...
