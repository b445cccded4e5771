"""FastAPI dependencies: the services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from chat.auth.accounts import Principal
from chat.auth.tokens import TokenError
from chat.services import Services

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def get_principal(
    services: ServicesDep, token: Annotated[str | None, Depends(oauth2)]
) -> Principal:
    if not token:
        raise unauthorized("not authenticated: send Authorization: Bearer <access token>")
    try:
        return await services.accounts.authenticate(token)
    except TokenError:
        raise unauthorized("the token is invalid, expired or revoked") from None


Caller = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: Caller) -> Principal:
    if principal.user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")
    return principal


Admin = Annotated[Principal, Depends(get_admin)]
