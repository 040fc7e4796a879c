"""What the routes share: the service as a dependency, the API-key check, the documented error
answers."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from kolray.serve.schemas import ErrorOut
from kolray.serve.service import KolrayService, ServiceError


def get_service(request: Request) -> KolrayService:
    """The app's service (``app.state.service``, set when the app is built)."""
    service: KolrayService = request.app.state.service
    return service


Service = Annotated[KolrayService, Depends(get_service)]
"""A route parameter of this type receives the app's service."""


class Unauthorized(ServiceError):
    """A wrong or missing ``X-API-Key`` on an admin route while ``KOLRAY_API_KEY`` is set."""

    status = 401


def require_api_key(
    service: Service, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> None:
    """Admin routes: the ``X-API-Key`` header must match ``KOLRAY_API_KEY`` when that is set."""
    expected = service.api_key
    if expected and not (x_api_key and hmac.compare_digest(x_api_key.encode(), expected.encode())):
        raise Unauthorized("X-API-Key header missing or wrong (KOLRAY_API_KEY is set on the server)")


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
