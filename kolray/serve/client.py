"""Calls that other processes (``kolray promote``, scripts) make to a running Serve app, over
its HTTP API: no Ray connection needed."""

from __future__ import annotations

import httpx

from kolray.config import get_settings


def notify_serve(timeout_s: float = 60.0) -> tuple[bool, str]:
    """Ask the running app to serve the current champions (``POST /v1/admin/reload``).

    Returns (reached, message). Not running is not an error: the app loads the champion when it
    starts, and a running app's registry watcher would catch up within ``registry_poll_s``."""
    settings = get_settings()
    url = f"http://{settings.serve_host}:{settings.serve_port}/v1/admin/reload"
    headers = {"X-API-Key": settings.api_key.get_secret_value()} if settings.api_key else {}
    try:
        response = httpx.post(url, json={}, headers=headers, timeout=httpx.Timeout(timeout_s, connect=2.0))
    except httpx.ConnectError:
        return (
            False,
            f"Serve is not running at {settings.serve_host}:{settings.serve_port}: it loads the champion when it starts",
        )
    except httpx.HTTPError as error:
        return False, f"could not reach Serve at {url}: {type(error).__name__}"
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        return False, f"Serve answered {response.status_code} to the reload: {detail}"
    body = response.json()
    applied = ", ".join(f"{m} {v or 'none'}" for m, v in body.get("applied", {}).items())
    return True, f"Serve now serves {applied}"
