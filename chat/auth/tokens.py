"""Tokens (JWT, HS256 by default) and the secret that signs them.

Every token carries `sub`, `iat`, `nbf`, `exp`, `jti`, `iss`, `aud`, `typ`
(access, refresh or bot), `role` and `ver` (the user's token version: logout,
password change and ban bump it, which kills every older token at once).
Decoding names the algorithm list explicitly and requires every claim.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jose import JWTError, jwt

from chat.config import Settings

log = logging.getLogger(__name__)

TokenType = Literal["access", "refresh", "bot"]
ISSUER = "chat"
AUDIENCE = "chat"
MAX_TOKEN_CHARS = 8192
SECRET_FILE_NAME = "chat-jwt.secret"
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
