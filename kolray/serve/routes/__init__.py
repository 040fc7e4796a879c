"""The HTTP routes, one module-level ``APIRouter`` per domain.

Each handler gets the process's :class:`~kolray.serve.service.KolrayService` as a FastAPI
dependency (:data:`~kolray.serve.routes.deps.Service`, read from ``app.state.service``, set by
:func:`kolray.serve.api.build_app`). :data:`ROUTERS` lists them in the order the app includes
them (the order of the OpenAPI page). The alerts and backtests modules also hold their UI tab.
"""

from fastapi import APIRouter

from kolray.serve.routes import admin, alerts, backtests, health, kols, models, predictions, tokens, trades

ROUTERS: list[APIRouter] = [
    health.router,
    predictions.router,
    kols.router,
    trades.router,
    tokens.router,
    models.router,
    admin.router,
    alerts.router,
    backtests.router,
]
