"""People over HTTP: the caller's profile, finding users, direct-message rooms."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from chat.api.deps import Caller, HubDep, RoomCreationsDep, SettingsDep, StoreDep
from chat.api.fields import DisplayName, RequestBody
from chat.api.responses import errors
from chat.storage.models import User
from chat.storage.records import user_ref
from chat.storage.rules import Conflict

router = APIRouter(prefix="/api", tags=["people"])
SEARCH_MAX = 20  # users per search answer
QUERY_MAX_CHARS = 64
NO_SUCH_USER = "no such user"


class MeOut(BaseModel):
    id: int
    username: str
    name: str
    role: str
    display_name: str | None


class ProfileIn(RequestBody):
    # Required, null allowed: null clears the display name.
    display_name: DisplayName | None


class DmIn(RequestBody):
    username: str = Field(max_length=64)


def _me(user: User) -> MeOut:
    return MeOut(
        id=user.id,
        username=user.username,
        name=user.username,
        role=user.role,
        display_name=user.display_name,
    )


def _person(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.username,
        "display_name": user.display_name,
        "role": user.role,
    }


@router.get("/me", response_model=MeOut, responses=errors((404, "the account was deleted")))
async def me(caller: Caller, store: StoreDep) -> MeOut:
    """The authenticated caller, read from the database (so a new display name shows)."""
    user = await store.user_by_id(caller.user.id)
    if user is None:  # deleted since the token was checked
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_SUCH_USER)
    return _me(user)


@router.patch("/me", response_model=MeOut, responses=errors((404, "the account was deleted"), 422))
async def update_me(body: ProfileIn, caller: Caller, store: StoreDep, hub: HubDep) -> MeOut:
    """Set the caller's display name (1 to 64 printable characters; null clears it).

    User objects carry it from then on: the caller's open connections on every
    process for the frames they send next, new connections and HTTP answers.
    """
    user = await store.set_display_name(caller.user.id, body.display_name)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_SUCH_USER)
    await hub.update_user(user_ref(user))
    return _me(user)


@router.get("/users", responses=errors(422))
async def search_users(
    _: Caller,
    store: StoreDep,
    q: Annotated[str, Query(min_length=1, max_length=QUERY_MAX_CHARS)],
    limit: Annotated[int, Query(ge=1, le=SEARCH_MAX)] = SEARCH_MAX,
) -> dict[str, Any]:
    """Users whose username or display name starts with `q` (ignoring case), by
    username, at most 20; banned and disabled users are left out."""
    users = await store.search_users(q, limit)
    return {"items": [_person(u) for u in users]}


@router.post(
    "/dms",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "the DM existed: the same room"},
        **errors(
            (404, "no such user (or banned, or disabled)"),
            (409, "a DM with yourself"),
            (429, "too many rooms and DMs created recently (Retry-After)"),
        ),
    },
)
async def open_dm(
    body: DmIn,
    response: Response,
    caller: Caller,
    store: StoreDep,
    room_creations: RoomCreationsDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """The direct-message room of the caller and `username`: 201 when this request
    created it, 200 when it existed (one room per pair, however concurrently asked).

    Creating one counts against the room-creation window (`room_creations_per_user`
    per `room_creation_window`, admins exempt); opening an existing one does not.
    """
    peer = await store.user_by_name(body.username)
    if peer is None or peer.locked:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_SUCH_USER)
    if peer.id == caller.user.id:
        # 409, not 422: the request is well formed, it is who asks that conflicts with it.
        raise HTTPException(status.HTTP_409_CONFLICT, "a direct conversation needs another person")
    limited = caller.user.role != "admin"
    if limited and await store.dm_name(caller.user.id, peer.id) is None:
        wait = room_creations.blocked(caller.user.id)
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"at most {settings.room_creations_per_user} new rooms and conversations per "
                f"{settings.room_creation_window:g} s; try again later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
    try:
        view, created = await store.open_dm(caller.user, peer.id)
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if created and limited:
        room_creations.fail(caller.user.id)  # counts one created room
    if not created:
        response.status_code = status.HTTP_200_OK
    return view.to_json()
