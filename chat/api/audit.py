"""The audit log over HTTP: `AuditDep` records an admin action, `GET /api/admin/audit`
lists them.

Each admin route records its action after it took effect, with the caller, the
target, a few facts (never a secret: no token, no password) and the client
address. A failure to store the entry is logged, not turned into an error for an
action already done.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from chat.api.auth import client_address
from chat.api.deps import Admin, StoreDep
from chat.api.fields import IsoDateTime
from chat.api.responses import errors
from chat.auth.accounts import Principal
from chat.storage.audit import AuditEvent, AuditFilter, entry_json
from chat.storage.store import Store

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/admin", tags=["admin"])
PAGE_MAX = 200
ID_MAX = 2**63 - 1  # the database's integer range


class AuditTrail:
    """Records the actions of one request's caller, with the request's client address."""

    def __init__(self, store: Store, address: str | None) -> None:
        self.store = store
        self.address = address

    async def record(
        self,
        caller: Principal,
        action: str,
        target_kind: str | None = None,
        target: str | int | None = None,
        **detail: Any,
    ) -> None:
        """Store `action` by `caller` (an admin) on `target_kind:target`."""
        event = AuditEvent(
            caller.user,
            action,
            target_kind,
            None if target is None else str(target),
            {k: v for k, v in detail.items() if v is not None},
            self.address,
        )
        try:
            await self.store.add_audit(event)
        except Exception:  # the action is done; losing its record must be seen in the log
            log.exception("storing the audit entry %s by %s failed", action, caller.user.name)

    async def by_admin(
        self,
        caller: Principal,
        action: str,
        target_kind: str | None = None,
        target: str | int | None = None,
        **detail: Any,
    ) -> None:
        """`record`, for routes open to everyone: only when the caller is an admin."""
        if caller.user.role == "admin":
            await self.record(caller, action, target_kind, target, **detail)


def _trail(request: Request, store: StoreDep) -> AuditTrail:
    return AuditTrail(store, client_address(request))


AuditDep = Annotated[AuditTrail, Depends(_trail)]


class AuditActor(BaseModel):
    id: int | None
    name: str


class AuditEntryOut(BaseModel):
    id: int
    ts: str
    actor: AuditActor
    action: str
    target_kind: str | None
    target: str | None
    detail: dict[str, Any]
    address: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_before: int | None  # pass as `before` for the next (older) page; null: no more


def _epoch(moment: datetime | None) -> float | None:
    """Seconds since the epoch; a time without a zone is UTC."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@router.get("/audit", response_model=AuditPage, responses=errors((403, "admins only")))
async def list_audit(
    _: Admin,
    store: StoreDep,
    actor: Annotated[str | None, Query(max_length=32, description="the admin's name")] = None,
    action: Annotated[
        str | None,
        Query(max_length=64, description="`user.ban`, or `user` for every `user.*`"),
    ] = None,
    target: Annotated[str | None, Query(max_length=200, description="a name or id")] = None,
    since: Annotated[IsoDateTime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[IsoDateTime | None, Query(description="ISO 8601, exclusive")] = None,
    before: Annotated[int | None, Query(ge=1, le=ID_MAX, description="an entry id")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
) -> AuditPage:
    """Admin actions, newest first, filtered; page on with `before=next_before`."""
    rows = await store.audit_entries(
        AuditFilter(
            actor=actor or None,
            action=action or None,
            target=target or None,
            since=_epoch(since),
            until=_epoch(until),
            before=before,
            limit=limit,
        )
    )
    items = [AuditEntryOut.model_validate(entry_json(row)) for row in rows]
    return AuditPage(items=items, next_before=rows[-1].id if len(rows) == limit else None)
