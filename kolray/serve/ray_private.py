"""Every call kolray makes into Ray's private (underscored) modules, in one place.

Each function says which private call it makes and why no public API does the same. When Ray
gains a public equivalent, the change is here alone. Everything else in :mod:`kolray.serve` uses
public APIs (``serve.start``, ``serve.status``, ``serve.shutdown``, ``ray.serve.schema``).

Ray is imported inside the functions: importing this module costs nothing, and the processes
that never talk to a Serve controller (the CLI's other commands) never load Ray through it.
"""

from typing import Any


def _serve_client() -> Any:
    # ``ray.serve.context._get_global_client``: the controller client that the public functions
    # (``serve.status``, ``serve.run``) use themselves; Ray exposes no public handle to it.
    from ray.serve.context import _get_global_client

    return _get_global_client()


def serve_details() -> dict[str, Any]:
    """What ``serve config`` / ``GET /api/serve/applications/`` show: every application with the
    config it was deployed from (``ServeInstanceDetails`` as a dict).

    Private call: ``ServeControllerClient.get_serve_details``. ``serve.status()`` (public) is built
    from the same details but drops each application's ``deployed_app_config``, which hot reload
    needs; the public alternative is the dashboard's REST API, which needs the dashboard agent
    (not started on every node kolray runs on)."""
    details: dict[str, Any] = _serve_client().get_serve_details()
    return details


def deploy_apps(config: Any) -> None:
    """Deploy a ``ServeDeploySchema`` declaratively, as ``serve deploy`` does.

    Private call: ``ServeControllerClient.deploy_apps``. The public ways to deploy a config are the
    ``serve deploy`` CLI and ``PUT /api/serve/applications/``, both through the dashboard agent;
    ``serve.run`` (public) deploys an application object imperatively, and an app deployed that way
    has no config whose ``user_config`` hot reload could change."""
    _serve_client().deploy_apps(config)


def dashboard_url() -> str | None:
    """The Ray dashboard's address, for a Ray instance this process connected to rather than
    started (``ray.init`` returns it only to the process that starts Ray).

    Private call: ``ray._private.worker.get_dashboard_url``; ``ray.get_runtime_context()`` has no
    dashboard address."""
    from ray._private.worker import get_dashboard_url

    url: str | None = get_dashboard_url()
    return url


def own_ray_processes_stopped() -> list[str]:
    """The process types (``gcs_server``, ``raylet``, …) of the Ray instance this process started
    that have exited; empty when it started none, or when all of them run.

    Private call: ``ray._private.worker._global_node.dead_processes()``. A stop signal sent to a
    whole process group reaches Ray's processes too; ``serve.shutdown()`` then waits for a
    controller that is gone, and ``ray.shutdown()`` racing that wait has crashed the process
    (SIGSEGV). Ray has no public way to ask whether the processes it started are still alive."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    if node is None or not getattr(node, "head", False):
        return []
    return sorted({str(kind) for kind, _process in node.dead_processes()})
