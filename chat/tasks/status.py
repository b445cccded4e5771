"""A task's status, and the errors of starting, reading, cancelling and running one."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING)
FINAL = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class TaskRefused(Exception):
    """A start, read or cancel that is not allowed; `status` is the HTTP status to answer."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


class TaskFailed(Exception):
    """Raised by a kind for a failure whose message is the task's readable error."""
