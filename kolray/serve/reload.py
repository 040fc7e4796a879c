"""Hot reload: switching the model versions of running replicas without restarting them.

**How a promotion reaches the replicas.** Each model deployment's ``user_config`` is
``{"version": V}``. Ray Serve treats a change of ``user_config`` alone as a *lightweight update*:
it calls ``reconfigure`` on every running replica (and gives new replicas the new config) without
restarting them (Ray docs, "Updating Applications In-Place"). The documented way to change it
from outside is to redeploy the same application config with the new ``user_config`` —
``serve deploy`` or ``PUT /api/serve/applications/`` on the dashboard, both of which hand the
controller a full ``ServeDeploySchema``. :func:`apply_versions` does exactly that from inside the
cluster: it reads the config deployed now (what ``serve config`` prints), changes only the model
deployments' ``user_config``, and re-applies every declaratively deployed application (an
application left out of a config would be deleted). Because the import path and runtime
environment are unchanged, the code version is the same and nothing restarts.

Who calls it:

- ``POST /v1/admin/reload`` (the ingress replica, through :class:`ServeReloader`; API key when
  ``KOLRAY_API_KEY`` is set).
- ``kolray promote`` → :func:`kolray.serve.client.notify_serve` → that route, right after the
  registry switch.
- The ingress's registry watcher, for champions changed by other writers (the continuous
  trainer's ``promote_if_better``), within ``registry_poll_s``.

This needs the app deployed from a config (``serve run serve_config.yaml``, ``serve deploy``,
``kolray serve``): an app deployed with ``serve.run(app)`` has no config to re-apply, and a
redeploy of it would restart the replicas, so :func:`apply_versions` refuses it with the reason.

Ray is imported inside the functions (the project's rule for heavy imports): importing this module
starts nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from kolray.serve import ray_private
from kolray.serve.names import APP_NAME, MODEL_DEPLOYMENTS, ServeControlError

if TYPE_CHECKING:
    from ray.serve.schema import ServeDeploySchema, ServeInstanceDetails

log = logging.getLogger(__name__)


def current_app_name() -> str:
    """The application this replica belongs to; :data:`~kolray.serve.names.APP_NAME` outside a
    replica."""
    from ray import serve

    try:
        return serve.get_replica_context().app_name or APP_NAME
    except Exception:  # not inside a replica
        return APP_NAME


def deployed_config(app_name: str) -> tuple[ServeInstanceDetails, dict[str, Any]]:
    """(serve instance details, the application's deployed config as a dict of the options that
    were set)."""
    from ray.serve.schema import ServeInstanceDetails

    details = ServeInstanceDetails(**ray_private.serve_details())
    app = details.applications.get(app_name)
    if app is None:
        raise ServeControlError(f"no Serve application named {app_name!r} is running")
    if app.deployed_app_config is None:
        raise ServeControlError(
            f"application {app_name!r} was deployed with serve.run(app), not from a config: its "
            "user_config cannot be changed without restarting it; deploy it with `kolray serve`, "
            "`serve run serve_config.yaml` or `serve deploy serve_config.yaml`"
        )
    return details, app.deployed_app_config.model_dump(exclude_unset=True)


def deployed_versions(app_name: str | None = None) -> dict[str, str | None]:
    """The model versions in the deployed config (None: the champion at replica start)."""
    _, app = deployed_config(app_name or current_app_name())
    by_name = {d["name"]: d for d in app.get("deployments", [])}
    return {
        model: ((by_name.get(name) or {}).get("user_config") or {}).get("version")
        for model, name in MODEL_DEPLOYMENTS.items()
    }


def _with_versions(deployments: list[dict[str, Any]], versions: dict[str, str | None], force: bool) -> bool:
    """Write ``versions`` into the model deployments' ``user_config`` (in place); whether any
    changed."""
    by_name = {d["name"]: d for d in deployments}
    changed = False
    for model, version in versions.items():
        name = MODEL_DEPLOYMENTS[model]
        entry = by_name.get(name)
        if entry is None:
            entry = by_name[name] = {"name": name}
            deployments.append(entry)
        config = dict(entry.get("user_config") or {})
        if "user_config" in entry and config.get("version") == version:
            if not force:
                continue
            # Serve reconfigures replicas only when user_config changes.
            config["attempt"] = int(config.get("attempt") or 0) + 1
        config["version"] = version
        entry["user_config"] = config
        changed = True
    return changed


def _deploy_schema(details: ServeInstanceDetails, app_name: str, app: dict[str, Any]) -> ServeDeploySchema:
    """The whole deployed config with ``app`` in place of the application named ``app_name``."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    applications = []
    for name, other in details.applications.items():
        if name == app_name:
            applications.append(ServeApplicationSchema.model_validate(app))
        elif other.deployed_app_config is not None:  # keep every other declarative app as it is
            applications.append(other.deployed_app_config)
    schema: dict[str, Any] = {"applications": applications}
    if details.proxy_location is not None:
        schema["proxy_location"] = details.proxy_location
    if details.http_options is not None:
        schema["http_options"] = details.http_options
    if details.grpc_options is not None:
        schema["grpc_options"] = details.grpc_options
    if details.target_capacity is not None:
        schema["target_capacity"] = details.target_capacity
    return ServeDeploySchema.model_validate(schema)


def apply_versions(versions: dict[str, str | None], app_name: str | None = None, force: bool = False) -> bool:
    """Set the model deployments' ``user_config`` versions by re-applying the deployed config.
    Returns whether anything changed. ``force``: change the config even where it names these
    versions already (its ``attempt`` counter goes up), so that Serve calls ``reconfigure`` again
    and a replica that could not load the version retries. Blocking: call it from a thread in
    async code."""
    app_name = app_name or current_app_name()
    details, app = deployed_config(app_name)
    deployments = [dict(d) for d in app.get("deployments", [])]
    if not _with_versions(deployments, versions, force):
        return False
    app["deployments"] = deployments
    ray_private.deploy_apps(_deploy_schema(details, app_name, app))
    log.info("applied model versions %s to application %s", versions, app_name)
    return True


def wait_for_update(app_name: str, timeout_s: float = 60.0) -> None:
    """Until the controller reports the model deployments updated on every replica (the status it
    sets on a config change, UPDATING, is over)."""
    from ray import serve
    from ray.serve.schema import DeploymentStatus

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(app_name)
        deployments = app.deployments if app is not None else {}
        states = {name: d for name, d in deployments.items() if name in MODEL_DEPLOYMENTS.values()}
        if states and all(d.status != DeploymentStatus.UPDATING for d in states.values()):
            return
        if time.monotonic() > deadline:
            raise ServeControlError(f"model deployments still updating after {timeout_s:.0f} s: {states}")
        time.sleep(0.1)


class ServeReloader:
    """The service's reloader inside the ingress replica: :func:`apply_versions` in a thread."""

    how = (
        "user_config of the model deployments re-applied with the deployed config (Serve lightweight "
        "update: reconfigure on the running replicas, no restart)"
    )

    def __init__(self, app_name: str | None = None) -> None:
        self.app_name = app_name

    async def __call__(self, versions: dict[str, str | None], force: bool = False) -> None:
        """Apply ``versions`` and wait until the replicas have them."""
        try:
            changed = await asyncio.to_thread(apply_versions, versions, self.app_name, force)
            if changed:
                await asyncio.to_thread(wait_for_update, self.app_name or current_app_name())
        except ServeControlError:
            raise
        except Exception as error:
            raise ServeControlError(f"could not update the Serve application: {error}") from None

    async def deployed(self) -> dict[str, str | None]:
        """The versions the deployed config names (None: the champion at replica start)."""
        return await asyncio.to_thread(deployed_versions, self.app_name)
