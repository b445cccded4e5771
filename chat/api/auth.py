"""Accounts over HTTP: register, token, refresh, logout (`/api/me`: `chat.api.people`)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from chat.api.deps import (
    AccountsDep,
    Caller,
    HubDep,
    LoginGateDep,
    RegistrationsDep,
    SettingsDep,
    SignInGuards,
    SignInGuardsDep,
    StoreDep,
    unauthorized,
)
from chat.api.fields import Password, RequestBody, Username
from chat.api.responses import errors
from chat.auth.accounts import TokenPair
from chat.auth.tokens import TokenError
from chat.limits.buckets import Busy
from chat.monitoring import metrics
from chat.monitoring.abuse import AbuseEvent
from chat.protocol import CloseCode
from chat.storage.rules import Conflict, InputError, normalize_username

router = APIRouter(prefix="/api", tags=["accounts"])


class Credentials(RequestBody):
    username: Username
    password: Password


class RefreshIn(RequestBody):
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


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=errors(
        (403, "registration is disabled"),
        (409, "that username is taken"),
        422,
        (429, "too many registrations from this address (Retry-After)"),
        (503, "too many password hashes in flight (Retry-After)"),
    ),
)
async def register(
    request: Request,
    body: Credentials,
    accounts: AccountsDep,
    login_gate: LoginGateDep,
    registrations: RegistrationsDep,
    settings: SettingsDep,
) -> UserOut:
    """Create an account (refused with 403 when registration is disabled).

    At most `registrations_per_ip` attempts per address per `registration_window`
    (429 with `Retry-After`); the hashing shares the sign-in gate (503 when full).
    """
    if not settings.registration_enabled:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "registration is disabled")
    address = client_address(request)
    if address is not None:
        wait = registrations.blocked(address)
        if wait is not None:
            metrics.THROTTLED.labels("register").inc()
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "too many registrations from this address; try again later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        registrations.fail(address)  # every attempt counts, whatever its outcome
    try:
        with login_gate:
            user = await accounts.register(body.username, body.password)
    except Busy:
        raise hashing_busy() from None
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return UserOut(id=user.id, username=user.username, role=user.role)


class PasswordIn(RequestBody):
    old_password: str = Field(max_length=1024)
    new_password: Password


WRONG_CREDENTIALS = "wrong username or password"
THROTTLED = (
    (429, "too many failed attempts for this account or address (Retry-After)"),
    (503, "too many password checks in flight (Retry-After)"),
)


def hashing_busy() -> HTTPException:
    """503 for a request refused because too many password hashes are in flight."""
    metrics.THROTTLED.labels("login_busy").inc()
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "too many sign-ins in progress; try again shortly",
        headers={"Retry-After": "1"},
    )


def client_address(request: Request) -> str | None:
    """The peer's address (the proxy's view when uvicorn trusts forwarded headers)."""
    return request.client.host if request.client else None


def account_key(username: str) -> str:
    """The throttling key of a login name: the same for every spelling of one account."""
    try:
        return normalize_username(username)[1]
    except InputError:
        return username[:64].casefold()


async def checked_password(
    guards: SignInGuards,
    request: Request,
    account: str,
    username: str,
    attempt: Callable[[], Awaitable[TokenPair | None]],
) -> TokenPair | None:
    """Run one password check under the login throttle and the hashing gate.

    Refused with 429 while the account (from this address) or the address has
    too many recent failures (before any hashing), 503 when too many checks are in flight.
    A failure is counted and reported; a success clears the account's count.
    """
    address = client_address(request)
    wait = guards.login_throttle.blocked(account, address)
    if wait is not None:
        metrics.THROTTLED.labels("login").inc()
        guards.abuse.report(AbuseEvent("login_throttled", address, username=username[:64]))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed sign-in attempts; try again later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    try:
        with guards.login_gate:
            pair = await attempt()
    except Busy:
        raise hashing_busy() from None
    if pair is None:
        guards.login_throttle.failed(account, address)
        guards.abuse.report(
            AbuseEvent("auth_failure", address, username=username[:64], detail="password")
        )
        return None
    guards.login_throttle.succeeded(account, address)
    return pair


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses=errors((401, "wrong username or password"), 422, *THROTTLED),
)
async def token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    guards: SignInGuardsDep,
    accounts: AccountsDep,
) -> dict[str, object]:
    """OAuth2 password grant: an access token and a refresh token.

    Failed attempts are throttled per account and per address (429 with
    `Retry-After`); an unknown user gets the same answer in the same time.
    """
    username = form.username
    if len(username) > 64 or len(form.password) > 1024:
        username, password = username[:64], ""  # still costs a hash: same timing
    else:
        password = form.password
    pair = await checked_password(
        guards,
        request,
        account_key(username),
        username,
        partial(accounts.login, username, password),
    )
    if pair is None:
        raise unauthorized(WRONG_CREDENTIALS)
    return pair.to_json()


@router.post(
    "/auth/password",
    response_model=TokenOut,
    responses=errors((403, "the old password is wrong, or a bot"), 422, *THROTTLED),
)
async def change_password(
    request: Request,
    body: PasswordIn,
    caller: Caller,
    guards: SignInGuardsDep,
    accounts: AccountsDep,
    hub: HubDep,
) -> dict[str, object]:
    """Change the caller's password: every older token dies and every socket closes (4003).

    Answers a fresh token pair for the caller. A wrong `old_password` is a 403
    and counts as a failed sign-in for the throttle.
    """
    if caller.user.role == "bot":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "bots have no password")
    pair = await checked_password(
        guards,
        request,
        account_key(caller.user.name),
        caller.user.name,
        partial(accounts.change_password, caller.user.id, body.old_password, body.new_password),
    )
    if pair is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the old password is wrong")
    await hub.close_user(caller.user.id, CloseCode.REVOKED, "password changed")
    return pair.to_json()


@router.post(
    "/auth/refresh",
    response_model=TokenOut,
    responses=errors((401, "the refresh token is invalid, used, expired or revoked"), 422),
)
async def refresh(body: RefreshIn, accounts: AccountsDep) -> dict[str, object]:
    """Trade a refresh token for a new pair; the old refresh token stops working."""
    try:
        pair = await accounts.refresh(body.refresh_token)
    except TokenError:
        raise unauthorized("the refresh token is invalid, used, expired or revoked") from None
    return pair.to_json()


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(caller: Caller, hub: HubDep, store: StoreDep) -> None:
    """Revoke every token of the caller and close their sockets."""
    await store.bump_token_version(caller.user.id)
    await hub.close_user(caller.user.id, CloseCode.REVOKED, "logged out")
