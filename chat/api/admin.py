"""Admin endpoints: bot tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from chat.api.deps import Admin, ServicesDep
from chat.protocol import CloseCode
from chat.store import Conflict, InputError

router = APIRouter(prefix="/api", tags=["admin"])


class BotIn(BaseModel):
    name: str = Field(max_length=64)


@router.post("/bots", status_code=status.HTTP_201_CREATED)
async def create_bot(body: BotIn, _: Admin, services: ServicesDep) -> dict[str, Any]:
    """Create a bot account and return its long-lived token (shown once)."""
    try:
        user, token = await services.accounts.create_bot(body.name)
    except InputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return {"id": user.id, "name": user.username, "role": "bot", "token": token}


@router.delete("/bots/{bot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_bot(bot_id: int, _: Admin, services: ServicesDep) -> None:
    """Revoke every token of a bot and close its sockets."""
    if not await services.store.revoke_bot(bot_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such bot")
    await services.hub.close_user(bot_id, CloseCode.REVOKED, "bot token revoked")
