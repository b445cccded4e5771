"""Error responses that hold up against any input."""

from __future__ import annotations

import json

from fastapi import Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError


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
