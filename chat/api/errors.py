"""Error responses that hold up against any input."""

from __future__ import annotations

import json
import math

from fastapi import Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from chat.protocol import ErrorCode, FrameError


async def invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, serialized as ASCII JSON, without the offending input.

    The default handler echoes the input back as UTF-8, which fails with a 500
    for a lone surrogate (`"\\ud800"`, valid JSON that no UTF-8 can carry), and
    makes a 1 MB username a 1 MB answer: `input` is left out of every error.
    """
    assert isinstance(exc, RequestValidationError)
    details = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
    body = json.dumps({"detail": jsonable_encoder(details)}, ensure_ascii=True)
    return Response(
        body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json"
    )


# The HTTP status of each refusal a route shares with a WebSocket frame (`ErrorCode`).
STATUS_OF_CODE: dict[str, int] = {
    ErrorCode.BAD_FRAME: 422,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.BAD_ATTACHMENT: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


def coded(
    status_code: int, code: str, detail: str, retry_after: float | None = None
) -> JSONResponse:
    """`{"code", "detail"[, "retry_after"]}` with `Retry-After` when there is a wait."""
    body: dict[str, object] = {"code": code, "detail": detail}
    headers = None
    if retry_after is not None:
        body["retry_after"] = retry_after
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return JSONResponse(body, status_code=status_code, headers=headers)


def frame_error(exc: FrameError) -> JSONResponse:
    """A refusal shared with the WebSocket (`FrameError`) as an HTTP answer."""
    return coded(STATUS_OF_CODE.get(exc.code, 400), exc.code, exc.detail, exc.retry_after)
