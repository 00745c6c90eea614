"""Bearer-token dependencies: a tenant key for queries, the admin token for admin routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from rag.logs import tenant_var
from rag.service.auth import Principal, Scope
from rag.service.service import RetrievalService

bearer = HTTPBearer(auto_error=False, description="a tenant API key, or the admin token for /admin routes")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def service_of(request: Request) -> RetrievalService:
    service: RetrievalService = request.app.state.service
    return service


def _principal(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(
            401,
            "unauthorized",
            "missing credentials: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = service_of(request).keys.resolve(credentials.credentials)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def tenant_of(request: Request, credentials: Credentials) -> str:
    """The tenant of a tenant API key; the admin token has no tenant to query as (403)."""
    principal = _principal(request, credentials)
    if principal.scope is not Scope.TENANT or principal.tenant is None:
        raise ApiError(403, "forbidden", "this route needs a tenant API key; the admin token cannot query")
    tenant_var.set(principal.tenant)
    return principal.tenant


async def require_admin(request: Request, credentials: Credentials) -> None:
    principal = _principal(request, credentials)
    if principal.scope is not Scope.ADMIN:
        raise ApiError(
            403, "forbidden", "this route needs the admin token (RAG_ADMIN_TOKEN), not a tenant key"
        )
    tenant_var.set("admin")


Tenant = Annotated[str, Depends(tenant_of)]
