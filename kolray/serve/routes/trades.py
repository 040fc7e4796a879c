"""``GET /v1/trades/recent``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kolray.serve.routes.deps import ERRORS, Service
from kolray.serve.schemas import RecentTrades, Wallet

router = APIRouter()


@router.get("/v1/trades/recent", response_model=RecentTrades, tags=["trades"], responses=ERRORS)
async def recent_trades(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    wallet: Annotated[Wallet | None, Query(description="Only this KOL's swaps.")] = None,
) -> RecentTrades:
    """The latest swaps, newest first, with P(3x) for buys whose position is still open (the
    probability for that buy, at its time and size) and the multiple of closed ones."""
    return await service.recent_trades(limit, wallet)
