"""The alert list: `GET /api/alerts` (admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from chat.api.deps import Admin, AlertsDep
from chat.api.responses import errors
from chat.api.rooms import MAX_SEQ

# Tagged as it was beside the task endpoints, so the OpenAPI document does not change.
router = APIRouter(prefix="/api", tags=["tasks"])


@router.get("/alerts", tags=["admin"], responses=errors((403, "admins only")))
async def list_alerts(
    _: Admin,
    alerts: AlertsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_SEQ, description="an alert id: older ones only")
    ] = None,
) -> dict[str, Any]:
    """Stored alerts, newest first (admins)."""
    recent = await alerts.recent(limit, before)
    return {"items": [a.to_json() for a in recent]}
