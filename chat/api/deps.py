"""FastAPI dependencies: the parts of the server a route uses, and the caller.

A route asks for exactly the parts it uses (`StoreDep`, `HubDep`, ...), never
the whole `Services`: each dependency reads one part of what the lifespan built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from chat.auth.accounts import Accounts, Principal
from chat.auth.tokens import TokenError
from chat.config import Settings
from chat.hub import Hub
from chat.limits.buckets import FailureWindow, Gate, LoginThrottle
from chat.monitoring.abuse import AbuseMonitor
from chat.monitoring.alerts import Alerts
from chat.monitoring.history import History
from chat.storage.store import Store
from chat.tasks import TaskRunner
from chat.ws.deps import WsDeps

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def _part(name: str) -> Callable[[Request], Any]:
    def get(request: Request) -> Any:
        return getattr(request.app.state.services, name)

    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(_part("settings"))]
StoreDep = Annotated[Store, Depends(_part("store"))]
AccountsDep = Annotated[Accounts, Depends(_part("accounts"))]
HubDep = Annotated[Hub, Depends(_part("hub"))]
TasksDep = Annotated[TaskRunner, Depends(_part("tasks"))]
AlertsDep = Annotated[Alerts, Depends(_part("alerts"))]
HistoryDep = Annotated[History, Depends(_part("history"))]
LoginGateDep = Annotated[Gate, Depends(_part("login_gate"))]
RegistrationsDep = Annotated[FailureWindow, Depends(_part("registrations"))]
RoomCreationsDep = Annotated[FailureWindow, Depends(_part("room_creations"))]


def _messaging(request: Request) -> WsDeps:
    deps: WsDeps = request.app.state.ws
    return deps


# What sending and streaming share with the WebSocket layer (writer, hub, limits, ...).
MessagingDep = Annotated[WsDeps, Depends(_messaging)]


@dataclass(frozen=True, slots=True)
class SignInGuards:
    """What stands before a password check: the throttle, the hashing gate, the reports."""

    login_throttle: LoginThrottle
    login_gate: Gate
    abuse: AbuseMonitor


def _sign_in_guards(request: Request) -> SignInGuards:
    services = request.app.state.services
    return SignInGuards(services.login_throttle, services.login_gate, services.abuse)


SignInGuardsDep = Annotated[SignInGuards, Depends(_sign_in_guards)]


@dataclass(frozen=True, slots=True)
class Readiness:
    """What `/readyz` asks: each dependency's probe, and whether the process is draining."""

    probes: dict[str, Callable[[], Awaitable[None]]]
    draining: bool


def _readiness(request: Request) -> Readiness:
    services = request.app.state.services
    return Readiness(services.probes(), services.draining)


ReadinessDep = Annotated[Readiness, Depends(_readiness)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def get_principal(
    accounts: AccountsDep, token: Annotated[str | None, Depends(oauth2)]
) -> Principal:
    if not token:
        raise unauthorized("not authenticated: send Authorization: Bearer <access token>")
    try:
        return await accounts.authenticate(token)
    except TokenError:
        raise unauthorized("the token is invalid, expired or revoked") from None


Caller = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: Caller) -> Principal:
    if principal.user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")
    return principal


Admin = Annotated[Principal, Depends(get_admin)]
