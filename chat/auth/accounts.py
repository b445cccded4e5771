"""Accounts and sessions: register, log in, refresh, log out, bots, token checks."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

from chat.auth.passwords import PasswordService
from chat.auth.tokens import Claims, TokenError, TokenService, TokenType
from chat.protocol import UserRef
from chat.storage.models import User
from chat.storage.rules import InputError
from chat.storage.store import Store

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256
ACCESS_OR_BOT: frozenset[TokenType] = frozenset({"access", "bot"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: who, and the token that proved it."""

    user: UserRef
    claims: Claims


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def to_json(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


def check_password(password: str) -> str:
    """The password, if it has `MIN_PASSWORD_CHARS` to `MAX_PASSWORD_CHARS` characters.
    Raises `InputError`."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InputError(
            f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )
    return password


class Accounts:
    """Everything that turns credentials into tokens and tokens into users."""

    def __init__(self, store: Store, tokens: TokenService, passwords: PasswordService) -> None:
        self.store = store
        self.tokens = tokens
        self.passwords = passwords

    async def authenticate(
        self, token: str, allowed: frozenset[TokenType] = ACCESS_OR_BOT
    ) -> Principal:
        """Check a token against its signature, claims, user, ban and revocation."""
        return await self.confirm(self.tokens.decode(token, allowed))

    async def confirm(self, claims: Claims) -> Principal:
        """Check claims read from a token (now or earlier: a stream ticket's) against
        their expiry, user, ban and revocation."""
        if claims.expires_at <= time.time():
            raise TokenError("token has expired")
        user = await self.store.user_for_token(claims.user_id, claims.version)
        if user is None or user.banned or user.token_version != claims.version:
            raise TokenError("token has been revoked")
        if claims.type == "bot" and not await self.store.bot_token_live(claims.jti):
            raise TokenError("bot token has been revoked")
        if (claims.type == "bot") != (user.ref.role == "bot"):
            raise TokenError("wrong kind of token for this account")
        return Principal(user.ref, claims)

    async def register(self, username: str, password: str, role: str = "user") -> User:
        """Create a user with a password. Raises `InputError` or `Conflict`."""
        check_password(password)
        return await self.store.create_user(username, await self.passwords.hash(password), role)

    async def login(self, username: str, password: str) -> TokenPair | None:
        """Tokens for valid credentials; None otherwise, in the same time either way."""
        user = await self.store.user_by_name(username)
        valid = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not valid or user.locked or user.role == "bot":
            return None
        return await self._issue_pair(user.id, user.role, user.token_version, uuid.uuid4().hex)

    async def change_password(self, user_id: int, old: str, new: str) -> TokenPair | None:
        """Set a new password and revoke every older token; None when `old` is wrong.

        Raises `InputError` for a new password that breaks the rules.
        """
        user = await self.store.user_by_id(user_id)
        if user is None or user.role == "bot":
            return None
        if not await self.passwords.verify(user.password_hash, old):
            return None
        check_password(new)
        await self.store.set_password(user.id, await self.passwords.hash(new))
        fresh = await self.store.user_by_id(user.id)  # set_password bumped its token version
        if fresh is None:
            return None
        return await self._issue_pair(fresh.id, fresh.role, fresh.token_version, uuid.uuid4().hex)

    async def reset_password(self, user_id: int) -> str | None:
        """Give the user a new random password, shown once to the admin who asked;
        every older token dies (the old password stops working). None for a bot or
        no such user."""
        user = await self.store.user_by_id(user_id)
        if user is None or user.role == "bot":
            return None
        password = secrets.token_urlsafe(12)  # 16 characters, 96 bits
        await self.store.set_password(user.id, await self.passwords.hash(password))
        return password

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. Raises `TokenError` (and revokes the family on reuse)."""
        claims = self.tokens.decode(refresh_token, frozenset({"refresh"}))
        stored = await self.store.use_refresh_token(claims.jti)
        if stored is None:
            raise TokenError("refresh token is expired, used or revoked")
        user = await self.store.user_by_id(claims.user_id)
        if user is None or user.locked or user.token_version != claims.version:
            raise TokenError("refresh token has been revoked")
        return await self._issue_pair(user.id, user.role, user.token_version, stored.family)

    async def _issue_pair(self, user_id: int, role: str, version: int, family: str) -> TokenPair:
        access, _ = self.tokens.issue(user_id, role, "access", version)
        refresh, claims = self.tokens.issue(user_id, role, "refresh", version)
        await self.store.add_refresh_token(claims.jti, user_id, family, claims.expires_at)
        return TokenPair(access, refresh, int(self.tokens.access_ttl))

    async def create_bot(self, name: str) -> tuple[User, str]:
        """A bot account and its long-lived token."""
        user = await self.store.create_user(name, None, "bot")
        return user, await self.issue_bot_token(user)

    async def rotate_bot(self, bot_id: int) -> str | None:
        """Revoke every token of the bot and issue a new one; None when no such bot."""
        if not await self.store.revoke_bot(bot_id):
            return None
        user = await self.store.user_by_id(bot_id)  # revoking bumped its token version
        return None if user is None else await self.issue_bot_token(user)

    async def issue_bot_token(self, user: User) -> str:
        token, claims = self.tokens.issue(user.id, "bot", "bot", user.token_version)
        await self.store.add_bot_token(claims.jti, user.id)
        return token
