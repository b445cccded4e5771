"""The audit log: every admin action, stored once and listed newest first."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from chat.protocol import UserRef, iso
from chat.storage.db import Database
from chat.storage.models import AuditEntry

DETAIL_MAX_CHARS = 2000  # a detail is a few fields, never a body or a secret


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What an admin did: `action` (`user.ban`), to what (`target_kind`, `target`)."""

    actor: UserRef
    action: str
    target_kind: str | None = None
    target: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    address: str | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to list: every given field must match (`action` `user` matches
    every `user.*` action), newest first, with ids below `before`."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None
    before: int | None = None
    limit: int = 50


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "ts": iso(entry.created_at),
        "actor": {"id": entry.actor_id, "name": entry.actor_name},
        "action": entry.action,
        "target_kind": entry.target_kind,
        "target": entry.target,
        "detail": json.loads(entry.detail) if entry.detail else {},
        "address": entry.address,
    }


class AuditQueries:
    db: Database

    async def add_audit(self, event: AuditEvent) -> int:
        """Store one entry; returns its id."""
        detail = json.dumps(event.detail, ensure_ascii=False, default=str) if event.detail else None
        if detail is not None and len(detail) > DETAIL_MAX_CHARS:
            detail = json.dumps({"truncated": detail[:DETAIL_MAX_CHARS]})
        row = AuditEntry(
            created_at=time.time(),
            actor_id=event.actor.id,
            actor_name=event.actor.name[:32],
            action=event.action[:64],
            target_kind=event.target_kind,
            target=None if event.target is None else event.target[:200],
            detail=detail,
            address=None if event.address is None else event.address[:64],
        )
        async with self.db.write() as s:
            s.add(row)
            await s.flush()
            return row.id

    async def audit_entries(self, f: AuditFilter) -> list[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(f.limit)
        if f.actor is not None:
            query = query.where(AuditEntry.actor_name == f.actor)
        if f.action is not None:
            query = query.where(
                AuditEntry.action == f.action
                if "." in f.action
                else AuditEntry.action.startswith(f.action + ".", autoescape=True)
            )
        if f.target is not None:
            query = query.where(AuditEntry.target == f.target)
        if f.since is not None:
            query = query.where(AuditEntry.created_at >= f.since)
        if f.until is not None:
            query = query.where(AuditEntry.created_at < f.until)
        if f.before is not None:
            query = query.where(AuditEntry.id < f.before)
        async with self.db.read() as s:
            return list((await s.execute(query)).scalars().all())
