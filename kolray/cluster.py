"""Connecting to Ray, or starting a local instance that only this machine can reach.

Every kolray entry point that needs Ray (``track``, ``features``, ``tune``, ``serve``, ``demo``)
comes through :func:`init_ray`, so that one rule holds everywhere:

- a cluster address given (``--address``, ``RAY_ADDRESS``, a ``ray job submit`` driver) or a
  cluster that ``ray start`` runs on this machine: join it, with its own network settings;
- otherwise start a local instance whose every server (GCS, raylets, workers, agents, dashboard)
  listens on 127.0.0.1 only. Ray's own default binds its gRPC servers on all interfaces, which on
  a laptop on a shared network exposes the cluster to anyone who can reach the machine.

A local instance also gets a :mod:`kolray.reaper`: if the process that started it dies without
stopping it (SIGKILL, a crash), the reaper ends what Ray leaves running.

Ray 2.60 has no public switch for the loopback-only node: it is the behaviour Ray picks for
single-machine platforms (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). The variable is read by every
Ray process at import, so it goes into the environment the new processes inherit, and into the
already-imported constant of this one. The private names it touches are used here and nowhere else.
"""

from __future__ import annotations

import os
from typing import Any

from kolray import reaper

LOOPBACK = "127.0.0.1"
# Read by ray._private.ray_constants at import: "0" makes a node that lives on loopback only.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def cluster_to_join(address: str | None = None) -> str | None:
    """The cluster ``ray.init(address)`` would join (given, ``RAY_ADDRESS``, or a ``ray start``
    cluster on this machine), or ``None`` when it would start a local instance."""
    if address == "local":
        return None
    from ray._private import services  # private: where Ray resolves None/"auto" to a cluster

    # None resolves like "auto" (RAY_ADDRESS, then a local `ray start`); the stub says str only.
    return services.canonicalize_bootstrap_address(address)  # type: ignore[arg-type]


def pin_local_to_loopback() -> None:
    """Make the Ray instance this process is about to start, and all its children, loopback-only."""
    from ray._private import ray_constants  # private: the constant read when a node picks its IP

    os.environ[LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def init_ray(address: str | None = None, **options: Any) -> Any:
    """``ray.init`` for kolray: join the cluster there is (see :func:`cluster_to_join`), else start a
    loopback-only local instance with its dashboard on 127.0.0.1. ``address="local"`` always
    starts a new local instance. Returns Ray's context; does nothing if Ray is already up in this
    process (a job driver, a test session), returning ``None``."""
    import ray

    if ray.is_initialized():
        return None
    if cluster_to_join(address) is None:
        pin_local_to_loopback()
        options.setdefault("dashboard_host", LOOPBACK)
        context = ray.init(address="local", **options)
        reaper.start()
        return context
    return ray.init(address=address, **options)
