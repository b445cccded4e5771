"""Rooms over HTTP: list, create, settings (topic, archive), members, read history."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from chat.api.audit import AuditDep
from chat.api.deps import Caller, HubDep, RoomCreationsDep, SettingsDep, StoreDep
from chat.api.fields import RequestBody, RoomName, Topic
from chat.api.responses import errors
from chat.config import Settings
from chat.protocol import RemovedFrame, RoomFrame, encode
from chat.storage.records import RoomView
from chat.storage.rooms import MEMBERS_PAGE_MAX
from chat.storage.rules import Conflict, InputError, normalize_room_name, room_name_pattern

router = APIRouter(prefix="/api/rooms", tags=["rooms"])
NOT_FOUND = "no such room, or you may not read it"
MANAGERS_ONLY = "only the room's owner or an admin"
DM_FIXED = "a direct conversation has exactly its two members: nobody joins, leaves or is removed"
# The largest number an HTTP route takes: within the database's integer range (larger
# would be a 500), and exact as a JSON number (a double), so the schema's `maximum`
# means the same to every client and validator.
MAX_SEQ = 2**53 - 1


class RoomIn(RequestBody):
    name: RoomName
    private: bool = False


class MemberIn(RequestBody):
    username: str = Field(max_length=64)


class RoomSettingsIn(RequestBody):
    # At least one of the two (the route says so in its 422 too).
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["topic"]}, {"required": ["archived"]}]}
    )

    topic: Topic | None = None
    # true or false when given, never null: the default alone is None.
    archived: bool = None  # type: ignore[assignment]


class RoomOnly(Convertor[str]):
    """`{room:room}`: a room name (slashes and all) that does not end the way a room's
    own resources do, so `PATCH .../members` is a 405 and not a room named `x/members`."""

    regex = (
        r"(?:(?!/(?:members(?:/[^/]+)?|messages(?:/[^/]+(?:/history|/reactions/[^/]+)?)?"
        r"|notify|read|typing)$).)+"
    )

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("room", RoomOnly())


def with_settings(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The OpenAPI document with the room-name rule of these settings."""
    schemas = document.get("components", {}).get("schemas", {})
    name = schemas.get("RoomIn", {}).get("properties", {}).get("name")
    if name is not None:
        name["pattern"] = room_name_pattern(settings.max_room_name_chars)
    return document


async def readable_room(store: StoreDep, caller: Caller, room: str) -> RoomView:
    """The room, or 404 alike for a missing room and one the caller may not read."""
    view = await store.room_for(room, caller.user)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return view


@router.get("", responses=errors())
async def list_rooms(caller: Caller, store: StoreDep) -> dict[str, Any]:
    """Rooms the caller can read: every public room, their private ones and their DMs.

    Each item is `RoomView.to_json()`; per-room fields of other concerns merge into it.
    """
    rooms = await store.rooms_for(caller.user)
    mentions = await store.mention_counts(caller.user.id)  # unread mentions per room id
    # Unread is counted in the rooms the caller belongs to (public rooms never joined: 0).
    unread = await store.unread_counts(caller.user.id, [r.id for r in rooms if r.member])
    items = [
        {**r.to_json(), "unread": unread.get(r.id, 0), "mentions": mentions.get(r.id, 0)}
        for r in rooms
    ]
    return {"items": items}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=errors(
        (403, "the caller owns `max_rooms_per_user` rooms already"),
        (409, "a room with that name exists"),
        422,
        (429, "too many rooms created recently (Retry-After)"),
    ),
)
async def create_room(
    body: RoomIn,
    caller: Caller,
    room_creations: RoomCreationsDep,
    settings: SettingsDep,
    store: StoreDep,
) -> dict[str, Any]:
    """Create a room owned by the caller (409 when the name is taken).

    Non-admins may create `room_creations_per_user` rooms per `room_creation_window`
    (429 with `Retry-After`) and own at most `max_rooms_per_user` (403).
    """
    settings = settings
    limited = caller.user.role != "admin"
    if limited:
        wait = room_creations.blocked(caller.user.id)
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"at most {settings.room_creations_per_user} new rooms per "
                f"{settings.room_creation_window:g} s; try again later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if await store.rooms_owned(caller.user.id) >= settings.max_rooms_per_user:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"you own {settings.max_rooms_per_user} rooms, the most allowed per user",
            )
    try:
        name = normalize_room_name(body.name, settings.max_room_name_chars)
        view = await store.create_room(name, body.private, caller.user)
    except InputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if limited:
        room_creations.fail(caller.user.id)  # counts one created room
    return view.to_json()


@router.post(
    "/{room:path}/members",
    status_code=status.HTTP_201_CREATED,
    responses=errors(
        (403, "not the owner or an admin, or a DM"),
        (404, "no such room (or not readable), or no such user"),
    ),
)
async def add_member(
    room: str, body: MemberIn, caller: Caller, store: StoreDep, audit: AuditDep
) -> dict[str, Any]:
    """Owner or admin: let a user into a private room (never into a DM: 403)."""
    view = await readable_room(store, caller, room)
    if view.is_dm:
        raise HTTPException(status.HTTP_403_FORBIDDEN, DM_FIXED)
    if not view.managed_by(caller.user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, MANAGERS_ONLY)
    user = await store.user_by_name(body.username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
    await store.add_member(view.id, user.id)
    await audit.by_admin(caller, "room.member_add", "room", view.name, user=user.username)
    return {"room": view.name, "user": {"id": user.id, "name": user.username, "role": user.role}}


@router.get("/{room:path}/members", responses=errors(404))
async def members(
    room: str,
    caller: Caller,
    store: StoreDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MEMBERS_PAGE_MAX)] = MEMBERS_PAGE_MAX,
) -> dict[str, Any]:
    """The room's members, by username (page on with `after` = the last name).

    Members are the owner, the users added, and, in public rooms, everyone who
    joined it (a join records it); a DM's two people.
    """
    view = await readable_room(store, caller, room)
    users = await store.members(view.id, after=after, limit=limit)
    return {"items": [u.model_dump() for u in users]}


@router.delete(
    "/{room:path}/members/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(
        (403, "not the owner or an admin, or a DM"),
        (404, "no such room (or not readable), user or membership"),
        (409, "the owner cannot leave or be removed"),
    ),
)
async def remove_member(
    room: str, username: str, caller: Caller, store: StoreDep, hub: HubDep, audit: AuditDep
) -> None:
    """The owner or an admin removes a member; anyone removes themself (leaving).

    Their connections, on every process, get `removed` and nothing more of the room;
    a private room is then `not_found` for them. A public room they may join again.
    """
    view = await readable_room(store, caller, room)
    if view.is_dm:
        raise HTTPException(status.HTTP_403_FORBIDDEN, DM_FIXED)
    user = await store.user_by_name(username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
    if user.id != caller.user.id and not view.managed_by(caller.user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, MANAGERS_ONLY)
    if user.id == view.owner.id:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "the owner cannot leave or be removed from their room"
        )
    if not await store.remove_member(view.id, user.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{user.username} is not a member")
    await hub.remove_user_from_room(user.id, view.name, encode(RemovedFrame(room=view.name)))
    if user.id != caller.user.id:  # leaving is nobody's admin action
        await audit.by_admin(caller, "room.member_remove", "room", view.name, user=user.username)


@router.patch(
    "/{room:room}",
    responses=errors((403, "not the owner or an admin"), 404, (422, "a rule, or nothing to set")),
)
async def update_room(
    room: str, body: RoomSettingsIn, caller: Caller, store: StoreDep, hub: HubDep, audit: AuditDep
) -> dict[str, Any]:
    """Owner or admin (a DM: admins only): set `topic` (empty or null clears it) and/or
    `archived`. Every connection joined to the room gets a `room` frame."""
    view = await readable_room(store, caller, room)
    if not view.managed_by(caller.user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, MANAGERS_ONLY)
    given = body.model_fields_set & {"topic", "archived"}
    if not given or (given == {"archived"} and body.archived is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "give topic and/or archived (true or false)"
        )
    await store.set_room_settings(
        view.id, topic=body.topic or None, archived=body.archived, set_topic="topic" in given
    )
    fresh = await readable_room(store, caller, room)
    frame = RoomFrame(room=fresh.name, topic=fresh.topic, archived=fresh.archived)
    await hub.publish_room_settings(fresh.name, encode(frame), archived=fresh.archived)
    changed = {k: getattr(fresh, k) for k in given}
    await audit.by_admin(caller, "room.update", "room", fresh.name, **changed)
    return fresh.to_json()


@router.get("/{room:path}/messages", responses=errors(404))
async def history(
    room: str,
    caller: Caller,
    store: StoreDep,
    settings: SettingsDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SEQ)] = 50,
) -> dict[str, Any]:
    """Newest first before `before` (exclusive); with `after`, oldest first after it;
    with both, oldest first between them."""
    view = await readable_room(store, caller, room)
    limit = min(limit, settings.history_page_max)
    items = await store.messages(view, before=before, after=after, limit=limit)
    return {"items": [m.model_dump() for m in items]}
