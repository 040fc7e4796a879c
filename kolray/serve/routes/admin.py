"""``POST /v1/admin/reload``: the model versions the replicas serve (API key when set)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from kolray.serve.routes.deps import BODY, CONFLICT, ERRORS, NOT_FOUND, UNAUTHORIZED, Service, require_api_key
from kolray.serve.schemas import ReloadRequest, ReloadResponse

router = APIRouter()


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    tags=["admin"],
    dependencies=[Depends(require_api_key)],
    responses={**BODY, **UNAUTHORIZED, **NOT_FOUND, **CONFLICT, **ERRORS},
)
async def reload(service: Service, body: ReloadRequest | None = None) -> ReloadResponse:
    """Make every model replica serve the given versions (default: each model's champion),
    without restarting them: the versions travel as the deployments' ``user_config``.
    ``kolray promote`` calls this after switching the champion.

    An archived version (a former champion) needs ``allow_archived: true`` (409 without).
    A version the replicas cannot load is a 503 that leaves everything as it was, config
    included; asking again retries it."""
    return await service.reload(body or ReloadRequest())
