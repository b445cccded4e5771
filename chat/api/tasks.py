"""Task endpoints: start, poll, list, cancel, download the result."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from chat.api.audit import AuditDep
from chat.api.deps import Caller, StoreDep, TasksDep
from chat.api.fields import RequestBody
from chat.api.responses import errors
from chat.tasks import MEDIA_TYPES, REGISTRY, TaskRefused, TaskStatus, validation_detail

router = APIRouter(prefix="/api", tags=["tasks"])

MAX_BODY_BYTES = 4_000_000
MAX_UPLOAD_BYTES = 2_000_000


class TaskIn(RequestBody):
    model_config = ConfigDict(extra="forbid")  # as each kind's variant in the document

    kind: str = Field(min_length=1, max_length=32, examples=["demo"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"steps": 5, "delay": 0.5}])


def _refused(exc: TaskRefused) -> HTTPException:
    return HTTPException(exc.status, exc.detail)


def _start_body() -> dict[str, Any]:
    """The start request, one variant per registered kind with its parameters' schema.

    As multipart/form-data, for the kinds that take a file (`params`, a JSON string,
    may come too: the kind's parameters besides the file)."""
    variants = []
    for kind in sorted(REGISTRY.values(), key=lambda k: k.name):
        params = kind.params.model_json_schema()
        variants.append(
            {
                "title": kind.name,
                "type": "object",
                # `params` may be left out when the kind has defaults for everything.
                "required": ["kind", "params"] if params.get("required") else ["kind"],
                "properties": {"kind": {"const": kind.name}, "params": params},
                "additionalProperties": False,
            }
        )
    uploads = sorted(k.name for k in REGISTRY.values() if k.upload_field is not None)
    form = {
        "type": "object",
        "required": ["kind", "file"],
        "properties": {
            "kind": {"enum": uploads},
            "file": {"type": "string", "contentMediaType": "text/csv", "pattern": r"\S"},
        },
        "additionalProperties": False,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": variants}},
                "multipart/form-data": {
                    "schema": form,
                    "encoding": {"file": {"contentType": "text/csv"}},
                },
            },
        }
    }


START_BODY = _start_body()
FORM_FIELDS = frozenset({"kind", "params", "file"})
TASK_NOT_FOUND = (404, "no such task, or not the caller's")


@router.post(
    "/tasks",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=START_BODY,
    responses=errors(
        (403, "a kind for admins only"),
        (404, "a room the kind names does not exist or is not readable"),
        (413, "the body or the file is too large"),
        422,
        (429, "the caller has `tasks_per_user` unfinished tasks"),
        (503, "the server is shutting down"),
    ),
)
async def start_task(
    request: Request, caller: Caller, tasks: TasksDep, audit: AuditDep
) -> JSONResponse:
    """Start a task `{kind, params}`; answers 202 at once with the stored task.

    JSON, or multipart/form-data with `kind`, `params` (a JSON string) and a
    `file` that fills the kind's upload field (the CSV of `import_users`).
    Progress then arrives as `task` frames on /ws, or by polling `GET /api/tasks/{id}`.
    """
    kind, params = await _read_start(request)
    try:
        view = await tasks.submit(kind, params, caller.user)
    except TaskRefused as exc:
        raise _refused(exc) from None
    registered = REGISTRY.get(kind)
    if registered is not None and registered.admin_only:  # purge, import_users
        # The stored params: a kind leaves its secrets (import passwords) out of them.
        await audit.record(caller, f"task.{kind}", "task", view["id"], params=view.get("params"))
    return JSONResponse(
        view, status_code=status.HTTP_202_ACCEPTED, headers={"Location": f"/api/tasks/{view['id']}"}
    )


async def _read_start(request: Request) -> tuple[str, dict[str, Any]]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the request body is too large")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_multipart(request)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the request body is too large")
    try:
        task = TaskIn.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, validation_detail(exc, "body")
        ) from None
    return task.kind, task.params


async def _read_multipart(request: Request) -> tuple[str, dict[str, Any]]:
    async with request.form(max_files=1, max_fields=10, max_part_size=MAX_UPLOAD_BYTES) as form:
        unknown = sorted(set(form.keys()) - FORM_FIELDS)
        if unknown:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"unknown form fields: {', '.join(repr(n[:40]) for n in unknown[:5])}",
            )
        kind = form.get("kind")
        if not isinstance(kind, str) or not kind:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "form field `kind` is missing"
            )
        raw = form.get("params") or "{}"
        try:
            params = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            params = None
        if not isinstance(params, dict):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "form field `params` must be a JSON object"
            )
        upload = form.get("file")
        if upload is not None:  # a file part, or the same text as a plain field
            registered = REGISTRY.get(kind)
            if registered is None or registered.upload_field is None:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, f"task kind {kind[:40]!r} takes no file"
                )
            if isinstance(upload, UploadFile):
                data = await upload.read(MAX_UPLOAD_BYTES + 1)
            else:
                data = upload.encode()
            if len(data) > MAX_UPLOAD_BYTES:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the file is too large")
            try:
                params[registered.upload_field] = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, "the file must be UTF-8 text"
                ) from None
    return kind, params


@router.get("/tasks/kinds", responses=errors())
async def task_kinds(caller: Caller) -> dict[str, Any]:
    """The task kinds the caller may start, with their parameters' JSON Schema."""
    admin = caller.user.role == "admin"
    return {
        "items": [
            kind.describe()
            for kind in sorted(REGISTRY.values(), key=lambda k: k.name)
            if admin or not kind.admin_only
        ]
    }


@router.get("/tasks", responses=errors())
async def list_tasks(
    caller: Caller,
    tasks: TasksDep,
    active: Annotated[bool, Query(description="only queued and running tasks")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Tasks, newest first: every task for admins, the caller's own for others."""
    return {"items": await tasks.list_tasks(caller.user, active=active, limit=limit)}


@router.get("/tasks/{task_id}", responses=errors(TASK_NOT_FOUND))
async def get_task(task_id: str, caller: Caller, tasks: TasksDep) -> dict[str, Any]:
    """One task (its starter's or, for admins, any): status, progress, result or error."""
    view = await tasks.view(task_id[:64], caller.user)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such task")
    return view


@router.post(
    "/tasks/{task_id}/cancel",
    responses=errors(TASK_NOT_FOUND, (409, "the task has already finished")),
)
async def cancel_task(
    task_id: str, caller: Caller, tasks: TasksDep, audit: AuditDep
) -> dict[str, Any]:
    """Cancel a queued or running task; 409 when it has already finished."""
    try:
        view = await tasks.cancel(task_id[:64], caller.user)
    except TaskRefused as exc:
        raise _refused(exc) from None
    await audit.by_admin(caller, "task.cancel", "task", view["id"], kind=view.get("kind"))
    return view


@router.get(
    "/tasks/{task_id}/result",
    response_class=Response,
    responses={
        200: {"content": {v: {} for v in MEDIA_TYPES.values()}},
        **errors(
            (404, "no such export task, or its room is not readable"),
            (409, "the export has not finished, or the task is no export"),
            (410, "the export file is no longer available"),
        ),
    },
)
async def task_result(
    task_id: str, caller: Caller, store: StoreDep, tasks: TasksDep
) -> FileResponse:
    """The file of a finished export, for anyone who may read the room it came from."""
    task = await tasks.row(task_id[:64])
    if task is None or (task.kind != "export" and await tasks.view(task.id, caller.user) is None):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such export task")
    if task.kind != "export":  # the caller's own (or an admin's view): it exists
        raise HTTPException(status.HTTP_409_CONFLICT, f"a {task.kind} task has no result file")
    params = json.loads(task.params)
    room = str(params.get("room", ""))
    fmt = str(params.get("format", "jsonl"))
    if await store.room_for(room, caller.user) is None:
        # Same answer as for a missing task: do not confirm that it exists.
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such export task")
    if task.status != TaskStatus.SUCCEEDED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the export is {task.status}, not finished")
    path = tasks.exports.finished(task.id, fmt)
    if path is None:
        raise HTTPException(status.HTTP_410_GONE, "the export file is no longer available")
    safe_room = "".join(c if c.isalnum() or c in "-_." else "_" for c in room)[:60] or "room"
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[fmt],
        filename=f"{safe_room}-{task.id[:8]}.{fmt}",
        headers={"Cache-Control": "no-store"},
    )
