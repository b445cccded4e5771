"""Files over HTTP: upload (`POST /api/files`), download, thumbnail.

The upload's body is read as it streams (`FileService.upload`), so no route
parameter may ask FastAPI for it: FastAPI would read and spool it all first.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from chat.api.deps import Caller, SettingsDep
from chat.api.responses import errors
from chat.files.images import FORMATS
from chat.files.names import content_disposition
from chat.files.service import FileService, UploadRefused

router = APIRouter(prefix="/api/files", tags=["files"])
# File responses may run nothing and load nothing, even opened on their own.
FILE_CSP = "default-src 'none'; sandbox"
INLINE_TYPES = frozenset(FORMATS)  # png, jpeg, gif, webp
# Bytes of multipart framing (boundaries, part headers, the room field) besides the file.
MULTIPART_SLACK = 16 * 1024
FileIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


def _files(request: Request) -> FileService:
    files: FileService = request.app.state.services.files
    return files


FilesDep = Annotated[FileService, Depends(_files)]
ERRORS = errors(
    (400, "`bad_upload`: not a multipart body with `room` and `file`"),
    (403, "`forbidden`: the room is archived"),
    (404, "`not_found`: no such room (or file), or you may not read it"),
    (413, "`too_large` (CHAT_MAX_UPLOAD_BYTES) or `quota_exceeded`"),
    (422, "`image_too_large`: more pixels than CHAT_MAX_IMAGE_PIXELS"),
)
# The body is read as it streams (see above), so FastAPI cannot see it: described here.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["room", "file"],
                    "properties": {
                        "room": {"type": "string", "description": "first: the room's name"},
                        "file": {"type": "string", "format": "binary"},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}
FILE_BYTES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the file's bytes", "content": {"*/*": {}}}
}


def refused(exc: UploadRefused) -> JSONResponse:
    headers = {"Connection": "close"} if exc.status == 413 else None
    return JSONResponse(
        {"detail": exc.detail, "code": exc.code}, status_code=exc.status, headers=headers
    )


@router.post("", status_code=201, responses=ERRORS, openapi_extra=UPLOAD_BODY)
async def upload(
    request: Request, caller: Caller, files: FilesDep, settings: SettingsDep
) -> Response:
    """Upload one file to a room you may send in: multipart fields `room`, then `file`.

    Streamed to disk and refused with 413 the moment it passes the size bound; typed
    by its content; images re-encoded without metadata, with a thumbnail.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes + MULTIPART_SLACK:
        return refused(
            UploadRefused(
                413, "too_large", f"the file is larger than {settings.max_upload_bytes} bytes"
            )
        )
    try:
        item = await files.upload(
            caller.user, request.stream(), request.headers.get("content-type", "")
        )
    except UploadRefused as exc:
        return refused(exc)
    return JSONResponse(item.model_dump(), status_code=201)


async def _serve(files: FileService, caller: Caller, file_id: str, *, thumbnail: bool) -> Response:
    try:
        found = await files.download(file_id, caller.user, thumbnail=thumbnail)
    except UploadRefused as exc:
        return refused(exc)
    inline = thumbnail or found.content_type in INLINE_TYPES
    headers = {
        "Content-Disposition": content_disposition(
            "inline" if inline else "attachment", found.file.name
        ),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": FILE_CSP,
        "Cross-Origin-Resource-Policy": "same-origin",
        # An id's bytes never change; only the reader's permission may.
        "Cache-Control": "private, max-age=3600",
    }
    if found.size is not None:
        headers["Content-Length"] = str(found.size)
    return StreamingResponse(found.chunks, media_type=found.content_type, headers=headers)


@router.get("/{file_id}", responses={**FILE_BYTES, 404: ERRORS[404]})
async def download(file_id: FileIdPath, caller: Caller, files: FilesDep) -> Response:
    """The file's bytes, for users who can read its room. Only PNG, JPEG, GIF and WebP
    are inline; everything else is an attachment download."""
    return await _serve(files, caller, file_id, thumbnail=False)


@router.get(
    "/{file_id}/thumbnail",
    responses={200: {"content": {"image/webp": {}}}, 404: ERRORS[404]},
)
async def thumbnail(file_id: FileIdPath, caller: Caller, files: FilesDep) -> Response:
    """A WebP preview of an image (at most `thumbnail_px` on its longer side)."""
    return await _serve(files, caller, file_id, thumbnail=True)
