"""Admin routes for the rollout layer: the hot-reloadable config, auto-fallback status and reset."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from api.deps import Fallback, Rollout
from api.errors import declared
from api.schemas import FallbackKeyOut, FallbackResetBody, FallbackResetOut, RolloutOut
from api.security import require_admin
from rag.tenancy import TENANT_PATTERN

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/admin/rollout", response_model=RolloutOut, responses=declared(401, 403))
async def rollout(admin: Rollout) -> RolloutOut:
    """The rollout config serving (flags, profiles, budgets, prices, shadow, fallback, router), its
    version and where it came from, and any source's outstanding error."""
    return RolloutOut.model_validate(admin.status())


@router.put("/admin/rollout", response_model=RolloutOut, responses=declared(401, 403, 413, 422, 503))
async def replace_rollout(admin: Rollout, config: Annotated[dict[str, Any], Body()]) -> RolloutOut:
    """Validate and apply a new rollout config (JSON, the sections of ``rag/rollout/example.toml``). With
    Redis it reaches every replica; a config that does not validate is refused (422 ``invalid_config``,
    api.errors.ERROR_TABLE) and the old one serves."""
    return RolloutOut.model_validate(await admin.apply(json.dumps(config), "json"))


@router.get("/admin/fallback", response_model=list[FallbackKeyOut], responses=declared(401, 403, 422))
async def fallback_status(
    fallback: Fallback,
    tenant: Annotated[str | None, Query(pattern=TENANT_PATTERN, description="only this tenant")] = None,
) -> list[FallbackKeyOut]:
    """Per tenant and flag: the candidate path's sliding-window stats and whether it fell back."""
    return [fallback_out(row) for row in fallback.fallback_status(tenant)]


@router.post("/admin/fallback/reset", response_model=FallbackResetOut, responses=declared(401, 403, 413, 422))
async def reset_fallback(fallback: Fallback, body: FallbackResetBody) -> FallbackResetOut:
    """Put tripped candidate paths back in service: one tenant's, one flag's, both, or (no field) all."""
    return FallbackResetOut(reset=fallback.reset_fallback(body.tenant, body.flag))


def fallback_out(row: dict[str, Any]) -> FallbackKeyOut:
    return FallbackKeyOut(
        tenant=row["tenant"],
        flag=row["path"],
        tripped=row["tripped"],
        window=row["window"],
        reason=row.get("reason"),
        tripped_for_s=row.get("tripped_for_s"),
    )
