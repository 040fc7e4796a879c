"""``GET /v1/tokens/{mint}``: one token's market tape with the tracked KOLs' entries and exits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.exceptions import RequestValidationError

from kolray.serve.routes.deps import ERRORS, Service
from kolray.serve.schemas import (
    DEFAULT_TAPE_POINTS,
    MAX_QUERY_TIME_S,
    MAX_TAPE_POINTS,
    ErrorOut,
    Mint,
    TokenMarket,
)

router = APIRouter()

UnixTime = Annotated[int | None, Query(ge=0, le=MAX_QUERY_TIME_S, description="Unix seconds, inclusive.")]


@router.get(
    "/v1/tokens/{mint}",
    response_model=TokenMarket,
    tags=["tokens"],
    responses={
        404: {
            "model": ErrorOut,
            "description": "Unknown token: no market tape and no tracked KOL swap of it.",
        },
        **ERRORS,
    },
)
async def token(
    service: Service,
    mint: Annotated[Mint, Path()],
    since: UnixTime = None,
    until: UnixTime = None,
    max_points: Annotated[
        int,
        Query(
            ge=10,
            le=MAX_TAPE_POINTS,
            description="Most tape prices to return; beyond it the tape is downsampled (see `downsampled`).",
        ),
    ] = DEFAULT_TAPE_POINTS,
) -> TokenMarket:
    """The token's market tape from its bonding curve or pool (prices, market cap, liquidity,
    venue), the stretches the market stage could not read (gaps, with their reason, never a zero
    price), the tracked KOLs' buys and sells of it, and their positions in it, over
    ``[since, until]``. The summary gives the newest price and the peak since the first KOL buy."""
    if since is not None and until is not None and since > until:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "until"),
                    "msg": f"until ({until}) is before since ({since})",
                    "type": "value_error",
                }
            ]
        )
    return await service.token_market(mint, since, until, max_points)
