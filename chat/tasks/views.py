"""A task as the API answers it (JSON) and as sockets receive it (`task` frames).

Both read the stored row; a task this process runs overrides the row's status,
progress and detail with its fresher in-process state.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chat.protocol import TaskFrame, iso, now_iso
from chat.storage.records import user_ref
from chat.tasks.status import TaskStatus

if TYPE_CHECKING:
    from chat.storage.models import Task, User
    from chat.tasks.live import LiveTask


def task_json(task: Task, starter: User, live: LiveTask | None) -> dict[str, Any]:
    status = live.status.value if live else task.status
    progress = live.progress if live else task.progress
    detail = live.detail if live else task.detail
    out: dict[str, Any] = {
        "id": task.id,
        "kind": task.kind,
        "status": status,
        "progress": round(progress, 4),
        "detail": detail,
        "params": json.loads(task.params or "{}"),
        "result": json.loads(task.result) if task.result else None,
        "error": task.error,
        "user": user_ref(starter).model_dump(),
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at) if task.started_at else None,
        "finished_at": iso(task.finished_at) if task.finished_at else None,
        "cancel_requested": bool(task.cancel_requested),
    }
    if task.kind == "export" and status == TaskStatus.SUCCEEDED:
        out["download"] = f"/api/tasks/{task.id}/result"
    return out


def row_frame(task: Task, starter: User, live: LiveTask | None) -> TaskFrame:
    """The frame of a stored task (a greeting, a resync, a change made in the database)."""
    if live is not None:  # fresher than the row
        status, progress, detail = live.status.value, live.progress, live.detail
        ts = now_iso()
    else:
        status, progress, detail = task.status, task.progress, task.detail
        ts = iso(task.updated_at or task.created_at)
    return TaskFrame(
        id=task.id,
        kind=task.kind,
        status=status,  # type: ignore[arg-type]
        progress=round(progress, 4),
        detail=detail,
        ts=ts,
        user=user_ref(starter),
        started_at=iso(task.started_at) if task.started_at else None,
        finished_at=iso(task.finished_at) if task.finished_at else None,
        error=task.error,
    )


def live_frame(live: LiveTask, *, final_at: float | None, error: str | None) -> TaskFrame:
    """The frame of a task this process runs, as it stands now."""
    return TaskFrame(
        id=live.id,
        kind=live.kind.name,
        status=live.status.value,
        progress=round(live.progress, 4),
        detail=live.detail,
        ts=now_iso(),
        user=live.user,
        started_at=iso(live.started_at) if live.started_at else None,
        finished_at=iso(final_at) if final_at else None,
        error=error,
    )
