"""Bearer tokens: a tenant key for queries, the admin token for ``/admin`` and ``/jobs``, the metrics token
for ``/metrics`` (when ``RAG_METRICS_TOKEN`` is set). ``principal_of`` is the one resolution; the
middleware calls it before reading an admin request's body, the dependencies call it again per route.

The caller a query is for (document ACLs, :mod:`rag.acl`): ``X-RAG-Principal``, asserted by the tenant's
application, or the principal its key is bound to; :func:`caller_of` is the one rule (a bound key's header
may only name its principal, or it with fewer groups: else 403)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from api.deps import AppSettings, Keys, service_of
from api.errors import ApiError, FieldError
from rag.acl import MAX_GROUPS, MAX_PRINCIPAL_CHARS, NAME_PATTERN, PRINCIPAL_HEADER, AclError, Caller
from rag.logs import tenant_var
from rag.service.auth import KeyRing, Principal, Scope
from rag.service.limits import RateLimits

bearer = HTTPBearer(auto_error=False, description="a tenant API key, or the admin token for /admin routes")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value; "" for any other value."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def principal_of(keys: KeyRing, authorization: str | None) -> Principal:
    """The principal of an ``Authorization`` header value, or :class:`ApiError` 401. The one place a bearer
    token is resolved: the middleware (before the body is read) and the route dependencies both call it."""
    token = bearer_token(authorization)
    if not token:
        raise ApiError(
            401,
            "unauthorized",
            "missing credentials: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = keys.resolve(token)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


def check_admin(principal: Principal) -> None:
    """:class:`ApiError` 403 unless ``principal`` holds the admin token."""
    if principal.scope is not Scope.ADMIN:
        raise ApiError(
            403, "forbidden", "this route needs the admin token (RAG_ADMIN_TOKEN), not a tenant key"
        )


def check_metrics_token(expected: SecretStr | None, authorization: str | None) -> None:
    """:class:`ApiError` 401 unless ``authorization`` is ``Bearer <expected>`` (compared in constant
    time); nothing to check when no metrics token is configured."""
    if expected is None:
        return
    given = bearer_token(authorization)
    # digests of equal length: the comparison time says nothing about the token, not even its length
    if not hmac.compare_digest(_sha256(given), _sha256(expected.get_secret_value())):
        raise ApiError(
            401,
            "unauthorized",
            "/metrics needs the metrics token (RAG_METRICS_TOKEN): send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def tenant_principal(keys: KeyRing, authorization: str | None) -> Principal:
    """The principal of a tenant API key (401 without one); the admin token has no tenant to query as
    (403)."""
    principal = principal_of(keys, authorization)
    if principal.scope is not Scope.TENANT or principal.tenant is None:
        raise ApiError(403, "forbidden", "this route needs a tenant API key; the admin token cannot query")
    tenant_var.set(principal.tenant)
    return principal


def tenant_of_header(keys: KeyRing, authorization: str | None) -> str:
    """The tenant of a tenant API key (401 without one); the admin token has no tenant to query as (403)."""
    tenant = tenant_principal(keys, authorization).tenant
    assert tenant is not None
    return tenant


def caller_of(principal: Principal, headers: list[str]) -> Caller | None:
    """Who a query is for: the ``X-RAG-Principal`` header (its values in ``headers``), else the key's
    bound principal, else None (anonymous: it sees only documents without an ACL, under ``public``).
    422 for a malformed header or more than one; 403 when a bound key's header names anyone else."""
    field = f"header.{PRINCIPAL_HEADER}"
    if len(headers) > 1:
        message = f"{PRINCIPAL_HEADER}: give it once, got {len(headers)} values"
        raise ApiError(
            422, "invalid_request", message, fields=[FieldError(field=field, message=message, limit=1)]
        )
    if not headers:
        return principal.bound
    try:
        caller = Caller.parse(headers[0])
    except AclError as exc:
        raise ApiError(
            422,
            "invalid_request",
            str(exc),
            fields=[FieldError(field=field, message=str(exc), limit=exc.limit)],
        ) from None
    if principal.bound is not None and not caller.within(principal.bound):
        raise ApiError(
            403,
            "forbidden",
            f"this key is bound to one principal; {PRINCIPAL_HEADER} may name only it "
            "(or it with fewer groups)",
        )
    return caller


@dataclass(frozen=True, slots=True)
class QueryAuth:
    """Who asks: the tenant (its key) and the caller the query is for (None: anonymous)."""

    tenant: str
    caller: Caller | None


def query_auth_of(keys: KeyRing, request: Request) -> QueryAuth:
    principal = tenant_principal(keys, request.headers.get("authorization"))
    assert principal.tenant is not None
    return QueryAuth(principal.tenant, caller_of(principal, request.headers.getlist(PRINCIPAL_HEADER)))


async def query_auth(request: Request) -> QueryAuth:
    """The tenant and caller of a query as one dependency without sub-dependencies (the hot ``/query``
    route); as :func:`query_tenant`, it runs before the body is validated."""
    return query_auth_of(service_of(request).keys, request)


async def auth_of(request: Request, keys: Keys, _credentials: Credentials) -> QueryAuth:
    """The dependency form of :func:`query_auth` (``_credentials`` puts the scheme in the OpenAPI)."""
    return query_auth_of(keys, request)


async def tenant_of(request: Request, keys: Keys, _credentials: Credentials) -> str:
    """The dependency form of :func:`tenant_of_header` (``_credentials`` puts the scheme in the OpenAPI)."""
    return tenant_of_header(keys, request.headers.get("authorization"))


async def query_tenant(request: Request) -> str:
    """:func:`tenant_of` as one dependency without sub-dependencies (the hot ``/query`` route). As a
    dependency it runs before the body is validated: a client without a tenant key learns nothing about
    what a valid body is."""
    return tenant_of_header(service_of(request).keys, request.headers.get("authorization"))


BEARER_DOC: dict[str, Any] = {"security": [{"HTTPBearer": []}]}
"""``openapi_extra`` of a route that takes :data:`QueryTenant` instead of ``Tenant``: the same security
requirement in the OpenAPI."""

_NAME = NAME_PATTERN.strip("^$")
PRINCIPAL_DOC: dict[str, Any] = {
    "name": PRINCIPAL_HEADER,
    "in": "header",
    "required": False,
    "description": "who the query is for (document ACLs): the caller's user and groups, asserted by the "
    "tenant's application; absent: the key's bound principal, else anonymous (documents without an ACL "
    f"under the tenant's public default). At most {MAX_GROUPS} groups; a key bound to a principal may "
    "name only it (403 otherwise)",
    "schema": {
        "type": "string",
        "maxLength": MAX_PRINCIPAL_CHARS,
        "pattern": f"^user:{_NAME}(;groups={_NAME}(,{_NAME}){{0,{MAX_GROUPS - 1}}})?$",
        "example": "user:alice;groups=eng,ops",
    },
}
QUERY_DOC: dict[str, Any] = {**BEARER_DOC, "parameters": [PRINCIPAL_DOC]}
"""``openapi_extra`` of ``POST /query``: the security requirement and the ``X-RAG-Principal`` header."""


async def require_admin(request: Request, keys: Keys, _credentials: Credentials) -> None:
    """Defence in depth: the middleware has already refused a request to ``/admin`` or ``/jobs`` without
    the admin token, before reading its body; this holds if a route is ever mounted elsewhere."""
    check_admin(principal_of(keys, request.headers.get("authorization")))
    tenant_var.set("admin")


async def take_rate_token(limits: RateLimits, tenant: str, bucket: str | None = None) -> None:
    """A token of ``tenant``'s rate limit (its queries', or its own ``bucket``'s, e.g. "feedback"), or
    :class:`ApiError` 429 ``rate_limited`` with ``Retry-After``."""
    decision = await limits.take(tenant, bucket)
    if decision.allowed:
        return
    qps, burst = limits.qps, limits.burst
    limit = f"rate limit of {qps:g} queries/s" if bucket is None else f"{bucket} rate limit of {qps:g}/s"
    raise ApiError(
        429,
        "rate_limited",
        f"tenant {tenant!r} is over its {limit} (burst {burst}); retry after {decision.retry_after_header} s",
        headers={"Retry-After": decision.retry_after_header},
    )


async def require_metrics_token(request: Request, settings: AppSettings) -> None:
    check_metrics_token(settings.metrics_token, request.headers.get("authorization"))


Tenant = Annotated[str, Depends(tenant_of)]
QueryTenant = Annotated[str, Depends(query_tenant)]
QueryCaller = Annotated[QueryAuth, Depends(query_auth)]  # the tenant and the caller (document ACLs)
StreamCaller = Annotated[QueryAuth, Depends(auth_of)]  # the same, with the scheme in the OpenAPI
