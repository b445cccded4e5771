"""Leases in the database: one process of the site runs a scheduled job per period.

`take(name, holder, seconds)` succeeds for one caller until the lease runs out, however
many processes (chat processes, workers, hosts) ask: the database settles it with one
conditional UPDATE (or the INSERT of the first lease of that name).
"""

from __future__ import annotations

import time

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from chat.storage.db import Database
from chat.storage.models import Lease


async def take(db: Database, name: str, holder: str, seconds: float) -> bool:
    """Hold lease `name` for `seconds` from now, unless another holder has it."""
    now = time.time()
    async with db.write() as s:
        taken = await s.execute(
            update(Lease)
            .where(Lease.name == name, or_(Lease.until < now, Lease.holder == holder))
            .values(holder=holder, until=now + seconds)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return True
        if await s.get(Lease, name) is not None:
            return False  # someone else holds it
    try:
        async with db.write() as s:
            s.add(Lease(name=name, holder=holder, until=now + seconds))
    except IntegrityError:
        return False  # another process made the first lease just now
    return True
