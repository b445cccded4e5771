"""Long-running tasks: a registry of kinds and a runner with live, throttled progress.

The `tasks` row is the source of truth from the first moment; progress goes out as
`task` frames to the `admins` channel and to the starter's own channel. See
docs/tasks.md for the behaviour, and the modules for one part each:

- `registry`: `@task_kind`, the kinds table, parameter validation
- `context`: what a running kind gets (`TaskContext`, `TaskDeps`)
- `runner`: admission, the queue and its concurrency, running, cancelling
- `frames`: task frames, progress throttling, greeting and resync of sockets
- `liveness`: heartbeats, remote cancels, orphans of dead processes
- `repository`: all SQL on the `tasks` table; `views`: a task as JSON and as a frame
- `exports`: where export files live; `kinds/`: the built-in kinds
- `ports`: what the package needs from the rest of the server, as Protocols

Nothing here imports `chat.services`: each part gets only what it uses.
"""

from chat.tasks import kinds as kinds  # registers the built-in kinds
from chat.tasks.context import Progress, TaskContext, TaskDeps
from chat.tasks.exports import MEDIA_TYPES, ExportFiles
from chat.tasks.registry import REGISTRY, TaskKind, TaskParams, task_kind, validation_detail
from chat.tasks.runner import TaskRunner
from chat.tasks.status import ACTIVE, FINAL, TaskFailed, TaskRefused, TaskStatus

__all__ = [
    "ACTIVE",
    "FINAL",
    "MEDIA_TYPES",
    "REGISTRY",
    "ExportFiles",
    "Progress",
    "TaskContext",
    "TaskDeps",
    "TaskFailed",
    "TaskKind",
    "TaskParams",
    "TaskRefused",
    "TaskRunner",
    "TaskStatus",
    "kinds",
    "task_kind",
    "validation_detail",
]
