"""What the OpenAPI document says about answers: one error body, and the errors of each route.

Every error answer is JSON `{"detail", "code"?, "retry_after"?}` (`ErrorOut`). A
route names the errors it can give with `responses=errors(...)`:

    @router.post("/things", responses=errors(403, 404, (409, "the name is taken")))

Each code gets `ErrorOut` and a default description; a `(code, text)` pair says
what that route means by it. `complete()` then adds, to the whole document, the
answers every route shares by construction: 401 where a bearer token is required
(`deps.get_principal`), 413 where there is a request body (`limits.body.BodyLimit`)
and `ErrorOut` for every 422 (`errors.invalid_request`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Issue(BaseModel):
    """One reason a request did not fit its schema, as FastAPI reports it (never the input)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="where: `body`, `query`, `path`, then the field")
    msg: str
    type: str


class ErrorOut(BaseModel):
    """An error answer."""

    detail: str | list[Issue] = Field(
        description="what went wrong, in plain words; for a request that does not fit its "
        "schema (wrong types, missing fields), the list of problems"
    )
    code: str | None = Field(
        None,
        description="a machine-readable reason where the route has them (`not_found`, "
        "`rate_limited`, ... as in the WebSocket `error` frame)",
    )
    retry_after: float | None = Field(None, description="seconds to wait, with a 429 or 503")


DESCRIPTIONS: dict[int, str] = {
    400: "the request is malformed",
    401: "no valid access token (`WWW-Authenticate: Bearer`)",
    403: "the caller may not do this",
    404: "no such thing, or the caller may not see it",
    409: "it conflicts with the current state",
    410: "it existed but is gone",
    413: "the request body is too large",
    422: "the request breaks a rule: `detail` says which",
    429: "too many requests: wait `Retry-After` seconds",
    503: "busy or shutting down: retry after `Retry-After` seconds",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def errors(*codes: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status code (or `(code, description)`) with `ErrorOut`."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in codes:
        code, text = item if isinstance(item, tuple) else (item, DESCRIPTIONS[item])
        out[code] = {"model": ErrorOut, "description": text}
        if code in (429, 503):
            out[code]["headers"] = RETRY_AFTER
    return out


def _error_response(schemas: dict[str, Any], code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }
    assert "ErrorOut" in schemas, "no route uses errors(): ErrorOut is not in the document"
    return response


def _as_json_error(schemas: dict[str, Any], response: dict[str, Any]) -> None:
    """`ErrorOut` as JSON, whatever media type FastAPI filed it under (the route's own:
    `text/event-stream` for the stream) or model it gave (its own for a 422)."""
    content = response.setdefault("content", {})
    for media_type in list(content):
        if media_type == "text/event-stream" or "ValidationError" in str(content[media_type]):
            del content[media_type]
    content.update(_error_response(schemas, 422)["content"])


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the answers every route shares by construction (see the module's docstring)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                responses.setdefault("401", _error_response(schemas, 401))
            if "requestBody" in operation:  # a body FastAPI cannot parse; one too large
                responses.setdefault("400", _error_response(schemas, 400))
                responses.setdefault("413", _error_response(schemas, 413))
            for code, response in responses.items():
                if code == "422" or (code.startswith(("4", "5")) and "ErrorOut" in str(response)):
                    _as_json_error(schemas, response)
    # FastAPI's own 422 model is no longer referenced: ours is true for every 422.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document
