"""The user directory for admins: list and find accounts, change a role, disable, bots."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select, update

from chat.storage.db import Database
from chat.storage.models import BotToken, User

UserState = Literal["active", "banned", "disabled"]


@dataclass(frozen=True, slots=True)
class BotView:
    id: int
    name: str
    created_at: float
    live_tokens: int  # 0: revoked (rotate issues a new one)
    last_issued_at: float | None


class DirectoryQueries:
    db: Database

    async def list_users(
        self,
        *,
        prefix: str | None,
        role: str | None,
        state: UserState | None,
        after: str | None,
        limit: int,
    ) -> list[User]:
        """Accounts by name (the case-folded key), after the key `after`, at most `limit`.

        `prefix` matches the start of the username, ignoring case; `state` picks
        active (neither banned nor disabled), banned or disabled accounts.
        """
        query = select(User).order_by(User.username_key).limit(limit)
        if prefix:
            key = unicodedata.normalize("NFKC", prefix).casefold()
            query = query.where(User.username_key.startswith(key, autoescape=True))
        if role is not None:
            query = query.where(User.role == role)
        if state == "active":
            query = query.where(User.banned.is_(False), User.disabled.is_(False))
        elif state == "banned":
            query = query.where(User.banned.is_(True))
        elif state == "disabled":
            query = query.where(User.disabled.is_(True))
        if after is not None:
            query = query.where(User.username_key > after)
        async with self.db.read() as s:
            return list((await s.execute(query)).scalars().all())

    async def set_account(
        self, user_id: int, *, role: str | None = None, disabled: bool | None = None
    ) -> None:
        """Change the role and/or the disabled flag; the caller revokes the tokens."""
        values: dict[str, object] = {}
        if role is not None:
            values["role"] = role
        if disabled is not None:
            values["disabled"] = disabled
        if values:
            async with self.db.write() as s:
                await s.execute(update(User).where(User.id == user_id).values(**values))

    async def bots(self) -> list[BotView]:
        """Every bot with how many of its tokens are live, by name."""
        live = func.count(BotToken.jti).filter(BotToken.revoked_at.is_(None))
        query = (
            select(User.id, User.username, User.created_at, live, func.max(BotToken.created_at))
            .outerjoin(BotToken, BotToken.user_id == User.id)
            .where(User.role == "bot")
            .group_by(User.id, User.username, User.created_at, User.username_key)
            .order_by(User.username_key)
        )
        async with self.db.read() as s:
            rows = (await s.execute(query)).all()
        return [BotView(r[0], r[1], r[2], int(r[3] or 0), r[4]) for r in rows]
