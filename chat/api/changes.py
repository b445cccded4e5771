"""A message's change history, for the room's owner and admins (moderation)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from chat.api.deps import Caller, StoreDep
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ, readable_room

router = APIRouter(prefix="/api/rooms", tags=["rooms"])
HISTORY_PAGE_MAX = 500  # changes per answer: a message can be reacted to without end


@router.get(
    "/{room:path}/messages/{seq}/history",
    responses=errors(
        (403, "the caller is neither the room's owner nor an admin"),
        (404, "no such room (or not readable), or no such message"),
    ),
)
async def message_history(
    room: str,
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
    caller: Caller,
    store: StoreDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE_MAX)] = HISTORY_PAGE_MAX,
) -> dict[str, Any]:
    """Every edit, delete and reaction of the message, oldest first: who, what, when,
    the text before and after. The only place a deleted message's text is kept.
    Those with a version after `after`, at most `limit` (page on with the last version)."""
    view = await readable_room(store, caller, room)
    if not view.managed_by(caller.user):  # a DM's opener is no owner: admins only there
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the room's owner or an admin")
    items = await store.message_history(view, seq, after=after, limit=limit)
    if items is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {seq} in this room")
    return {"room": view.name, "seq": seq, "items": items}
