"""What a running kind, and a kind's admission check, get to work with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chat.protocol import UserRef
    from chat.storage.db import Database
    from chat.tasks.exports import ExportFiles
    from chat.tasks.ports import AccountMaker, ContentReleaser, Rooms


class Progress(Protocol):
    async def __call__(self, done: float, total: float, detail: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class TaskDeps:
    """The parts of the server the built-in kinds and their checks use, and nothing more."""

    db: Database  # short read and write transactions, batch by batch
    rooms: Rooms  # may this user read that room (export, purge)
    accounts: AccountMaker  # import_users
    exports: ExportFiles  # where an export writes
    files: ContentReleaser  # purge: the bytes of the purged messages' files
    demo_max_seconds_user: float  # the longest demo a non-admin may start


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a running kind gets besides its parameters.

    `await ctx.progress(done, total, detail)` reports (throttled) and is also the
    point where a cancel lands.
    """

    id: str
    user: UserRef
    progress: Progress
    deps: TaskDeps
