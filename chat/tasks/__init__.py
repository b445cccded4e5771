"""Long-running tasks (see docs/tasks.md)."""

from chat.tasks.runner import (
    REGISTRY,
    TaskContext,
    TaskFailed,
    TaskRefused,
    TaskRunner,
    TaskStatus,
    task_kind,
    validation_detail,
)

__all__ = [
    "REGISTRY",
    "TaskContext",
    "TaskFailed",
    "TaskRefused",
    "TaskRunner",
    "TaskStatus",
    "task_kind",
    "validation_detail",
]
