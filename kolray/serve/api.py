"""The FastAPI app: the routes of DESIGN.md §3 over a :class:`~kolray.serve.service.KolrayService`.

:func:`build_app` creates a fresh app each call (Serve calls it inside the ingress replica, where
the Gradio UI, which cannot be pickled, is built too). Route handlers are thin: validation is the
pydantic models of :mod:`kolray.serve.schemas`, answers come from the service.

Errors: bad input → 422 whose ``detail`` lists each problem with its ``loc`` (the field) and whose
``message`` says it in one line; unknown things → 404; no model / feature pipeline / database →
503 with what to do; a wrong or missing ``X-API-Key`` on an admin route (when ``KOLRAY_API_KEY``
is set) → 401; a reload to an archived version without ``allow_archived`` → 409.

Extension points: :mod:`kolray.serve.extensions` lists extra routers (e.g. alerts' server-sent
events) and UI tabs; :func:`build_app` includes them.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from kolray import __version__
from kolray.serve.schemas import (
    ErrorOut,
    Health,
    KolDetail,
    Leaderboard,
    ModelName,
    ModelsOut,
    PredictTokenRequest,
    PredictTokenResponse,
    RecentTrades,
    ReloadRequest,
    ReloadResponse,
    SortKey,
    Wallet,
    Window,
)
from kolray.serve.service import KolrayService, ServiceError

DESCRIPTION = """
Predictions for Solana KOL buys (will this position reach 3x?) and KOL forecasts (what share of
their next positions will?), with the KOL leaderboard, KOL records and recent trades.

Every prediction names the model version that produced it. Bad input is answered with a 422 that
names the field; a missing model or database with a 503 that says what to do. The web UI is at
[/ui](/ui).
"""

ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "No model loaded yet, feature pipeline or database unavailable."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "Not found."}}
BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body cannot be decoded (not UTF-8 text)."}
}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "KOLRAY_API_KEY is set and X-API-Key is missing or wrong."}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "An archived version asked for without allow_archived."}
}
VersionPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z][0-9A-Za-z_.-]*$")]


def _summary(errors: list[Any]) -> str:
    parts = []
    for error in errors[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _jsonable_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Validation errors without the raw input or exception objects (which may not be JSON, or
    may echo a huge body back)."""
    out = []
    for error in errors:
        item = {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": error.get("type", ""),
        }
        out.append(item)
    return out


def build_api(service: KolrayService) -> APIRouter:
    router = APIRouter()

    def require_api_key(x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None) -> None:
        expected = service.api_key
        if expected and not (x_api_key and hmac.compare_digest(x_api_key.encode(), expected.encode())):
            raise _Unauthorized("X-API-Key header missing or wrong (KOLRAY_API_KEY is set on the server)")

    @router.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness, and the model versions the replicas serve. Always 200 while the process runs;
        ``status`` is ``degraded`` when a model or the database is unavailable."""
        return await service.health()

    @router.post(
        "/v1/predict/token",
        response_model=PredictTokenResponse,
        tags=["predictions"],
        responses={**BODY, **ERRORS},
    )
    async def predict_token(body: PredictTokenRequest) -> PredictTokenResponse:
        """P(3x) for 1 to 1000 buys. Features are computed point in time: only positions closed
        before each item's ``entry_time`` count."""
        return await service.predict_tokens(body.items)

    @router.get("/v1/kols", response_model=Leaderboard, tags=["kols"], responses=ERRORS)
    async def kols(
        window: Annotated[Window, Query(description="Statistics window.")] = "30d",
        sort: Annotated[
            SortKey, Query(description="Descending; KOLs without a value last.")
        ] = "total_pnl_sol",
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
        wallet: Annotated[Wallet, Path()],
        limit: Annotated[int, Query(ge=1, le=1000, description="Positions to return.")] = 100,
    ) -> KolDetail:
        """A KOL's statistics (7d, 30d, all), forecast 3x rates over the next 7 and 30 days, open
        and recent positions, and cumulative PnL. A wallet kolray knows nothing about is a 404; a
        known KOL without closed positions gets the model's population prior, flagged
        ``cold_start``."""
        return await service.kol_detail(wallet, limit)

    @router.get("/v1/trades/recent", response_model=RecentTrades, tags=["trades"], responses=ERRORS)
    async def recent_trades(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        wallet: Annotated[Wallet | None, Query(description="Only this KOL's swaps.")] = None,
    ) -> RecentTrades:
        """The latest swaps, newest first, with P(3x) for buys whose position is still open (the
        probability for that buy, at its time and size) and the multiple of closed ones."""
        return await service.recent_trades(limit, wallet)

    @router.get("/v1/models", response_model=ModelsOut, tags=["models"], responses=ERRORS)
    async def models() -> ModelsOut:
        """Registered versions (newest first), their stage and primary metric, the champion, and
        what the replicas serve."""
        return await service.models()

    @router.get(
        "/v1/models/{model}/{version}/report",
        response_model=dict[str, Any],
        tags=["models"],
        responses=NOT_FOUND,
    )
    async def report(model: ModelName, version: VersionPath) -> dict[str, Any]:
        """The evaluation report (``report.json``) of a version."""
        return await service.report(model, version)

    @router.get(
        "/v1/models/{model}/{version}/plots",
        response_model=list[str],
        tags=["models"],
        responses=NOT_FOUND,
    )
    async def plots(model: ModelName, version: VersionPath) -> list[str]:
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
    ) -> Response:
        return Response(await service.plot(model, version, name), media_type="image/png")

    @router.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        tags=["admin"],
        dependencies=[Depends(require_api_key)],
        responses={**BODY, **UNAUTHORIZED, **NOT_FOUND, **CONFLICT, **ERRORS},
    )
    async def reload(body: ReloadRequest | None = None) -> ReloadResponse:
        """Make every model replica serve the given versions (default: each model's champion),
        without restarting them: the versions travel as the deployments' ``user_config``.
        ``kolray promote`` calls this after switching the champion.

        An archived version (a former champion) needs ``allow_archived: true`` (409 without).
        A version the replicas cannot load is a 503 that leaves everything as it was, config
        included; asking again retries it."""
        return await service.reload(body or ReloadRequest())

    return router


class _Unauthorized(ServiceError):
    status = 401


def build_app(service: KolrayService, ui: bool = True) -> FastAPI:
    """The whole HTTP app: API routes, extension routers, ``/docs``, and the UI at ``/ui``."""
    from kolray.serve import extensions

    app = FastAPI(
        title="kolray",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = list(error.errors())
        return JSONResponse(
            {"detail": _jsonable_errors(errors), "message": _summary(errors)}, status_code=422
        )

    app.include_router(build_api(service))
    for router in extensions.routers(service):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/ui/" if ui else "/docs")

    if ui:
        import gradio as gr

        from kolray.serve.ui import CSS, build_ui

        app = gr.mount_gradio_app(
            app, build_ui(service), path="/ui", footer_links=[], css=CSS, theme=gr.themes.Soft()
        )
    return app
