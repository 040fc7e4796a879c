"""``GET /healthz``."""

from __future__ import annotations

from fastapi import APIRouter

from kolray.serve.routes.deps import Service
from kolray.serve.schemas import Health

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz(service: Service) -> Health:
    """Liveness, and the model versions the replicas serve. Always 200 while the process runs;
    ``status`` is ``degraded`` when a model or the database is unavailable."""
    return await service.health()
