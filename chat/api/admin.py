"""Admin endpoints: bot accounts and their tokens, and who is online."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel

from chat.api.audit import AuditDep
from chat.api.deps import AccountsDep, Admin, HubDep, StoreDep
from chat.api.fields import RequestBody, Username
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ
from chat.protocol import CloseCode, UserRef, iso
from chat.storage.rules import Conflict

router = APIRouter(prefix="/api", tags=["admin"])
BotId = Annotated[int, Path(ge=1, le=MAX_SEQ)]
NO_SUCH_BOT = "no such bot"
ADMINS_ONLY = (403, "admins only")


class BotIn(RequestBody):
    name: Username


class BotTokenOut(BaseModel):
    """A bot and its new token: the only time the token is shown."""

    id: int
    name: str
    role: Literal["bot"] = "bot"
    token: str


class BotOut(BaseModel):
    id: int
    name: str
    created_at: str
    state: Literal["active", "revoked"]  # revoked: no live token (rotate issues one)
    live_tokens: int
    last_issued_at: str | None


class BotList(BaseModel):
    items: list[BotOut]


class RoomPresence(BaseModel):
    room: str
    users: list[UserRef]


class PresenceOut(BaseModel):
    rooms: list[RoomPresence]


@router.get("/bots", response_model=BotList, responses=errors(ADMINS_ONLY))
async def list_bots(_: Admin, store: StoreDep) -> BotList:
    """Every bot, by name, with whether it holds a live token (never the token)."""
    return BotList(
        items=[
            BotOut(
                id=b.id,
                name=b.name,
                created_at=iso(b.created_at),
                state="active" if b.live_tokens else "revoked",
                live_tokens=b.live_tokens,
                last_issued_at=iso(b.last_issued_at) if b.last_issued_at else None,
            )
            for b in await store.bots()
        ]
    )


@router.post(
    "/bots",
    status_code=status.HTTP_201_CREATED,
    response_model=BotTokenOut,
    responses=errors(ADMINS_ONLY, (409, "that username is taken"), 422),
)
async def create_bot(
    body: BotIn, admin: Admin, accounts: AccountsDep, audit: AuditDep
) -> BotTokenOut:
    """Create a bot account and return its long-lived token (shown once)."""
    try:
        user, token = await accounts.create_bot(body.name)
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    await audit.record(admin, "bot.create", "bot", user.username, id=user.id)
    return BotTokenOut(id=user.id, name=user.username, token=token)


@router.post(
    "/bots/{bot_id}/rotate",
    response_model=BotTokenOut,
    responses=errors(ADMINS_ONLY, (404, NO_SUCH_BOT)),
)
async def rotate_bot(
    bot_id: BotId, admin: Admin, accounts: AccountsDep, hub: HubDep, audit: AuditDep
) -> BotTokenOut:
    """Revoke every token of the bot, close its sockets (4003) and issue a new token
    (shown once). Works on a revoked bot too: it comes back with the new token."""
    token = await accounts.rotate_bot(bot_id)
    bot = await accounts.store.user_by_id(bot_id)
    if token is None or bot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_SUCH_BOT)
    await hub.close_user(bot_id, CloseCode.REVOKED, "bot token rotated")
    await audit.record(admin, "bot.rotate", "bot", bot.username, id=bot_id)
    return BotTokenOut(id=bot.id, name=bot.username, token=token)


@router.delete(
    "/bots/{bot_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(ADMINS_ONLY, (404, NO_SUCH_BOT)),
)
async def revoke_bot(
    bot_id: BotId, admin: Admin, hub: HubDep, store: StoreDep, audit: AuditDep
) -> None:
    """Revoke every token of a bot and close its sockets."""
    if not await store.revoke_bot(bot_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_SUCH_BOT)
    await hub.close_user(bot_id, CloseCode.REVOKED, "bot token revoked")
    bot = await store.user_by_id(bot_id)
    await audit.record(admin, "bot.revoke", "bot", bot.username if bot else bot_id, id=bot_id)


@router.get("/admin/presence", response_model=PresenceOut, responses=errors(ADMINS_ONLY))
async def presence(_: Admin, hub: HubDep) -> PresenceOut:
    """Who is online in which room (on every process when presence is shared in Redis).

    The console gets the same live over its WebSocket (`watch` `presence`)."""
    snapshot = await hub.presence_snapshot()
    return PresenceOut(
        rooms=[RoomPresence(room=room, users=users) for room, users in sorted(snapshot.items())]
    )
