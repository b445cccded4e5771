"""The in-process state of a task this process owns (queued or running).

Fresher than the row while the task lives: views and frames prefer it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from chat.protocol import UserRef
    from chat.tasks.registry import TaskKind
    from chat.tasks.status import TaskStatus


@dataclass(eq=False)
class LiveTask:
    id: str
    kind: TaskKind[Any]
    params: BaseModel
    user: UserRef
    status: TaskStatus
    created_at: float
    progress: float = 0.0
    detail: str | None = None
    started_at: float | None = None
    runner: asyncio.Task[None] | None = None
    interrupted: bool = False  # stopped by a shutdown, not by a cancel
    finishing: bool = False  # its final status is being stored: too late to cancel
    sent_at: float = -math.inf  # monotonic time of the last frame
    saved_at: float = -math.inf  # monotonic time of the last progress write
    trailing: asyncio.TimerHandle | None = None  # a held progress frame's timer
    final_sent: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # final, or dropped

    def queue_order(self) -> tuple[bool, float]:
        """Admins' tasks first, then the oldest."""
        return (self.user.role != "admin", self.created_at)
