"""Outgoing webhooks of bots (admins): register, list, remove, enable, deliveries.

Errors are JSON `{"detail", "code"}` (docs/protocol.md, "Webhooks").
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from chat.api.audit import AuditDep
from chat.api.deps import Admin, SettingsDep, StoreDep
from chat.api.fields import RequestBody
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ
from chat.storage.records import user_ref
from chat.webhooks import addresses
from chat.webhooks.worker import WebhookWorker

router = APIRouter(prefix="/api/webhooks", tags=["admin"])
MAX_ROOMS = 50  # rooms one webhook sends every message of
MAX_PER_BOT = 10
REFRESH_SLACK = 0.5  # seconds a process may take to reload its index, past the interval
WebhookId = Annotated[int, Path(ge=1, le=MAX_SEQ)]
RoomName = Annotated[str, Field(min_length=1, max_length=200)]
ADMINS_ONLY = (403, "admins only")
NOT_FOUND = (404, "`not_found`: no such webhook")
ERRORS = errors(
    ADMINS_ONLY,
    (404, "`not_found`: no such bot or room"),
    (409, "`too_many`: the bot has 10 webhooks"),
    (422, "`bad_url`, `private_address`, `bad_rooms`, `bot_cannot_read`"),
)


def _worker(request: Request) -> WebhookWorker:
    worker: WebhookWorker = request.app.state.services.webhooks
    return worker


WorkerDep = Annotated[WebhookWorker, Depends(_worker)]


class WebhookIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    bot: str = Field(min_length=1, max_length=64, description="the bot's name")
    url: str = Field(min_length=1, max_length=addresses.MAX_URL_CHARS)
    events: list[Literal["mention", "dm", "message"]] = Field(min_length=1, max_length=3)
    rooms: list[RoomName] | None = Field(None, max_length=MAX_ROOMS)


def refused(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status)


@router.post("", status_code=201, responses=ERRORS)
async def register(
    body: WebhookIn,
    admin: Admin,
    store: StoreDep,
    worker: WorkerDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> Response:
    """Register a webhook for a bot; the answer holds its `secret`, shown this once."""
    bot = await store.user_by_name(body.bot)
    if bot is None or bot.role != "bot":
        return refused(404, "not_found", "no such bot")
    events = list(dict.fromkeys(body.events))  # each once, in the order given
    wants_rooms = "message" in events
    if wants_rooms and not body.rooms:
        return refused(422, "bad_rooms", "the message event needs rooms: the rooms to send")
    if body.rooms and not wants_rooms:
        return refused(422, "bad_rooms", "rooms are only for the message event")
    room_ids: list[int] = []
    bot_ref = user_ref(bot)
    for name in dict.fromkeys(body.rooms or []):
        if await store.room_for(name, admin.user) is None:
            return refused(404, "not_found", f"no such room: {name}")
        room = await store.room_for(name, bot_ref)
        if room is None:
            return refused(
                422, "bot_cannot_read", f"the bot cannot read {name}: add it as a member first"
            )
        room_ids.append(room.id)
    try:
        await addresses.check(body.url, allow_private=settings.webhooks_allow_private)
    except addresses.AddressRefused as exc:
        return refused(422, exc.code, exc.detail)
    if await worker.repository.count_for_bot(bot.id) >= MAX_PER_BOT:
        return refused(409, "too_many", f"a bot may have at most {MAX_PER_BOT} webhooks")
    secret = secrets.token_hex(32)
    webhook_id = await worker.repository.create(
        bot.id, body.url, events, room_ids, secret, admin.user.id
    )
    await worker.refresh()
    if settings.redis_url:  # other processes: answer once each has reloaded its index
        await asyncio.sleep(settings.webhook_refresh_interval + REFRESH_SLACK)
    await audit.record(
        admin,
        "webhook.create",
        "webhook",
        webhook_id,
        bot=bot.username,
        url=body.url,
        events=events,
    )
    views = await worker.repository.views(webhook_id)
    return JSONResponse(views[0].to_json() | {"secret": secret}, status_code=201)


@router.get("", responses=errors(ADMINS_ONLY))
async def list_webhooks(_: Admin, worker: WorkerDep) -> dict[str, Any]:
    """Every webhook with its state (`active`, `disabled`) and waiting deliveries."""
    return {"items": [view.to_json() for view in await worker.repository.views()]}


@router.delete("/{webhook_id}", status_code=204, responses=errors(ADMINS_ONLY, NOT_FOUND))
async def remove(
    webhook_id: WebhookId, admin: Admin, worker: WorkerDep, audit: AuditDep
) -> Response:
    """Remove a webhook: nothing more is sent, its waiting deliveries are dropped."""
    if not await worker.repository.delete(webhook_id):
        return refused(404, "not_found", "no such webhook")
    await worker.refresh()
    await audit.record(admin, "webhook.delete", "webhook", webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/enable", responses=errors(ADMINS_ONLY, NOT_FOUND))
async def enable(
    webhook_id: WebhookId, admin: Admin, worker: WorkerDep, audit: AuditDep
) -> Response:
    """Make a disabled webhook active again: its waiting deliveries are sent."""
    if not await worker.repository.enable(webhook_id):
        return refused(404, "not_found", "no such webhook")
    await worker.refresh()
    await audit.record(admin, "webhook.enable", "webhook", webhook_id)
    views = await worker.repository.views(webhook_id)
    return JSONResponse(views[0].to_json())


@router.get("/{webhook_id}/deliveries", responses=errors(ADMINS_ONLY, NOT_FOUND))
async def deliveries(
    webhook_id: WebhookId,
    _: Admin,
    worker: WorkerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> Response:
    """The webhook and its newest delivery attempts first (`before`: an attempt id)."""
    views = await worker.repository.views(webhook_id)
    if not views:
        return refused(404, "not_found", "no such webhook")
    items = await worker.repository.attempts(webhook_id, limit, before)
    return JSONResponse({"webhook": views[0].to_json(), "items": items})
