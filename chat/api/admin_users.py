"""Managing accounts (admins): find, change a role, kick, ban, disable, reset a password.

Every change that takes rights away (ban, disable, a role change, a password reset,
a kick) revokes the user's tokens and closes their sockets on every process with
4003, as logout does; each is recorded in the audit log. An admin cannot do these to
themself (409): the console must not lock its own user out.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from chat.api.audit import AuditDep
from chat.api.deps import AccountsDep, Admin, HubDep, StoreDep
from chat.api.responses import errors
from chat.auth.accounts import Principal
from chat.protocol import CloseCode, iso
from chat.storage.directory import UserState
from chat.storage.models import User

router = APIRouter(prefix="/api/admin/users", tags=["admin"])
PAGE_MAX = 100
NO_SUCH_USER = "no such user"
ADMINS_ONLY = (403, "admins only")
NOT_FOUND = errors(ADMINS_ONLY, (404, NO_SUCH_USER))
CHANGES = errors(ADMINS_ONLY, (404, NO_SUCH_USER), (409, "not to yourself, or not to a bot"))


class AdminUserOut(BaseModel):
    id: int
    name: str
    display_name: str | None
    role: str
    state: UserState
    banned: bool
    disabled: bool
    created_at: str


class UserPage(BaseModel):
    items: list[AdminUserOut]
    next_after: str | None  # pass as `after` for the next page; null: no more


class RoleIn(BaseModel):
    role: Literal["user", "admin"]


class PasswordOut(BaseModel):
    """A one-time password: shown once, to the admin who reset it, never stored plainly."""

    name: str
    password: str


def _out(user: User) -> AdminUserOut:
    state: UserState = "disabled" if user.disabled else "banned" if user.banned else "active"
    return AdminUserOut(
        id=user.id,
        name=user.username,
        display_name=user.display_name,
        role=user.role,
        state=state,
        banned=user.banned,
        disabled=user.disabled,
        created_at=iso(user.created_at),
    )


async def _target(store: StoreDep, username: str) -> User:
    user = await store.user_by_name(username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_SUCH_USER)
    return user


def _not_yourself(admin: Principal, user: User, what: str) -> None:
    if user.id == admin.user.id:
        raise HTTPException(status.HTTP_409_CONFLICT, f"you cannot {what} yourself")


async def _fresh(store: StoreDep, user: User) -> AdminUserOut:
    again = await store.user_by_id(user.id)
    if again is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_SUCH_USER)
    return _out(again)


@router.get("", response_model=UserPage, responses=errors((403, "admins only")))
async def list_users(
    _: Admin,
    store: StoreDep,
    q: Annotated[str | None, Query(max_length=64, description="start of the username")] = None,
    role: Annotated[Literal["user", "admin", "bot"] | None, Query()] = None,
    state: Annotated[UserState | None, Query()] = None,
    after: Annotated[str | None, Query(max_length=64, description="`next_after`")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
) -> UserPage:
    """Every account (bots, banned and disabled ones too), by name, filtered."""
    users = await store.list_users(prefix=q, role=role, state=state, after=after, limit=limit)
    more = len(users) == limit
    return UserPage(
        items=[_out(u) for u in users], next_after=users[-1].username_key if more else None
    )


@router.post("/{username}/kick", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def kick(username: str, admin: Admin, store: StoreDep, hub: HubDep, audit: AuditDep) -> None:
    """Close every session of a user: their tokens are revoked, they must sign in again."""
    user = await _target(store, username)
    await store.bump_token_version(user.id)
    await hub.close_user(user.id, CloseCode.REVOKED, "kicked by an admin")
    await audit.record(admin, "user.kick", "user", user.username)


@router.post("/{username}/ban", status_code=status.HTTP_204_NO_CONTENT, responses=CHANGES)
async def ban(username: str, admin: Admin, store: StoreDep, hub: HubDep, audit: AuditDep) -> None:
    """Revoke a user's tokens, close their sockets and refuse new sign-ins."""
    user = await _target(store, username)
    _not_yourself(admin, user, "ban")
    await store.bump_token_version(user.id, banned=True)
    await hub.close_user(user.id, CloseCode.REVOKED, "banned by an admin")
    await audit.record(admin, "user.ban", "user", user.username)


@router.post("/{username}/unban", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def unban(username: str, admin: Admin, store: StoreDep, audit: AuditDep) -> None:
    """Let a banned user sign in again."""
    user = await _target(store, username)
    await store.bump_token_version(user.id, banned=False)
    await audit.record(admin, "user.unban", "user", user.username)


@router.post("/{username}/disable", response_model=AdminUserOut, responses=CHANGES)
async def disable(
    username: str, admin: Admin, store: StoreDep, hub: HubDep, audit: AuditDep
) -> AdminUserOut:
    """Switch an account off: like a ban (no sign-in, tokens and sockets gone, no
    notifications, not found by search), without a moderation verdict."""
    user = await _target(store, username)
    _not_yourself(admin, user, "disable")
    await store.set_account(user.id, disabled=True)
    await store.bump_token_version(user.id)
    await hub.close_user(user.id, CloseCode.REVOKED, "account disabled by an admin")
    await audit.record(admin, "user.disable", "user", user.username)
    return await _fresh(store, user)


@router.post("/{username}/enable", response_model=AdminUserOut, responses=NOT_FOUND)
async def enable(username: str, admin: Admin, store: StoreDep, audit: AuditDep) -> AdminUserOut:
    """Switch a disabled account back on (a ban stays until `unban`)."""
    user = await _target(store, username)
    await store.set_account(user.id, disabled=False)
    await store.bump_token_version(user.id)  # drops the cached row on this process
    await audit.record(admin, "user.enable", "user", user.username)
    return await _fresh(store, user)


@router.post("/{username}/role", response_model=AdminUserOut, responses=CHANGES)
async def set_role(
    username: str, body: RoleIn, admin: Admin, store: StoreDep, hub: HubDep, audit: AuditDep
) -> AdminUserOut:
    """Make a user an admin or a plain user. Their tokens die and sockets close (4003):
    the next sign-in carries the new role everywhere at once."""
    user = await _target(store, username)
    _not_yourself(admin, user, "change the role of")
    if user.role == "bot":
        raise HTTPException(status.HTTP_409_CONFLICT, "a bot stays a bot")
    if user.role != body.role:
        await store.set_account(user.id, role=body.role)
        await store.bump_token_version(user.id)
        await hub.close_user(user.id, CloseCode.REVOKED, "role changed by an admin")
        await audit.record(admin, "user.role", "user", user.username, old=user.role, new=body.role)
    return await _fresh(store, user)


@router.post("/{username}/password", response_model=PasswordOut, responses=CHANGES)
async def reset_password(
    username: str,
    admin: Admin,
    store: StoreDep,
    accounts: AccountsDep,
    hub: HubDep,
    audit: AuditDep,
) -> PasswordOut:
    """Set a random one-time password and answer it (shown this once). The old password
    stops working, every token dies and every socket closes (4003); the user signs in
    with it and should choose their own (`POST /api/auth/password`)."""
    user = await _target(store, username)
    _not_yourself(admin, user, "reset the password of")  # use POST /api/auth/password
    password = await accounts.reset_password(user.id)
    if password is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "bots have no password")
    await hub.close_user(user.id, CloseCode.REVOKED, "password reset by an admin")
    await audit.record(admin, "user.password_reset", "user", user.username)
    return PasswordOut(name=user.username, password=password)
