"""The FastAPI app: kolray's HTTP API over a :class:`~kolray.serve.service.KolrayService`.

:func:`build_app` creates a fresh app each call (Serve calls it inside the ingress replica, where
the Gradio UI, which cannot be pickled, is built too). It keeps the service in ``app.state``; the
routes (:mod:`kolray.serve.routes`, one router per domain) receive it as a dependency. Route
handlers are thin: validation is the pydantic models of :mod:`kolray.serve.schemas`, answers come
from the service.

Errors: bad input → 422 whose ``detail`` lists each problem with its ``loc`` (the field) and whose
``message`` says it in one line; unknown things → 404; no model / feature pipeline / database →
503 with what to do; a wrong or missing ``X-API-Key`` on an admin route (when ``KOLRAY_API_KEY``
is set) → 401; a reload to an archived version without ``allow_archived`` → 409.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

from kolray import __version__
from kolray.serve.routes import ROUTERS
from kolray.serve.service import KolrayService, ServiceError
from kolray.serve.ui import mount_ui

DESCRIPTION = """
Predictions for Solana KOL buys (will this position reach 3x?) and KOL forecasts (what share of
their next positions will?), with the KOL leaderboard, KOL records and recent trades.

Every prediction names the model version that produced it. Bad input is answered with a 422 that
names the field; a missing model or database with a 503 that says what to do. The web UI is at
[/ui](/ui).
"""


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


def build_app(service: KolrayService, ui: bool = True) -> FastAPI:
    """The whole HTTP app: the routers of every domain, ``/docs``, and the UI at ``/ui``."""
    app = FastAPI(
        title="kolray",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.service = service

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = list(error.errors())
        return JSONResponse(
            {"detail": _jsonable_errors(errors), "message": _summary(errors)}, status_code=422
        )

    for router in ROUTERS:
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/ui/" if ui else "/docs")

    if ui:
        app = mount_ui(app, service)
    return app
