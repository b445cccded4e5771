"""Queries on users and their refresh and bot tokens."""

from __future__ import annotations

import time
import unicodedata
from functools import partial

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from chat.protocol import UserRef
from chat.storage.db import Database
from chat.storage.models import BotToken, RefreshToken, User
from chat.storage.records import TokenUser
from chat.storage.rules import Conflict, InputError, check_username, normalize_username
from chat.storage.ttl_cache import TTLCache

USER_CACHE_SECONDS = 2.0  # how long a token check trusts a user row it read
USER_CACHE_MAX = 100_000


class UserQueries:
    db: Database

    def __init__(self, db: Database) -> None:
        self.db = db
        self._users: TTLCache[int, TokenUser | None] = TTLCache(USER_CACHE_SECONDS, USER_CACHE_MAX)

    async def create_user(self, username: str, password_hash: str | None, role: str) -> User:
        name = check_username(username)  # as given: a new name is not folded
        key = name.casefold()
        try:
            async with self.db.write() as s:
                user = User(username=name, username_key=key, password_hash=password_hash, role=role)
                s.add(user)
                await s.flush()
                return user
        except IntegrityError:
            raise Conflict("that username is taken") from None

    async def user_by_id(self, user_id: int) -> User | None:
        async with self.db.read() as s:
            return await s.get(User, user_id)

    async def user_for_token(self, user_id: int, version: int) -> TokenUser | None:
        """The token-checking facts of a user, from a cache of `USER_CACHE_SECONDS`,
        for a token of `version`.

        Connecting checks the token's user twice; a storm of reconnects would
        otherwise read the same rows thousands of times a second. Changes made
        through this process (revocation, ban, password) drop the entry at once;
        a revocation or ban made by another process is seen here within the
        cache's lifetime (the sockets it must close are closed through the broker
        at once). A token newer than the cached row (signed in again on another
        process after a logout or password change) reads the row again, so it is
        never refused for a change it already carries.
        """
        load = partial(self._token_user, user_id)
        user = await self._users.get(user_id, load)
        if user is not None and user.token_version < version:
            self._users.drop(user_id)
            user = await self._users.get(user_id, load)
        return user

    async def _token_user(self, user_id: int) -> TokenUser | None:
        # Core, not an ORM session: a storm of handshakes makes this the connect path's read.
        query = select(
            User.username,
            User.role,
            or_(User.banned, User.disabled),
            User.token_version,
            User.display_name,
        ).where(User.id == user_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        name, role, banned, version, display_name = row
        ref = UserRef(id=user_id, name=name, role=role, display_name=display_name)  # type: ignore[arg-type]
        return TokenUser(ref, bool(banned), version)

    async def set_display_name(self, user_id: int, display_name: str | None) -> User | None:
        """Set (None: clear) the user's display name; the updated row, or None if gone.

        This process's token cache forgets the user at once (their next connection
        carries the name); other processes' within `USER_CACHE_SECONDS`.
        """
        async with self.db.write() as s:
            user = await s.get(User, user_id)
            if user is not None:
                user.display_name = display_name
        self._users.drop(user_id)
        return user

    async def search_users(self, prefix: str, limit: int) -> list[User]:
        """Users neither banned nor disabled whose username or display name starts with `prefix`,
        ignoring case, by username (display names: ASCII case only on SQLite)."""
        if "\x00" in prefix:  # no name holds NUL, and PostgreSQL cannot bind one
            return []
        pattern = _like_prefix(unicodedata.normalize("NFKC", prefix).casefold())
        shown = _like_prefix(unicodedata.normalize("NFC", prefix).lower())
        query = (
            select(User)
            .where(
                User.banned.is_(False),
                User.disabled.is_(False),
                or_(
                    User.username_key.like(pattern, escape="\\"),
                    func.lower(User.display_name).like(shown, escape="\\"),
                ),
            )
            .order_by(User.username_key)
            .limit(limit)
        )
        async with self.db.read() as s:
            return list((await s.execute(query)).scalars().all())

    async def user_by_name(self, username: str) -> User | None:
        try:
            _, key = normalize_username(username)
        except InputError:
            return None
        async with self.db.read() as s:
            return (await s.execute(select(User).where(User.username_key == key))).scalar()

    async def bump_token_version(self, user_id: int, *, banned: bool | None = None) -> None:
        """Kill every token of the user issued so far (and optionally (un)ban them)."""
        self._users.drop(user_id)
        values: dict[str, object] = {"token_version": User.token_version + 1}
        if banned is not None:
            values["banned"] = banned
        async with self.db.write() as s:
            await s.execute(update(User).where(User.id == user_id).values(**values))
            await s.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        self._users.drop(user_id)  # and again: a read may have raced the write

    async def set_password(self, user_id: int, password_hash: str) -> None:
        async with self.db.write() as s:
            await s.execute(
                update(User).where(User.id == user_id).values(password_hash=password_hash)
            )
        await self.bump_token_version(user_id)

    # --- refresh and bot tokens --------------------------------------------

    async def add_refresh_token(
        self, jti: str, user_id: int, family: str, expires_at: float
    ) -> None:
        async with self.db.write() as s:
            s.add(RefreshToken(jti=jti, user_id=user_id, family=family, expires_at=expires_at))

    async def use_refresh_token(self, jti: str) -> RefreshToken | None:
        """Mark a refresh token used. Reuse of a used one revokes its whole family."""
        now = time.time()
        async with self.db.write() as s:
            # Row lock on PostgreSQL: two racing refreshes cannot both use one token.
            token = await s.get(RefreshToken, jti, with_for_update=True)
            if token is None:
                return None
            if token.used_at is not None or token.revoked_at is not None:
                await s.execute(
                    update(RefreshToken)
                    .where(RefreshToken.family == token.family)
                    .values(revoked_at=now)
                )
                return None
            if token.expires_at < now:
                return None
            token.used_at = now
            return token

    async def add_bot_token(self, jti: str, user_id: int) -> None:
        async with self.db.write() as s:
            s.add(BotToken(jti=jti, user_id=user_id))

    async def bot_token_live(self, jti: str) -> bool:
        async with self.db.read() as s:
            token = await s.get(BotToken, jti)
            return token is not None and token.revoked_at is None

    async def revoke_bot(self, user_id: int) -> bool:
        """Revoke every token of a bot; False when there is no such bot."""
        user = await self.user_by_id(user_id)
        if user is None or user.role != "bot":
            return False
        async with self.db.write() as s:
            await s.execute(
                update(BotToken)
                .where(BotToken.user_id == user_id, BotToken.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        await self.bump_token_version(user_id)
        return True

    async def count_users(self) -> int:
        async with self.db.read() as s:
            return int(await s.scalar(select(func.count(User.id))) or 0)


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with `text` (its `%`, `_` and `\\` literal)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
