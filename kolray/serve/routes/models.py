"""``GET /v1/models`` and a version's evaluation report and plots."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from kolray.serve.routes.deps import ERRORS, NOT_FOUND, Service
from kolray.serve.schemas import ModelName, ModelsOut

router = APIRouter()

VersionPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z][0-9A-Za-z_.-]*$")]


@router.get("/v1/models", response_model=ModelsOut, tags=["models"], responses=ERRORS)
async def models(service: Service) -> ModelsOut:
    """Registered versions (newest first), their stage and primary metric, the champion, and
    what the replicas serve."""
    return await service.models()


@router.get(
    "/v1/models/{model}/{version}/report",
    response_model=dict[str, Any],
    tags=["models"],
    responses=NOT_FOUND,
)
async def report(model: ModelName, version: VersionPath, service: Service) -> dict[str, Any]:
    """The evaluation report (``report.json``) of a version."""
    return await service.report(model, version)


@router.get(
    "/v1/models/{model}/{version}/plots",
    response_model=list[str],
    tags=["models"],
    responses=NOT_FOUND,
)
async def plots(model: ModelName, version: VersionPath, service: Service) -> list[str]:
    """Names of the report's plots (ROC, PR, calibration, ...)."""
    return await service.plot_names(model, version)


@router.get(
    "/v1/models/{model}/{version}/plots/{name}",
    tags=["models"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **NOT_FOUND},
)
async def plot(
    model: ModelName,
    version: VersionPath,
    name: Annotated[str, Path(max_length=84, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")],
    service: Service,
) -> Response:
    """One plot of the report, as PNG."""
    return Response(await service.plot(model, version, name), media_type="image/png")
