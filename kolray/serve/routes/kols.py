"""``GET /v1/kols`` (the leaderboard) and ``GET /v1/kols/{wallet}`` (one KOL)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from kolray.serve.routes.deps import ERRORS, Service
from kolray.serve.schemas import ErrorOut, KolDetail, Leaderboard, SortKey, Wallet, Window

router = APIRouter()


@router.get("/v1/kols", response_model=Leaderboard, tags=["kols"], responses=ERRORS)
async def kols(
    service: Service,
    window: Annotated[Window, Query(description="Statistics window.")] = "30d",
    sort: Annotated[SortKey, Query(description="Descending; KOLs without a value last.")] = "total_pnl_sol",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    q: Annotated[str | None, Query(max_length=64, description="Search in names and wallets.")] = None,
) -> Leaderboard:
    """The leaderboard: each KOL's statistics over the window, from positions closed before
    the snapshot time."""
    return await service.leaderboard(window, sort, limit, q)


@router.get(
    "/v1/kols/{wallet}",
    response_model=KolDetail,
    tags=["kols"],
    responses={
        404: {
            "model": ErrorOut,
            "description": "Unknown KOL: the wallet is neither tracked nor has any position.",
        },
        **ERRORS,
    },
)
async def kol(
    service: Service,
    wallet: Annotated[Wallet, Path()],
    limit: Annotated[int, Query(ge=1, le=1000, description="Positions to return.")] = 100,
) -> KolDetail:
    """A KOL's statistics (7d, 30d, all), forecast 3x rates over the next 7 and 30 days, open
    and recent positions, and cumulative PnL. A wallet kolray knows nothing about is a 404; a
    known KOL without closed positions gets the model's population prior, flagged
    ``cold_start``."""
    return await service.kol_detail(wallet, limit)
