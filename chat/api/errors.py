"""Error responses that hold up against any input."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from fastapi import APIRouter, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Route

from chat.protocol import ErrorCode, FrameError
from chat.storage.rules import InputError


async def invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, serialized as ASCII JSON, without the offending input.

    A request whose only problems are broken rules (a model's validator raised
    `InputError`: a username, a password, a display name...) gets the rule's
    words as `detail`, as the route's own check gave them; any other problem
    gets FastAPI's list (`chat.api.responses.ErrorOut` says both).

    The default handler echoes the input back as UTF-8, which fails with a 500
    for a lone surrogate (`"\\ud800"`, valid JSON that no UTF-8 can carry), and
    makes a 1 MB username a 1 MB answer: `input` is left out of every error.
    """
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    rules = [
        e["ctx"]["error"] for e in problems if isinstance(e.get("ctx", {}).get("error"), InputError)
    ]
    detail: object
    if problems and len(rules) == len(problems):
        detail = str(rules[0])
    else:
        issues = [{k: v for k, v in e.items() if k != "input"} for e in problems]
        detail = jsonable_encoder(issues, custom_encoder={Exception: str})
    body = json.dumps({"detail": detail}, ensure_ascii=True)
    return Response(
        body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json"
    )


def http_routes(routers: Iterable[APIRouter]) -> list[Route]:
    """Every HTTP route of `routers`, for `method_not_allowed` (FastAPI keeps an included
    router as one opaque route of the app)."""
    return [route for router in routers for route in router.routes if isinstance(route, Route)]


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 with `Allow` naming every method of the path, not only those of the first
    route that matched it (Starlette's answer, when a path has one route per method)."""
    assert isinstance(exc, HTTPException)
    path = request.scope["path"]
    methods: set[str] = set()
    for route in request.app.state.http_routes:
        if route.methods and route.path_regex.match(path):
            methods |= route.methods
    allow = ", ".join(sorted(methods)) or (exc.headers or {}).get("Allow", "")
    return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": allow})


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
