"""Error responses that hold up against any input."""

from __future__ import annotations

import json

from fastapi import Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError


async def invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, serialized as ASCII JSON.

    The default handler echoes the input back as UTF-8, which fails with a 500
    for a lone surrogate (`"\\ud800"`, valid JSON that no UTF-8 can carry).
    """
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(
        body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json"
    )
