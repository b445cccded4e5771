"""Passwords (argon2) and tokens (JWT, HS256 by default).

Every token carries `sub`, `iat`, `nbf`, `exp`, `jti`, `iss`, `aud`, `typ`
(access, refresh or bot), `role` and `ver` (the user's token version: logout,
password change and ban bump it, which kills every older token at once).
Decoding names the algorithm list explicitly and requires every claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from jose import JWTError, jwt

from chat.config import Settings

log = logging.getLogger(__name__)

TokenType = Literal["access", "refresh", "bot"]
ISSUER = "chat"
AUDIENCE = "chat"
MAX_TOKEN_CHARS = 8192
SECRET_FILE_NAME = "chat-jwt.secret"
HASH_NICENESS = 10  # hashing threads yield the CPU to the event loop
PLACEHOLDER_SECRETS = frozenset({"", "secret", "changeme", "change-me", "changethis"})


class TokenError(Exception):
    """A token that is malformed, forged, expired, of the wrong type or revoked."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    role: str
    type: TokenType
    jti: str
    version: int
    issued_at: float
    expires_at: float


class PasswordService:
    """argon2id hashing off the event loop, with bounded concurrency.

    A login flood queues on the semaphore instead of spawning unbounded
    64 MiB hashing jobs; a dummy hash keeps timing equal for unknown users.
    """

    def __init__(
        self, concurrency: int, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._slots = asyncio.Semaphore(concurrency)
        # Hashing threads of their own, at a lower CPU priority: under a login flood
        # the cores go to the event loop first, and logins wait instead of chat.
        self._pool = ThreadPoolExecutor(
            concurrency, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when `password` matches; spends the same time when there is no hash."""
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._verify, stored_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy, password) and (
                stored_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def _lower_priority() -> None:
    """Raise this thread's nice value (Linux applies it per thread); best effort."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


def resolve_secret(settings: Settings) -> str:
    """The signing key: the setting, or in development a generated one kept on disk."""
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
        if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 16:
            if settings.environment == "production":
                raise RuntimeError("CHAT_JWT_SECRET is a placeholder or shorter than 16 chars")
            log.warning("CHAT_JWT_SECRET is weak; set a long random value in production")
        return secret
    if settings.environment == "production":
        raise RuntimeError("CHAT_JWT_SECRET must be set when CHAT_ENVIRONMENT=production")
    path: Path = settings.state_dir / SECRET_FILE_NAME
    if path.exists():
        log.info("using the development JWT secret kept in %s", path)
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Create with 0600 so other local users cannot read it.
    fd = path.open("x", encoding="utf-8")
    path.chmod(0o600)
    with fd:
        fd.write(secret)
    log.warning("CHAT_JWT_SECRET is not set: generated a development secret in %s", path)
    return secret


class TokenService:
    """Issues and checks JWTs with one key and an explicit algorithm."""

    def __init__(self, secret: str, algorithm: str, access_ttl: float, refresh_ttl: float):
        self._secret = secret
        self._algorithm = algorithm
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def issue(
        self,
        user_id: int,
        role: str,
        token_type: TokenType,
        version: int,
        ttl: float | None = None,
    ) -> tuple[str, Claims]:
        """Sign a token; bots get a ten-year lifetime and revocation instead of expiry."""
        now = time.time()
        if ttl is None:
            ttl = {"access": self.access_ttl, "refresh": self.refresh_ttl}.get(
                token_type, 10 * 365 * 24 * 3600.0
            )
        claims = Claims(
            user_id=user_id,
            role=role,
            type=token_type,
            jti=uuid.uuid4().hex,
            version=version,
            issued_at=now,
            expires_at=now + ttl,
        )
        payload = {
            "sub": str(user_id),
            "iat": int(now),
            "nbf": int(now) - 1,
            "exp": int(claims.expires_at),
            "jti": claims.jti,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "typ": token_type,
            "role": role,
            "ver": version,
        }
        return jwt.encode(payload, self._secret, algorithm=self._algorithm), claims

    def decode(self, token: str, allowed: frozenset[TokenType]) -> Claims:
        """Verify signature, algorithm, claims and type. Raises `TokenError`."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("token is missing or too long")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[self._algorithm],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={
                    "require_aud": True,
                    "require_iat": True,
                    "require_exp": True,
                    "require_nbf": True,
                    "require_iss": True,
                    "require_sub": True,
                    "require_jti": True,
                },
            )
        except JWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        token_type = payload.get("typ")
        if token_type not in allowed:
            raise TokenError("wrong kind of token for this use")
        try:
            claims = Claims(
                user_id=int(payload["sub"]),
                role=str(payload["role"]),
                type=token_type,
                jti=str(payload["jti"]),
                version=int(payload["ver"]),
                issued_at=float(payload["iat"]),
                expires_at=float(payload["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenError("token claims are malformed") from None
        # python-jose compares `exp` with the current time in whole seconds: without
        # this, a token stays valid for up to a second after it expired.
        if claims.expires_at <= time.time():
            raise TokenError("token has expired")
        return claims
