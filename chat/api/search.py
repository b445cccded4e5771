"""Full-text search over HTTP: `GET /api/search?q=TEXT&room=R&limit=N&offset=K`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse

from chat.api.deps import Caller, StoreDep
from chat.api.responses import errors
from chat.api.rooms import NOT_FOUND
from chat.storage.rules import InputError
from chat.storage.search import Order, SearchTooSlow
from chat.storage.search_query import MAX_QUERY_CHARS, parse_query

router = APIRouter(prefix="/api", tags=["search"])
PAGE_MAX = 50
OFFSET_MAX = 1000  # deeper pages of a ranked search cost more than anyone reads


@router.get(
    "/search",
    responses=errors(
        (404, "`room` does not exist or the caller may not read it"),
        (422, "an empty query, or one too long, or without any word"),
        (503, "`search_too_slow`: the search ran too long; add words or a room"),
    ),
)
async def search(
    caller: Caller,
    store: StoreDep,
    # Checked by `parse_query`, whose 422 says what the rule is; the schema says the same.
    q: Annotated[
        str,
        Query(
            max_length=20_000,
            description='words and "phrases", all required: at least one word, at most '
            f"{MAX_QUERY_CHARS} characters and 16 terms",
            json_schema_extra={"minLength": 1, "maxLength": MAX_QUERY_CHARS, "pattern": r"[^\W_]"},
        ),
    ],
    room: Annotated[str | None, Query(max_length=1000)] = None,
    order: Order = "rank",
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 20,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> Any:
    """Messages the caller can read that contain every word and phrase of `q` (see
    docs/protocol.md for the query language): best match first (`order=newest`: newest
    first), `limit` per page; `next_offset` pages on (null: no more). Each item is the
    message as history shows it, with `snippet`: segments `{text, match}`."""
    try:
        query = parse_query(q)
    except InputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    room_id = None
    if room is not None:
        view = await store.room_for(room, caller.user)
        # Direct messages are searched by their two members only, admins included.
        if view is None or (view.is_dm and not view.member):
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
        room_id = view.id
    try:
        hits = await store.search(
            caller.user, query, room_id=room_id, order=order, limit=limit + 1, offset=offset
        )
    except SearchTooSlow:
        return JSONResponse(
            {
                "detail": "the search ran too long: add words, a phrase or a room",
                "code": "search_too_slow",
            },
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    more = len(hits) > limit and offset + limit <= OFFSET_MAX
    items = [{**h.frame.model_dump(), "snippet": h.snippet} for h in hits[:limit]]
    return {"items": items, "next_offset": offset + limit if more else None}
