"""Admin endpoints: bot tokens, kick, ban, presence."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status

from chat.api.deps import AccountsDep, Admin, HubDep, StoreDep
from chat.api.fields import RequestBody, Username
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ
from chat.protocol import CloseCode
from chat.storage.rules import Conflict

router = APIRouter(prefix="/api", tags=["admin"])
ADMINS_ONLY = (403, "admins only")
NO_SUCH_USER = (404, "no such user")


class BotIn(RequestBody):
    name: Username


@router.post(
    "/bots",
    status_code=status.HTTP_201_CREATED,
    responses=errors(ADMINS_ONLY, (409, "that username is taken"), 422),
)
async def create_bot(body: BotIn, _: Admin, accounts: AccountsDep) -> dict[str, Any]:
    """Create a bot account and return its long-lived token (shown once)."""
    try:
        user, token = await accounts.create_bot(body.name)
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return {"id": user.id, "name": user.username, "role": "bot", "token": token}


@router.delete(
    "/bots/{bot_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(ADMINS_ONLY, (404, "no such bot")),
)
async def revoke_bot(
    bot_id: Annotated[int, Path(ge=1, le=MAX_SEQ)], _: Admin, hub: HubDep, store: StoreDep
) -> None:
    """Revoke every token of a bot and close its sockets."""
    if not await store.revoke_bot(bot_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such bot")
    await hub.close_user(bot_id, CloseCode.REVOKED, "bot token revoked")


async def _target(store: StoreDep, username: str) -> int:
    user = await store.user_by_name(username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
    return user.id


@router.post(
    "/admin/users/{username}/kick",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(ADMINS_ONLY, NO_SUCH_USER),
)
async def kick(username: str, _: Admin, store: StoreDep, hub: HubDep) -> None:
    """Close every session of a user: their tokens are revoked, they must sign in again."""
    user_id = await _target(store, username)
    await store.bump_token_version(user_id)
    await hub.close_user(user_id, CloseCode.REVOKED, "kicked by an admin")


@router.post(
    "/admin/users/{username}/ban",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(ADMINS_ONLY, NO_SUCH_USER, (409, "you cannot ban yourself")),
)
async def ban(username: str, admin: Admin, store: StoreDep, hub: HubDep) -> None:
    """Revoke a user's tokens, close their sockets and refuse new sign-ins."""
    user_id = await _target(store, username)
    if user_id == admin.user.id:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot ban yourself")
    await store.bump_token_version(user_id, banned=True)
    await hub.close_user(user_id, CloseCode.REVOKED, "banned by an admin")


@router.post(
    "/admin/users/{username}/unban",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(ADMINS_ONLY, NO_SUCH_USER),
)
async def unban(username: str, _: Admin, store: StoreDep) -> None:
    """Let a banned user sign in again."""
    user_id = await _target(store, username)
    await store.bump_token_version(user_id, banned=False)


@router.get("/admin/presence", responses=errors(ADMINS_ONLY))
async def presence(_: Admin, hub: HubDep) -> dict[str, Any]:
    """Who is online in which room (on every process when presence is shared in Redis)."""
    snapshot = await hub.presence_snapshot()
    return {
        "rooms": [
            {"room": room, "users": [u.model_dump() for u in users]}
            for room, users in sorted(snapshot.items())
        ]
    }
