"""Accounts over HTTP: register, token, refresh, logout, me."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from chat.api.deps import Caller, ServicesDep, unauthorized
from chat.protocol import CloseCode
from chat.security import TokenError
from chat.store import Conflict, InputError

router = APIRouter(prefix="/api", tags=["accounts"])


class Credentials(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class RefreshIn(BaseModel):
    refresh_token: str = Field(max_length=8192)


class UserOut(BaseModel):
    id: int
    username: str
    role: str


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def register(body: Credentials, services: ServicesDep) -> UserOut:
    """Create an account (refused with 403 when registration is disabled)."""
    if not services.settings.registration_enabled:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "registration is disabled")
    try:
        user = await services.accounts.register(body.username, body.password)
    except InputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return UserOut(id=user.id, username=user.username, role=user.role)


@router.post("/auth/token", response_model=TokenOut)
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], services: ServicesDep
) -> dict[str, object]:
    """OAuth2 password grant: an access token and a refresh token."""
    if len(form.username) > 64 or len(form.password) > 1024:
        raise unauthorized("wrong username or password")
    pair = await services.accounts.login(form.username, form.password)
    if pair is None:
        raise unauthorized("wrong username or password")
    return pair.to_json()


@router.post("/auth/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, services: ServicesDep) -> dict[str, object]:
    """Trade a refresh token for a new pair; the old refresh token stops working."""
    try:
        pair = await services.accounts.refresh(body.refresh_token)
    except TokenError:
        raise unauthorized("the refresh token is invalid, used, expired or revoked") from None
    return pair.to_json()


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(caller: Caller, services: ServicesDep) -> None:
    """Revoke every token of the caller and close their sockets."""
    await services.store.bump_token_version(caller.user.id)
    await services.hub.close_user(caller.user.id, CloseCode.REVOKED, "logged out")


@router.get("/me", response_model=UserOut)
async def me(caller: Caller) -> UserOut:
    """The authenticated caller."""
    return UserOut(id=caller.user.id, username=caller.user.name, role=caller.user.role)
