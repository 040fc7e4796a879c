"""``POST /v1/predict/token``: P(3x) for KOL buys."""

from __future__ import annotations

from fastapi import APIRouter

from kolray.serve.routes.deps import BODY, ERRORS, Service
from kolray.serve.schemas import PredictTokenRequest, PredictTokenResponse

router = APIRouter()


@router.post(
    "/v1/predict/token",
    response_model=PredictTokenResponse,
    tags=["predictions"],
    responses={**BODY, **ERRORS},
)
async def predict_token(body: PredictTokenRequest, service: Service) -> PredictTokenResponse:
    """P(3x) for 1 to 1000 buys. Features are computed point in time: only positions closed
    before each item's ``entry_time`` count."""
    return await service.predict_tokens(body.items)
